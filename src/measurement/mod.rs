//! What the outreach changed: attribution of orders to messages, treated-versus-holdout uplift
//! with confidence intervals, and the campaign funnel.
//!
//! **Attribution.** An order (not cancelled or refunded) placed within a channel's window after
//! a message was sent is a conversion for that message, with its revenue. A held-out customer
//! gets the same window from the moment they were held out, using the campaign's first
//! channel. When several messages' windows contain an order, the latest message before it gets
//! it (last touch); an order is credited once. Attribution is recomputed from scratch (one
//! transaction), so it is idempotent and follows late-arriving or corrected orders.
//!
//! **Uplift** compares, per campaign and overall, everyone selected and not held out (intention
//! to treat: including messages that failed or were suppressed later) with the random holdout,
//! over rows of a chosen period whose window has fully passed.

pub mod stats;

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::campaigns::{CampaignSet, Channel};
use crate::db::{Db, Val};
use crate::scan::{Bind, scan_with};
pub use stats::{Group, Lift};

/// `[measurement]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MeasurementSettings {
    /// Days after an email during which an order counts as its conversion. Default 7.
    pub window_days_email: u32,
    /// Default 3.
    pub window_days_sms: u32,
    /// Default 3.
    pub window_days_whatsapp: u32,
    /// Below this many customers in either group, uplift is reported as too small to tell.
    /// Default 100.
    pub min_group_size: u64,
    /// Days of outreach the report's uplift covers, ending today. Default 90.
    pub report_days: u32,
    /// Matured scoring days checked against what happened per scoring run (newest first), so a
    /// first run over a long history stays bounded. Default 7.
    pub max_evaluations_per_run: usize,
}

impl Default for MeasurementSettings {
    fn default() -> Self {
        Self {
            window_days_email: 7,
            window_days_sms: 3,
            window_days_whatsapp: 3,
            min_group_size: 100,
            report_days: 90,
            max_evaluations_per_run: 7,
        }
    }
}

impl MeasurementSettings {
    pub fn window_days(&self, ch: Channel) -> u32 {
        match ch {
            Channel::Email => self.window_days_email,
            Channel::Sms => self.window_days_sms,
            Channel::Whatsapp => self.window_days_whatsapp,
        }
    }

    pub fn validate(&self, sink: &mut crate::config::IssueSink<'_>) {
        for (key, v) in [
            ("measurement.window_days_email", self.window_days_email),
            ("measurement.window_days_sms", self.window_days_sms),
            (
                "measurement.window_days_whatsapp",
                self.window_days_whatsapp,
            ),
        ] {
            if !(1..=90).contains(&v) {
                sink.push(key, format!("{v} is out of range"), "use 1..=90 days");
            }
        }
        if !(1..=3650).contains(&self.report_days) {
            sink.push(
                "measurement.report_days",
                format!("{} is out of range", self.report_days),
                "use 1..=3650",
            );
        }
        if !(1..=366).contains(&self.max_evaluations_per_run) {
            sink.push(
                "measurement.max_evaluations_per_run",
                format!("{} is out of range", self.max_evaluations_per_run),
                "use 1..=366",
            );
        }
    }
}

/// One outbox row as measurement sees it.
#[derive(Debug, Clone)]
pub struct Exposure {
    pub message_id: i64,
    pub customer_id: String,
    pub campaign: String,
    pub day: String,
    pub status: String,
    pub treated: bool,
    /// When the window opens: sent, or held out / selected.
    pub start: i64,
    pub window_end: i64,
}

/// The window of a row: its channel's, or for a held-out row (no channel) its campaign's first
/// channel's; email's when neither is known.
pub fn window_days(
    m: &MeasurementSettings,
    campaigns: &CampaignSet,
    channel: Option<&str>,
    campaign: &str,
) -> u32 {
    let ch = channel.and_then(Channel::parse).or_else(|| {
        campaigns
            .get(campaign)
            .and_then(|c| c.channels.first().copied())
    });
    m.window_days(ch.unwrap_or(Channel::Email))
}

