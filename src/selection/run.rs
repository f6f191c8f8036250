//! `campaigns plan` and `campaigns run`: the same selection, either printed (nothing changes)
//! or written to the outbox with a record of the run.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::offer::{
    Catalog, MessageEnv, Offer, Rendered, Secrets, bought_products, build_offer, render,
};
use super::{CampaignSelection, Funnel, RunParams, Score, Step, load::load, select};
use crate::campaigns::{Campaign, CampaignSet, OfferCategory};
use crate::config::Settings;
use crate::db::{Db, Val};
use crate::outbox::{self, NewMessage, Status};

/// One planned outbox row.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub campaign: String,
    pub customer_id: String,
    pub held_out: bool,
    pub channel: Option<String>,
    pub fallback_channels: Vec<String>,
    pub channel_reason: String,
    pub not_before: i64,
    pub expires_at: i64,
    pub holdout_draw: f64,
    pub score: Score,
    pub offer: Offer,
    pub message: Option<Rendered>,
    pub why: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    pub campaign: String,
    pub active: bool,
    pub funnel: Funnel,
    pub selected: u64,
    pub held_out: u64,
    /// Rows newly written (run only).
    pub inserted: Option<u64>,
    /// Why the campaign failed at run time and was skipped (its customers stay available to
    /// the campaigns after it); `None` when it ran.
    pub failure: Option<String>,
}

/// A campaign that failed at run time: skipped, while the others run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CampaignFailure {
    pub campaign: String,
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub day: NaiveDate,
    pub now: DateTime<Utc>,
    pub customers_scored: usize,
    pub campaigns: Vec<CampaignReport>,
    pub planned: Vec<Planned>,
    /// Campaigns that failed and were skipped, with the reason.
    pub failed: Vec<CampaignFailure>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no campaign named {name:?} in {dir} (known: {known})")]
    UnknownCampaign {
        name: String,
        dir: String,
        known: String,
    },
}

/// Why one campaign cannot run today; the run skips it and records this.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(
        "`offer.category`: {category:?} is not a product category in the database (fix: {fix}, or \"recommended\")"
    )]
    UnknownCategory { category: String, fix: String },
}

