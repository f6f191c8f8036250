//! Reads what selection needs: the day's scores joined to customers (one pass through the fast
//! bulk reader), suppressions, and the outbox rows of the last weeks.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{Duration, NaiveDate};

use super::{Customer, Inputs, Past, Score, Suppression};
use crate::campaigns::CampaignSet;
use crate::db::Db;
use crate::scan::{Bind, scan_with};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no scores for {day}: run `retentiond score --as-of {day}` first")]
    NoScores { day: NaiveDate },
}

const SQL: &str = "SELECT s.customer_id, c.email, c.phone, c.first_name, c.country, c.timezone, \
    CASE WHEN c.email_opt_in THEN 1 ELSE 0 END, CASE WHEN c.sms_opt_in THEN 1 ELSE 0 END, \
    CASE WHEN c.whatsapp_opt_in THEN 1 ELSE 0 END, c.attributes, \
    s.model_version_id, s.model_kind, s.p_return, s.p_alive, s.lapse_risk, \
    s.window_lo_days, s.window_median_days, s.window_hi_days, s.window_lo_at, s.window_hi_at, \
    s.category_1, s.category_1_p, s.category_2, s.category_2_p, s.category_3, s.category_3_p, \
    s.orders_count, s.total_spend, s.last_order_at, s.categories_bought \
    FROM scores s LEFT JOIN customers c ON c.customer_id = s.customer_id WHERE s.as_of_date = $1";

/// Loads the inputs for selecting on `day`.
#[tracing::instrument(skip(db, set))]
pub async fn load(
    db: &Db,
    set: &CampaignSet,
    day: NaiveDate,
    frequency_window_days: u32,
) -> anyhow::Result<Inputs> {
    let started = std::time::Instant::now();
    let day_s = day.to_string();
    let mut customers: Vec<Customer> = Vec::new();
    let mut zones: HashMap<String, Option<chrono_tz::Tz>> = HashMap::new();
    scan_with(db, SQL, &[Bind::Text(&day_s)], |r| {
        let text = |i| {
            r.text(i)
                .map(|t| t.filter(|s| !s.is_empty()).map(str::to_owned))
        };
        let tz = match r.text(5)? {
            Some(name) => match zones.get(name) {
                Some(z) => *z,
                None => *zones
                    .entry(name.to_owned())
                    .or_insert_with(|| name.parse().ok()),
            },
            None => None,
        };
        let mut categories = Vec::with_capacity(3);
        for k in 0..3 {
            if let (Some(name), Some(p)) = (r.text(20 + 2 * k)?, r.real(21 + 2 * k)?) {
                categories.push((name.to_owned(), p));
            }
        }
        customers.push(Customer {
            customer_id: r.text(0)?.unwrap_or_default().to_owned(),
            email: text(1)?,
            phone: text(2)?,
            first_name: text(3)?,
            country: r.text(4)?.map(str::to_ascii_uppercase),
            tz,
            email_opt_in: r.int(6)? == Some(1),
            sms_opt_in: r.int(7)? == Some(1),
            whatsapp_opt_in: r.int(8)? == Some(1),
            attributes: text(9)?,
            score: Score {
                model_version_id: r.int(10)?.unwrap_or_default(),
                model_kind: r.text(11)?.unwrap_or_default().to_owned(),
                p_return: r.real(12)?.unwrap_or_default(),
                p_alive: r.real(13)?.unwrap_or_default(),
                lapse_risk: r.real(14)?.unwrap_or_default(),
                window_lo_days: r.int(15)?.unwrap_or_default(),
                window_median_days: r.int(16)?.unwrap_or_default(),
                window_hi_days: r.int(17)?.unwrap_or_default(),
                window_lo_at: r.int(18)?.unwrap_or_default(),
                window_hi_at: r.int(19)?.unwrap_or_default(),
                categories,
                orders_count: r.int(26)?.unwrap_or_default(),
                total_spend: r.real(27)?.unwrap_or_default(),
                last_order_at: r.int(28)?,
                categories_bought: text(29)?,
            },
        });
        Ok(())
    })
    .await
    .context("Failed to read the day's scores")?;
    if customers.is_empty() {
        let runs = crate::with_pool!(db, p => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM scoring_runs WHERE as_of_date = $1").bind(&day_s).fetch_one(p).await
        })?;
        if runs == 0 {
            return Err(LoadError::NoScores { day }.into());
        }
    }

    let mut suppressions: HashMap<String, Suppression> = HashMap::new();
    // Customer suppressions and address suppressions matched to the customers holding them.
    scan_with(db, crate::suppressions::EFFECTIVE_SQL, &[], |r| {
        suppressions
            .entry(r.text(0)?.unwrap_or_default().to_owned())
            .or_default()
            .add(r.text(1)?);
        Ok(())
    })
    .await?;

    // History far enough back for every cooldown and the frequency window.
    let back = set
        .campaigns
        .iter()
        .map(|c| c.limits.cooldown_days)
        .chain([frequency_window_days])
        .max()
        .unwrap_or(0);
    let from = (day - Duration::days(back as i64)).to_string();
    let mut history: HashMap<String, Vec<Past>> = HashMap::new();
    scan_with(
        db,
        "SELECT campaign, customer_id, day, status FROM outbox WHERE day >= $1",
        &[Bind::Text(&from)],
        |r| {
            let Some(d) = r.text(2)?.and_then(|d| d.parse::<NaiveDate>().ok()) else {
                return Ok(());
            };
            let status = r.text(3)?.unwrap_or_default();
            history
                .entry(r.text(1)?.unwrap_or_default().to_owned())
                .or_default()
                .push(Past {
                    campaign: r.text(0)?.unwrap_or_default().to_owned(),
                    day: d,
                    outreach: crate::outbox::Status::parse(status).is_some_and(|s| s.is_outreach()),
                });
            Ok(())
        },
    )
    .await?;
    tracing::info!(
        customers = customers.len(),
        suppressed = suppressions.len(),
        history = history.len(),
        secs = started.elapsed().as_secs_f32(),
        "selection inputs loaded"
    );
    Ok(Inputs {
        customers,
        suppressions,
        history,
    })
}
