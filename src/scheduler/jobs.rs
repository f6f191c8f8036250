//! What each scheduled job does. Each body returns what it did as JSON for the ledger, or
//! why it had nothing to do; errors carry their chain to the ledger and the log.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::ledger::{self, Trigger};
use super::schedule::{HousekeepingSettings, JobKind};
use crate::campaigns::SharedCampaigns;
use crate::config::Settings;
use crate::db::{Db, Val};
use crate::selection::offer::Secrets;

/// What a job needs.
#[derive(Clone)]
pub struct JobContext {
    pub db: Db,
    pub settings: Settings,
    pub campaigns: SharedCampaigns,
    pub secrets: Secrets,
}

/// A finished body.
#[derive(Debug)]
pub enum Done {
    Ok(Value),
    /// Nothing to do, and why.
    Skipped(String),
}

/// Runs `job` for the brand-local day of `now`.
pub async fn run(
    ctx: &JobContext,
    job: JobKind,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> anyhow::Result<Done> {
    let s = &ctx.settings;
    let day = super::schedule::local_day(now, s.timezone());
    match job {
        JobKind::Retrain => {
            // A failure here leaves the registry as it was: the champion keeps scoring.
            let (outcome, report) =
                crate::models::training::train(&ctx.db, &s.model, s.timezone(), s.day_start(day))
                    .await?;
            Ok(Done::Ok(
                json!({ "as_of": day.to_string(), "outcome": outcome, "evaluation": summary(&report) }),
            ))
        }
        JobKind::Score => {
            let m = &s.model;
            let r = crate::scoring::score(
                &ctx.db,
                s.day_start(day),
                &day.to_string(),
                m.bot_events_per_day,
                m.category_half_life_days,
                s.campaigns.best_seller_days,
            )
            .await?;
            let mut stats = serde_json::to_value(&r)?;
            // Measurement follows each scoring: past scores whose horizon has now passed are
            // checked against what happened, and orders are attributed to messages. Its failure
            // is logged with its chain and kept in the run's stats, but does not fail the job:
            // the day's scores are committed, and campaigns (which follow a successful scoring)
            // must not wait on a report. Both are retried at the next scoring.
            let measured = async {
                let evaluated = crate::monitoring::evaluate_matured(
                    &ctx.db,
                    m.bot_events_per_day,
                    now.timestamp(),
                    s.measurement.max_evaluations_per_run,
                )
                .await?;
                let attribution = crate::measurement::attribute(
                    &ctx.db,
                    &s.measurement,
                    &ctx.campaigns.current(),
                )
                .await?;
                anyhow::Ok((evaluated, attribution))
            };
            match measured.await {
                Ok((evaluated, attribution)) => {
                    stats["evaluated"] = json!(evaluated.iter().map(|e| json!({ "day": e.as_of_date, "auc": e.auc, "window_coverage": e.window_coverage, "hit_at_3": e.hit_at_3 })).collect::<Vec<_>>());
                    stats["attribution"] = serde_json::to_value(&attribution)?;
                }
                Err(e) => {
                    tracing::error!(error.cause_chain = ?e, "measurement after scoring failed; the scores stand");
                    stats["measurement_error"] = json!(format!("{e:#}"));
                }
            }
            Ok(Done::Ok(stats))
        }
        JobKind::Campaigns => {
            let d = day.to_string();
            // Never on stale scores: without the day's scoring there is nothing to select from.
            if !scores_exist(&ctx.db, &d).await? {
                return Ok(Done::Skipped(format!(
                    "no scores for {d} yet: campaigns run as soon as the day's scoring finishes"
                )));
            }
            if trigger == Trigger::Schedule
                && ledger::done_for_day(&ctx.db, job.as_str(), &d).await?
            {
                return Ok(Done::Skipped(format!("campaigns already ran for {d}")));
            }
            let set = ctx.campaigns.current();
            let r =
                crate::selection::run::run(&ctx.db, s, &set, None, day, now, &ctx.secrets).await?;
            for f in &r.failed {
                tracing::error!(campaign = %f.campaign, reason = %f.reason, "campaign failed: skipped, the other campaigns ran");
            }
            let per: Vec<Value> = r
                .campaigns
                .iter()
                .map(|c| json!({ "campaign": c.campaign, "active": c.active, "selected": c.selected, "held_out": c.held_out, "queued": c.inserted, "error": c.failure }))
                .collect();
            // A failed campaign was skipped and recorded (`campaign_runs.error`); the others
            // ran, so the job is `ok` and its stats name the failures.
            Ok(Done::Ok(
                json!({ "day": d, "customers_scored": r.customers_scored, "campaigns": per, "failed": r.failed, "seconds": r.seconds }),
            ))
        }
        JobKind::Housekeeping => Ok(Done::Ok(
            housekeeping(
                &ctx.db,
                &s.housekeeping,
                now,
                s.timezone(),
                s.http.webhooks.tolerance_seconds,
            )
            .await?,
        )),
    }
}

fn summary(r: &crate::models::evaluate::BacktestReport) -> Value {
    let v = serde_json::to_value(r).unwrap_or(Value::Null);
    json!({
        "auc": v["return"]["auc"],
        "c_index": v["timing"]["c_index"],
        "hit_at_1": v["category"]["hit_at_1"],
    })
}

/// True when the day's scoring finished (it commits in one transaction).
pub async fn scores_exist(db: &Db, day: &str) -> sqlx::Result<bool> {
    let n: i64 = crate::with_pool!(db, p => sqlx::query_scalar("SELECT COUNT(*) FROM scoring_runs WHERE as_of_date = $1").bind(day).fetch_one(p).await)?;
    Ok(n > 0)
}

/// Prunes what is older than its retention. Never the outbox (measurement reads it), nor
/// suppressions, campaign runs or models; attempts of messages still in flight stay; webhook
/// events stay while a request that recorded them could still be accepted
/// ([`crate::http::replay_window_secs`] of `webhook_tolerance_secs`).
pub async fn housekeeping(
    db: &Db,
    k: &HousekeepingSettings,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
    webhook_tolerance_secs: u32,
) -> anyhow::Result<Value> {
    let t = now.timestamp();
    let days = |n: u32| t - i64::from(n) * 86_400;
    let scores_before = super::schedule::local_day(
        now - chrono::Duration::days(i64::from(k.keep_scores_days)),
        tz,
    )
    .to_string();
    let mut tx = db.begin().await?;
    let scores = tx
        .execute(
            "DELETE FROM scores WHERE as_of_date < $1",
            &[Val::Text(Some(scores_before.clone()))],
        )
        .await?;
    let attempts = tx
        .execute(
            "DELETE FROM delivery_attempts WHERE started_at < $1 \
             AND message_id NOT IN (SELECT message_id FROM outbox WHERE status IN ('queued', 'sending'))",
            &[Val::Int(Some(days(k.keep_attempts_days)))],
        )
        .await?;
    // Webhook events are also the replay records (event keys, Mailgun tokens): whatever the
    // retention, none is pruned while its signed request is within the timestamp window.
    let events_before = days(k.keep_webhook_events_days)
        .min(t - crate::http::replay_window_secs(webhook_tolerance_secs));
    let events = tx
        .execute(
            "DELETE FROM webhook_events WHERE received_at < $1",
            &[Val::Int(Some(events_before))],
        )
        .await?;
    let runs = tx
        .execute(
            "DELETE FROM job_runs WHERE started_at < $1 AND outcome <> 'running'",
            &[Val::Int(Some(days(k.keep_job_runs_days)))],
        )
        .await?;
    // Drift rows are small (one per feature and day) and chart the model's history: they live
    // as long as the ledger.
    let drift_before = super::schedule::local_day(
        now - chrono::Duration::days(i64::from(k.keep_job_runs_days)),
        tz,
    )
    .to_string();
    let drift = tx
        .execute(
            "DELETE FROM feature_drift WHERE as_of_date < $1",
            &[Val::Text(Some(drift_before))],
        )
        .await?;
    tx.commit().await?;
    Ok(
        json!({ "scores_deleted": scores, "scores_before": scores_before, "attempts_deleted": attempts, "webhook_events_deleted": events, "job_runs_deleted": runs, "drift_rows_deleted": drift }),
    )
}