/// Selects, builds offers and renders messages for `day` as of the clock `now`.
#[tracing::instrument(skip(db, settings, set, secrets))]
pub async fn plan(
    db: &Db,
    settings: &Settings,
    set: &CampaignSet,
    only: Option<&str>,
    day: NaiveDate,
    now: DateTime<Utc>,
    secrets: &Secrets,
) -> anyhow::Result<PlanReport> {
    let started = std::time::Instant::now();
    if let Some(name) = only
        && set.get(name).is_none()
    {
        let known = set
            .campaigns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PlanError::UnknownCampaign {
            name: name.into(),
            dir: set.dir.display().to_string(),
            known,
        }
        .into());
    }
    let needs_code = set
        .campaigns
        .iter()
        .any(|c| only.is_none_or(|n| n == c.name) && c.needs_code_secret());
    secrets.check(&settings.campaigns, needs_code)?;

    let cs = &settings.campaigns;
    let until = settings.day_start(day);
    let catalog = Catalog::load(
        db,
        &day.to_string(),
        until - cs.best_seller_days as i64 * 86_400,
        until,
    )
    .await?;
    tracing::info!(secs = started.elapsed().as_secs_f32(), "catalog ranked");
    // A campaign that cannot run today fails alone: it is skipped with its reason and the
    // others run (one typo must not stop every campaign).
    let mut failed: Vec<CampaignFailure> = Vec::new();
    for c in set
        .campaigns
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name) && c.active_on(day))
    {
        if let OfferCategory::Fixed(k) = &c.offer.category
            && !catalog.categories.is_empty()
            && !catalog.categories.contains(k)
        {
            let mut known: Vec<&str> = catalog
                .categories
                .iter()
                .map(String::as_str)
                .filter(|k| !k.is_empty())
                .collect();
            known.sort_unstable();
            let fix = crate::campaigns::data_check::category_fix(k, known.iter().copied());
            fail(
                &mut failed,
                c,
                &CampaignError::UnknownCategory {
                    category: k.clone(),
                    fix,
                }
                .into(),
            );
        }
    }

    let inputs = load(db, set, day, cs.frequency_window_days).await?;
    let params = RunParams {
        day,
        now,
        brand_tz: settings.timezone(),
        frequency_cap: cs.frequency_cap,
        frequency_window_days: cs.frequency_window_days,
    };
    let env = MessageEnv {
        brand_name: &settings.brand.name,
        currency: &settings.brand.currency,
        settings: cs,
        secrets,
        now: now.timestamp(),
    };
    // Each pass selects with the campaigns not failed so far; a campaign failing while its
    // messages are built is dropped and the selection runs again, so the customers it had
    // taken go to the campaigns after it. Every pass fails one more campaign or is the last.
    let (selections, planned) = loop {
        let runnable = CampaignSet {
            dir: set.dir.clone(),
            campaigns: set
                .campaigns
                .iter()
                .filter(|c| !failed.iter().any(|f| f.campaign == c.name))
                .cloned()
                .collect(),
        };
        let selections = select(&runnable, only, &inputs, &params);
        tracing::info!(secs = started.elapsed().as_secs_f32(), "selected");

        // Product history only for the customers who get a message with product picks.
        let mut ids: Vec<&str> = Vec::new();
        for s in &selections {
            let c = set
                .get(&s.campaign)
                .expect("selected campaigns come from the set");
            if c.offer.products > 0 {
                ids.extend(
                    s.picks
                        .iter()
                        .filter(|p| p.category.is_some())
                        .map(|p| inputs.customers[p.customer].customer_id.as_str()),
                );
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let bought = bought_products(db, &ids).await?;
        tracing::info!(
            customers = ids.len(),
            secs = started.elapsed().as_secs_f32(),
            "purchase history read"
        );

        let mut planned = Vec::new();
        let before = failed.len();
        for s in &selections {
            let c = set
                .get(&s.campaign)
                .expect("selected campaigns come from the set");
            match plan_campaign(c, s, &inputs, &catalog, &bought, &env) {
                Ok(rows) => planned.extend(rows),
                Err(e) => fail(&mut failed, c, &e),
            }
        }
        if failed.len() == before {
            break (selections, planned);
        }
    };
    let mut campaigns = Vec::new();
    for c in set
        .campaigns
        .iter()
        .filter(|c| only.is_none_or(|n| n == c.name))
    {
        if let Some(f) = failed.iter().find(|f| f.campaign == c.name) {
            campaigns.push(CampaignReport {
                campaign: c.name.clone(),
                active: true,
                funnel: Funnel::default(),
                selected: 0,
                held_out: 0,
                inserted: None,
                failure: Some(f.reason.clone()),
            });
        } else if let Some(s) = selections.iter().find(|s| s.campaign == c.name) {
            campaigns.push(report_of(s));
        }
    }
    tracing::info!(
        rows = planned.len(),
        secs = started.elapsed().as_secs_f32(),
        "offers built and messages rendered"
    );
    Ok(PlanReport {
        day,
        now,
        customers_scored: inputs.customers.len(),
        campaigns,
        planned,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Records a campaign's failure (the run goes on without it). Whoever called the run says it:
/// the CLI prints it once, the daemon's campaigns job logs it.
fn fail(failed: &mut Vec<CampaignFailure>, c: &Campaign, e: &anyhow::Error) {
    let reason = format!("{}: {e:#}", c.file.display());
    failed.push(CampaignFailure {
        campaign: c.name.clone(),
        file: c.file.display().to_string(),
        reason,
    });
}

/// The outbox rows of one campaign's picks: offers built, messages rendered. Any error fails
/// the whole campaign (never half of its customers).
fn plan_campaign(
    c: &Campaign,
    s: &CampaignSelection,
    inputs: &super::Inputs,
    catalog: &Catalog,
    bought: &HashMap<String, std::collections::HashSet<String>>,
    env: &MessageEnv<'_>,
) -> anyhow::Result<Vec<Planned>> {
    let mut planned = Vec::with_capacity(s.picks.len());
    for p in &s.picks {
        let cust = &inputs.customers[p.customer];
        let offer = build_offer(c, cust, p, catalog, bought.get(&cust.customer_id), env);
        let message = if p.held_out {
            None
        } else {
            Some(
                render(c, cust, p.channels[0], &offer, env).with_context(|| {
                    format!("rendering the message for customer {}", cust.customer_id)
                })?,
            )
        };
        planned.push(Planned {
            campaign: c.name.clone(),
            customer_id: cust.customer_id.clone(),
            held_out: p.held_out,
            channel: (!p.held_out).then(|| p.channels[0].as_str().to_string()),
            fallback_channels: p
                .channels
                .iter()
                .skip(1)
                .map(|c| c.as_str().to_string())
                .collect(),
            channel_reason: p.channel_reason.clone(),
            not_before: p.not_before,
            expires_at: p.expires_at,
            holdout_draw: p.holdout_draw,
            score: cust.score.clone(),
            offer,
            message,
            why: explain(c, &cust.score, p.held_out),
        });
    }
    Ok(planned)
}

fn report_of(s: &CampaignSelection) -> CampaignReport {
    CampaignReport {
        campaign: s.campaign.clone(),
        active: s.active,
        selected: s.funnel.get(Step::Selected),
        held_out: s.funnel.get(Step::HeldOut),
        funnel: s.funnel.clone(),
        inserted: None,
        failure: None,
    }
}

/// The rule that selected the customer, in words.
fn explain(c: &crate::campaigns::Campaign, s: &Score, held_out: bool) -> Vec<String> {
    let t = &c.trigger;
    let mut why = vec![
        if s.window_lo_days <= 0 {
            format!(
                "inside the predicted window (days {}–{})",
                s.window_lo_days, s.window_hi_days
            )
        } else {
            format!(
                "window opens in {} day(s) ≤ lead {} (days {}–{})",
                s.window_lo_days, t.lead_days, s.window_lo_days, s.window_hi_days
            )
        },
        format!("lapse risk {:.2} ≥ {:.2}", s.lapse_risk, t.min_lapse_risk),
        format!("P(alive) {:.2} ≥ {:.2}", s.p_alive, t.min_p_alive),
        format!(
            "P(return) {:.2} ≤ {:.2}",
            s.p_return, t.skip_if_p_return_above
        ),
    ];
    if held_out {
        why.push(format!(
            "held out: draw below {}%",
            c.limits.holdout_percent
        ));
    }
    why
}

/// Runs the selection and writes it to the outbox (idempotent per campaign, customer and day),
/// with one `campaign_runs` row per campaign.
pub async fn run(
    db: &Db,
    settings: &Settings,
    set: &CampaignSet,
    only: Option<&str>,
    day: NaiveDate,
    now: DateTime<Utc>,
    secrets: &Secrets,
) -> anyhow::Result<PlanReport> {
    let mut report = plan(db, settings, set, only, day, now, secrets).await?;
    let day_s = day.to_string();
    let rows: Vec<NewMessage> = report.planned.iter().map(|p| to_row(p, &day_s)).collect();
    let ts = now.timestamp();
    // Selection is read outside the transaction; the write is one transaction, so a crash
    // leaves either the whole day's selection or none of it.
    let mut tx = db.begin().await?;
    let mut by_campaign: HashMap<String, Vec<NewMessage>> = HashMap::new();
    for r in rows {
        by_campaign.entry(r.campaign.clone()).or_default().push(r);
    }
    for cr in &mut report.campaigns {
        if let Some(reason) = &cr.failure {
            // Recorded for `status`, `/metrics` and the report; nothing else is written for it.
            tx.execute(
                "INSERT INTO campaign_runs (campaign, day, run_at, selected, held_out, inserted, funnel, error) VALUES ($1, $2, $3, 0, 0, 0, '{}', $4)",
                &[Val::Text(Some(cr.campaign.clone())), Val::Text(Some(day_s.clone())), Val::Int(Some(ts)), Val::Text(Some(reason.clone()))],
            )
            .await?;
            continue;
        }
        let rows = by_campaign.remove(&cr.campaign).unwrap_or_default();
        let inserted = outbox::insert(&mut tx, &rows, ts).await?;
        cr.inserted = Some(inserted);
        if cr.active {
            tx.execute(
                "INSERT INTO campaign_runs (campaign, day, run_at, selected, held_out, inserted, funnel) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    Val::Text(Some(cr.campaign.clone())),
                    Val::Text(Some(day_s.clone())),
                    Val::Int(Some(ts)),
                    Val::Int(Some(cr.selected as i64)),
                    Val::Int(Some(cr.held_out as i64)),
                    Val::Int(Some(inserted as i64)),
                    Val::Text(Some(serde_json::to_string(&cr.funnel)?)),
                ],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(report)
}

fn to_row(p: &Planned, day: &str) -> NewMessage {
    NewMessage {
        idempotency_key: outbox::idempotency_key(&p.campaign, &p.customer_id, day),
        campaign: p.campaign.clone(),
        customer_id: p.customer_id.clone(),
        day: day.to_string(),
        status: if p.held_out {
            Status::HeldOut
        } else {
            Status::Queued
        },
        channel: p.channel.clone(),
        fallback_channels: p.fallback_channels.clone(),
        recipient: p.message.as_ref().map(|m| m.recipient().to_string()),
        message: p
            .message
            .as_ref()
            .map(|m| serde_json::to_value(m).unwrap_or_default()),
        offer: serde_json::to_value(&p.offer).unwrap_or_default(),
        explanation: serde_json::json!({
            "why": p.why,
            "channel": p.channel_reason,
            "score": p.score,
        }),
        holdout_draw: p.holdout_draw,
        model_version_id: p.score.model_version_id,
        p_return: p.score.p_return,
        lapse_risk: p.score.lapse_risk,
        not_before: p.not_before,
        expires_at: p.expires_at,
    }
}

/// A failed campaign run as recorded in `campaign_runs`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecordedFailure {
    pub campaign: String,
    pub day: String,
    pub run_at: i64,
    pub reason: String,
}

type FailureRow = (String, String, i64, String);

/// The campaigns whose latest run on the latest day campaigns ran failed (`status`).
pub async fn latest_failures(db: &Db) -> sqlx::Result<Vec<RecordedFailure>> {
    let sql = "SELECT r.campaign, r.day, r.run_at, r.error FROM campaign_runs r \
               WHERE r.day = (SELECT MAX(day) FROM campaign_runs) AND r.error IS NOT NULL \
               AND r.run_id = (SELECT MAX(x.run_id) FROM campaign_runs x WHERE x.campaign = r.campaign AND x.day = r.day) \
               ORDER BY r.campaign";
    let rows: Vec<FailureRow> = crate::with_pool!(db, p => sqlx::query_as(sql).fetch_all(p).await)?;
    Ok(rows
        .into_iter()
        .map(|r| RecordedFailure {
            campaign: r.0,
            day: r.1,
            run_at: r.2,
            reason: r.3,
        })
        .collect())
}

/// Campaign days in `[from, to]` whose latest run failed, newest first (the report).
pub async fn failures_between(db: &Db, from: &str, to: &str) -> sqlx::Result<Vec<RecordedFailure>> {
    let sql = "SELECT r.campaign, r.day, r.run_at, r.error FROM campaign_runs r \
               WHERE r.day >= $1 AND r.day <= $2 AND r.error IS NOT NULL \
               AND r.run_id = (SELECT MAX(x.run_id) FROM campaign_runs x WHERE x.campaign = r.campaign AND x.day = r.day) \
               ORDER BY r.day DESC, r.campaign";
    let rows: Vec<FailureRow> =
        crate::with_pool!(db, p => sqlx::query_as(sql).bind(from).bind(to).fetch_all(p).await)?;
    Ok(rows
        .into_iter()
        .map(|r| RecordedFailure {
            campaign: r.0,
            day: r.1,
            run_at: r.2,
            reason: r.3,
        })
        .collect())
}

/// Per campaign: failed runs in all, and whether its run on the latest campaign day failed
/// (`/metrics`).
pub async fn failure_counts(db: &Db) -> sqlx::Result<Vec<(String, i64, bool)>> {
    let totals: Vec<(String, i64)> = crate::with_pool!(db, p => {
        sqlx::query_as("SELECT campaign, COUNT(*) FROM campaign_runs WHERE error IS NOT NULL GROUP BY campaign ORDER BY campaign").fetch_all(p).await
    })?;
    let latest: Vec<(String, i64)> = crate::with_pool!(db, p => {
        sqlx::query_as(
            "SELECT r.campaign, CAST(CASE WHEN r.error IS NULL THEN 0 ELSE 1 END AS BIGINT) FROM campaign_runs r \
             WHERE r.day = (SELECT MAX(day) FROM campaign_runs) \
             AND r.run_id = (SELECT MAX(x.run_id) FROM campaign_runs x WHERE x.campaign = r.campaign AND x.day = r.day) \
             ORDER BY r.campaign",
        )
        .fetch_all(p)
        .await
    })?;
    let mut out: Vec<(String, i64, bool)> =
        totals.into_iter().map(|(c, n)| (c, n, false)).collect();
    for (c, failed) in latest {
        match out.iter_mut().find(|x| x.0 == c) {
            Some(x) => x.2 = failed == 1,
            None => out.push((c, 0, failed == 1)),
        }
    }
    out.sort();
    Ok(out)
}

impl PlanReport {
    /// The readable summary `campaigns plan` prints: the funnel of every campaign, then a
    /// sample of who gets what.
    pub fn table(&self, sample: usize, tz: chrono_tz::Tz) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "campaign selection for {} ({} customers scored; clock {})",
            self.day,
            self.customers_scored,
            self.now.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
        );
        for c in &self.campaigns {
            if let Some(reason) = &c.failure {
                let _ = writeln!(
                    out,
                    "\n== {} (FAILED, skipped: the other campaigns ran without it)\n  {reason}",
                    c.campaign
                );
                continue;
            }
            let _ = writeln!(
                out,
                "\n== {}{}",
                c.campaign,
                if c.active {
                    ""
                } else {
                    " (inactive: disabled or outside its dates)"
                }
            );
            if !c.active {
                continue;
            }
            let _ = writeln!(out, "  {:<48} {:>9}", "scored customers", c.funnel.scored);
            for (step, n) in &c.funnel.counts {
                if *n > 0 || matches!(step, Step::Selected | Step::HeldOut) {
                    let _ = writeln!(out, "  {:<48} {:>9}", step.label(), n);
                }
            }
            if c.funnel.waiting_for_send_hours > 0 {
                let _ = writeln!(
                    out,
                    "  {:<48} {:>9}",
                    "  of the selected: wait for send hours", c.funnel.waiting_for_send_hours
                );
            }
            if c.funnel.channel_fallbacks > 0 {
                let _ = writeln!(
                    out,
                    "  {:<48} {:>9}",
                    "  of the selected: on a fallback channel", c.funnel.channel_fallbacks
                );
            }
            if let Some(n) = c.inserted {
                let _ = writeln!(out, "  {:<48} {:>9}", "new outbox rows", n);
            }
            // Right after a run (the demo's, the daemon's) every count below the first step is
            // zero: say why, so an empty plan does not read as "nobody qualifies".
            let queued = c.funnel.get(Step::AlreadyInOutbox);
            if queued > 0 && c.selected + c.held_out == 0 {
                let _ = writeln!(
                    out,
                    "  note: today's run already wrote these {queued} customers to the outbox, so a re-run adds none; \
                     `retentiond status` shows the queue, `--as-of` plans another day"
                );
            }
            for (shown, p) in self
                .planned
                .iter()
                .filter(|p| p.campaign == c.campaign && !p.held_out)
                .enumerate()
            {
                if shown == 0 {
                    let _ = writeln!(out, "  sample:");
                }
                if shown >= sample {
                    break;
                }
                let s = &p.score;
                let _ = writeln!(
                    out,
                    "    {:<14} P(return) {:.2} P(alive) {:.2} risk {:.2} window {}–{} d  {:<9} {} | {} {} | {}",
                    p.customer_id,
                    s.p_return,
                    s.p_alive,
                    s.lapse_risk,
                    s.window_lo_days,
                    s.window_hi_days,
                    p.channel.as_deref().unwrap_or("-"),
                    p.offer.category.as_deref().unwrap_or("(no category)"),
                    p.offer.discount.as_deref().unwrap_or("no discount"),
                    p.offer.code.as_deref().unwrap_or(""),
                    p.message.as_ref().map(|m| m.summary()).unwrap_or_default()
                );
            }
        }
        let _ = writeln!(out, "\nselected in {:.1} s", self.seconds);
        out
    }

    /// Writes every planned row (selected and held out) as CSV. Text cells go through
    /// [`crate::csv_safe::neutralize`] (ids, names and subjects come from imported data and may
    /// start like a spreadsheet formula); the numbers written here stay numbers.
    pub fn write_csv(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use crate::csv_safe::neutralize as text;
        let mut w = csv::Writer::from_path(path)?;
        w.write_record([
            "campaign",
            "customer_id",
            "group",
            "channel",
            "fallback_channels",
            "channel_reason",
            "p_return",
            "p_alive",
            "lapse_risk",
            "window_lo_days",
            "window_median_days",
            "window_hi_days",
            "category",
            "discount",
            "code",
            "products",
            "not_before",
            "summary",
        ])?;
        for p in &self.planned {
            let s = &p.score;
            w.write_record([
                &*text(&p.campaign),
                &text(&p.customer_id),
                if p.held_out { "holdout" } else { "treated" },
                &text(p.channel.as_deref().unwrap_or("")),
                &text(&p.fallback_channels.join(" ")),
                &text(&p.channel_reason),
                &format!("{:.4}", s.p_return),
                &format!("{:.4}", s.p_alive),
                &format!("{:.4}", s.lapse_risk),
                &s.window_lo_days.to_string(),
                &s.window_median_days.to_string(),
                &s.window_hi_days.to_string(),
                &text(p.offer.category.as_deref().unwrap_or("")),
                &text(p.offer.discount.as_deref().unwrap_or("")),
                &text(p.offer.code.as_deref().unwrap_or("")),
                &text(
                    &p.offer
                        .products
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                &DateTime::from_timestamp(p.not_before, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                &text(&p.message.as_ref().map(|m| m.summary()).unwrap_or_default()),
            ])?;
        }
        w.flush()?;
        Ok(())
    }
}