/// Every outbox row with its window, for days in `[from, to]` (all days when `None`).
pub async fn exposures(
    db: &Db,
    m: &MeasurementSettings,
    campaigns: &CampaignSet,
    days: Option<(NaiveDate, NaiveDate)>,
) -> anyhow::Result<Vec<Exposure>> {
    let (from, to) = days.map_or((String::new(), "9999-12-31".to_string()), |(a, b)| {
        (a.to_string(), b.to_string())
    });
    let mut out = Vec::new();
    scan_with(
        db,
        "SELECT message_id, customer_id, campaign, day, status, channel, created_at, sent_at FROM outbox WHERE day >= $1 AND day <= $2 ORDER BY message_id",
        &[Bind::Text(&from), Bind::Text(&to)],
        |r| {
            let status = r.text(4)?.unwrap_or_default().to_string();
            let campaign = r.text(2)?.unwrap_or_default().to_string();
            let start = r.int(7)?.or(r.int(6)?).unwrap_or(0);
            let w = window_days(m, campaigns, r.text(5)?, &campaign);
            out.push(Exposure {
                message_id: r.int(0)?.unwrap_or(0),
                customer_id: r.text(1)?.unwrap_or_default().to_string(),
                campaign,
                day: r.text(3)?.unwrap_or_default().to_string(),
                treated: status != "held_out",
                status,
                start,
                window_end: start + i64::from(w) * 86_400,
            });
            Ok(())
        },
    )
    .await?;
    Ok(out)
}

/// What an attribution pass found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attribution {
    pub exposures: usize,
    pub orders_checked: usize,
    pub conversions: usize,
    pub revenue: f64,
}

/// Recomputes the `conversions` table from the outbox and the orders.
pub async fn attribute(
    db: &Db,
    m: &MeasurementSettings,
    campaigns: &CampaignSet,
) -> anyhow::Result<Attribution> {
    let ex = exposures(db, m, campaigns, None).await?;
    let mut by_customer: HashMap<&str, Vec<&Exposure>> = HashMap::new();
    for e in &ex {
        by_customer
            .entry(e.customer_id.as_str())
            .or_default()
            .push(e);
    }
    for v in by_customer.values_mut() {
        v.sort_by_key(|e| (e.start, e.message_id));
    }
    let earliest = ex.iter().map(|e| e.start).min().unwrap_or(i64::MAX);
    let mut rows: Vec<Vec<Val>> = Vec::new();
    let mut summary = Attribution {
        exposures: ex.len(),
        ..Default::default()
    };
    if earliest < i64::MAX {
        scan_with(
            db,
            "SELECT order_id, customer_id, ordered_at, total_amount FROM orders WHERE ordered_at >= $1 AND status NOT IN ('cancelled', 'refunded')",
            &[Bind::Int(earliest)],
            |r| {
                summary.orders_checked += 1;
                let Some(list) = by_customer.get(r.text(1)?.unwrap_or_default()) else { return Ok(()) };
                let at = r.int(2)?.unwrap_or(0);
                // Last touch: the latest exposure whose window contains the order.
                if let Some(e) = list.iter().rev().find(|e| e.start <= at && at < e.window_end) {
                    let revenue = r.real(3)?.unwrap_or(0.0);
                    summary.conversions += 1;
                    summary.revenue += revenue;
                    rows.push(vec![
                        Val::Text(Some(r.text(0)?.unwrap_or_default().to_string())),
                        Val::Int(Some(e.message_id)),
                        Val::Text(Some(e.customer_id.clone())),
                        Val::Text(Some(e.campaign.clone())),
                        Val::Int(Some(i64::from(e.treated))),
                        Val::Int(Some(at)),
                        Val::Real(Some(revenue)),
                    ]);
                }
                Ok(())
            },
        )
        .await?;
    }
    let mut tx = db.begin().await?;
    tx.execute("DELETE FROM conversions", &[]).await?;
    for chunk in rows.chunks(2000) {
        tx.insert_rows(
            "conversions",
            &[
                "order_id",
                "message_id",
                "customer_id",
                "campaign",
                "treated",
                "ordered_at",
                "revenue",
            ],
            chunk,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(summary)
}

/// Treated versus holdout for one campaign (or "all").
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub campaign: String,
    pub treated: Group,
    pub holdout: Group,
    pub return_lift: Lift,
    pub revenue_lift: Lift,
    /// Set when the groups are too small to tell.
    pub warning: Option<String>,
}

impl Comparison {
    fn new(campaign: String, treated: Group, holdout: Group, min_group: u64) -> Comparison {
        Comparison {
            return_lift: stats::proportion_lift(&treated, &holdout),
            revenue_lift: stats::mean_lift(&treated, &holdout),
            warning: stats::too_small(&treated, &holdout, min_group),
            campaign,
            treated,
            holdout,
        }
    }
}

/// The campaign funnel over a period.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FunnelRow {
    pub campaign: String,
    pub selected: u64,
    pub held_out: u64,
    pub sent: u64,
    pub delivered: u64,
    pub converted: u64,
    pub holdout_converted: u64,
}

/// Uplift and funnel over `[from, to]`.
#[derive(Debug, Clone, Serialize)]
pub struct UpliftReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Rows whose window had not closed yet: left out of the comparison.
    pub still_open: u64,
    pub overall: Comparison,
    pub campaigns: Vec<Comparison>,
    pub funnel: Vec<FunnelRow>,
}

/// Reads the conversions (run [`attribute`] first) and compares the groups.
pub async fn uplift(
    db: &Db,
    m: &MeasurementSettings,
    campaigns: &CampaignSet,
    from: NaiveDate,
    to: NaiveDate,
    now: i64,
) -> anyhow::Result<UpliftReport> {
    let ex = exposures(db, m, campaigns, Some((from, to))).await?;
    let mut credited: HashMap<i64, (u64, f64)> = HashMap::new();
    scan_with(
        db,
        "SELECT message_id, revenue FROM conversions",
        &[],
        |r| {
            let e = credited.entry(r.int(0)?.unwrap_or(0)).or_default();
            e.0 += 1;
            e.1 += r.real(1)?.unwrap_or(0.0);
            Ok(())
        },
    )
    .await?;
    let mut groups: std::collections::BTreeMap<String, (Group, Group)> = Default::default();
    let mut all = (Group::default(), Group::default());
    let mut funnel: std::collections::BTreeMap<String, FunnelRow> = Default::default();
    let mut still_open = 0;
    for e in &ex {
        let (n_conv, revenue) = credited.get(&e.message_id).copied().unwrap_or_default();
        let f = funnel
            .entry(e.campaign.clone())
            .or_insert_with(|| FunnelRow {
                campaign: e.campaign.clone(),
                ..Default::default()
            });
        f.selected += 1;
        if e.treated {
            f.sent += u64::from(matches!(e.status.as_str(), "sent" | "delivered"));
            f.delivered += u64::from(e.status == "delivered");
            f.converted += u64::from(n_conv > 0);
        } else {
            f.held_out += 1;
            f.holdout_converted += u64::from(n_conv > 0);
        }
        if e.window_end > now {
            still_open += 1;
            continue;
        }
        let g = groups.entry(e.campaign.clone()).or_default();
        let (t, c) = (&mut g.0, &mut g.1);
        let target = if e.treated { t } else { c };
        target.add(n_conv > 0, revenue);
        if e.treated {
            all.0.add(n_conv > 0, revenue)
        } else {
            all.1.add(n_conv > 0, revenue)
        }
    }
    Ok(UpliftReport {
        from,
        to,
        still_open,
        overall: Comparison::new("all campaigns".into(), all.0, all.1, m.min_group_size),
        campaigns: groups
            .into_iter()
            .map(|(name, (t, c))| Comparison::new(name, t, c, m.min_group_size))
            .collect(),
        funnel: funnel.into_values().collect(),
    })
}

/// The default period: `report_days` ending today (brand time zone).
pub fn default_period(m: &MeasurementSettings, today: NaiveDate) -> (NaiveDate, NaiveDate) {
    (
        today - chrono::Duration::days(i64::from(m.report_days) - 1),
        today,
    )
}

/// Now, for callers that do not rehearse another instant.
pub fn now() -> i64 {
    Utc::now().timestamp()
}
