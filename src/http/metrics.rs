//! `/metrics`: the process's `metrics` recorder (counters and histograms that the dispatcher and
//! the handlers record with the `metrics` macros) followed by gauges read from the database on
//! each scrape.
//!
//! The database gauges are written straight into the response rather than set on the global
//! recorder, so they always show the state of the database this server talks to (no stale label
//! sets once a status drops to zero, and servers on different databases in one process, as in
//! tests, do not mix):
//! - `retentiond_messages{status,provider}`: outbox rows by status and provider ("" when NULL);
//! - `retentiond_queue_depth`: outbox rows with status `queued`;
//! - `retentiond_suppressions_total`: suppression rows;
//! - `retentiond_job_last_run_timestamp_seconds{job}` / `retentiond_job_last_outcome{job}` (1 ok
//!   or skipped, 0 failed or abandoned) from the job ledger; `retentiond_job_runs_total{job,outcome}`
//!   and `retentiond_job_duration_seconds{job}` from the scheduler;
//! - `retentiond_feature_psi{feature}`: population stability index of each feature on the latest
//!   scoring day against the champion's training data (`crate::monitoring`; above 0.2 is drift);
//! - `retentiond_model_realized{metric}` / `retentiond_model_promised{metric}`: AUC, Brier score,
//!   window coverage and category hit@3 of the latest scoring day whose horizon has passed,
//!   beside what the model promised at training (promised has no Brier score);
//! - `retentiond_campaign_failures_total{campaign}`: campaign runs that failed and were skipped
//!   (`campaign_runs.error`); `retentiond_campaign_last_run_failed{campaign}`: 1 when the
//!   campaign's run on the latest campaign day failed;
//! - `retentiond_database_up`: 1 when the queries above worked.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::Shared;
use crate::db::Db;

/// Histogram buckets (seconds) of `retentiond_delivery_latency_seconds`: provider API calls,
/// from a fast 50 ms to a slow 30 s timeout.
pub const DELIVERY_LATENCY_BUCKETS: &[f64] =
    &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("retentiond_delivery_latency_seconds".into()),
            DELIVERY_LATENCY_BUCKETS,
        )
        .expect("buckets are not empty")
}

/// Installs the process-wide Prometheus recorder on first call and returns its handle; later
/// calls return the same handle. When another recorder was installed first, the handle of an
/// uninstalled recorder is returned (the `/metrics` page then shows the database gauges only).
pub fn install_metrics_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| match builder().install_recorder() {
            Ok(handle) => {
                describe();
                handle
            }
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will show database gauges only");
                builder().build_recorder().handle()
            }
        })
        .clone()
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "retentiond_delivery_attempts_total",
        "Delivery attempts by provider and outcome."
    );
    describe_histogram!(
        "retentiond_delivery_latency_seconds",
        Unit::Seconds,
        "Provider API call latency."
    );
    describe_counter!(
        "retentiond_http_requests_total",
        "HTTP requests by route template and status."
    );
    describe_counter!(
        "retentiond_webhook_requests_total",
        "Webhook requests by provider and outcome."
    );
    describe_counter!(
        "retentiond_webhook_events_total",
        "Webhook events by provider, kind and result (applied, unmatched, duplicate)."
    );
    describe_counter!(
        "retentiond_unsubscribes_total",
        "One-click unsubscribe POSTs by channel and result."
    );
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(s): State<Shared>) -> Response {
    s.metrics.run_upkeep();
    let mut out = s.metrics.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    database_gauges(&s.db, &mut out).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// A label value in the exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

async fn database_gauges(db: &Db, out: &mut String) {
    let mut up = true;
    let by_status = crate::with_pool!(db, p => {
        sqlx::query_as::<_, (String, String, i64)>(
            "SELECT status, COALESCE(provider, ''), COUNT(*) FROM outbox GROUP BY status, COALESCE(provider, '') ORDER BY 1, 2",
        )
        .fetch_all(p)
        .await
    });
    match by_status {
        Ok(rows) => {
            head(
                out,
                "retentiond_messages",
                "Outbox messages by status and provider (\"\" when none yet).",
            );
            for (status, provider, n) in &rows {
                let _ = writeln!(
                    out,
                    "retentiond_messages{{status=\"{}\",provider=\"{}\"}} {n}",
                    label(status),
                    label(provider)
                );
            }
            let queued: i64 = rows.iter().filter(|r| r.0 == "queued").map(|r| r.2).sum();
            head(
                out,
                "retentiond_queue_depth",
                "Outbox messages waiting to be sent (status queued).",
            );
            let _ = writeln!(out, "retentiond_queue_depth {queued}");
        }
        Err(e) => {
            up = false;
            tracing::warn!(error = %e, "metrics: cannot count outbox messages");
        }
    }
    match db.count("suppressions").await {
        Ok(n) => {
            head(
                out,
                "retentiond_suppressions_total",
                "Suppressions (unsubscribes, hard bounces, complaints, STOP replies).",
            );
            let _ = writeln!(out, "retentiond_suppressions_total {n}");
        }
        Err(e) => {
            up = false;
            tracing::warn!(error = %e, "metrics: cannot count suppressions");
        }
    }
    // The scheduler's table may not exist (yet): any error just leaves these out.
    let jobs = crate::with_pool!(db, p => {
        sqlx::query_as::<_, (String, i64, String)>(
            "SELECT r.job, r.finished_at, r.outcome FROM job_runs r \
             JOIN (SELECT job, MAX(finished_at) AS last FROM job_runs WHERE finished_at IS NOT NULL GROUP BY job) m \
               ON m.job = r.job AND m.last = r.finished_at \
             ORDER BY r.job",
        )
        .fetch_all(p)
        .await
    });
    match jobs {
        Ok(rows) if !rows.is_empty() => {
            let mut last: Vec<(String, i64, bool)> = Vec::new();
            for (job, at, outcome) in rows {
                // A skipped run (nothing to do) is not a failure.
                let ok = matches!(outcome.as_str(), "ok" | "skipped");
                match last.iter_mut().find(|(j, _, _)| *j == job) {
                    // Two runs finishing in the same second: a failure wins.
                    Some(entry) => entry.2 &= ok,
                    None => last.push((job, at, ok)),
                }
            }
            head(
                out,
                "retentiond_job_last_run_timestamp_seconds",
                "When each scheduled job last finished (unix seconds).",
            );
            for (job, at, _) in &last {
                let _ = writeln!(
                    out,
                    "retentiond_job_last_run_timestamp_seconds{{job=\"{}\"}} {at}",
                    label(job)
                );
            }
            head(
                out,
                "retentiond_job_last_outcome",
                "Outcome of each scheduled job's last run (1 ok, 0 failed).",
            );
            for (job, _, ok) in &last {
                let _ = writeln!(
                    out,
                    "retentiond_job_last_outcome{{job=\"{}\"}} {}",
                    label(job),
                    u8::from(*ok)
                );
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "metrics: no job_runs gauges"),
    }
    match crate::selection::run::failure_counts(db).await {
        Ok(rows) if !rows.is_empty() => {
            let _ = writeln!(
                out,
                "# HELP retentiond_campaign_failures_total Campaign runs that failed and were skipped (the other campaigns ran).\n# TYPE retentiond_campaign_failures_total counter"
            );
            for (c, n, _) in &rows {
                let _ = writeln!(
                    out,
                    "retentiond_campaign_failures_total{{campaign=\"{}\"}} {n}",
                    label(c)
                );
            }
            head(
                out,
                "retentiond_campaign_last_run_failed",
                "1 when the campaign's run on the latest campaign day failed and was skipped.",
            );
            for (c, _, failed) in &rows {
                let _ = writeln!(
                    out,
                    "retentiond_campaign_last_run_failed{{campaign=\"{}\"}} {}",
                    label(c),
                    u8::from(*failed)
                );
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "metrics: no campaign failure gauges"),
    }
    monitoring_gauges(db, out).await;
    head(
        out,
        "retentiond_database_up",
        "1 when the database answered the metrics queries.",
    );
    let _ = writeln!(out, "retentiond_database_up {}", u8::from(up));
}

/// Drift and realized performance; absent until the first scoring (or matured scoring).
async fn monitoring_gauges(db: &Db, out: &mut String) {
    match crate::monitoring::latest_drift(db).await {
        Ok(Some((day, rows))) => {
            head(
                out,
                "retentiond_feature_psi",
                &format!(
                    "Population stability index of each feature on the latest scoring day ({day}) against the training data; above 0.2 is drift."
                ),
            );
            for (f, p) in &rows {
                let _ = writeln!(
                    out,
                    "retentiond_feature_psi{{feature=\"{}\"}} {p}",
                    label(f)
                );
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "metrics: no drift gauges"),
    }
    match crate::monitoring::evaluations(db).await {
        Ok(all) => {
            let Some(e) = all.last() else { return };
            head(
                out,
                "retentiond_model_realized",
                &format!(
                    "Realized metrics of the latest scoring day whose horizon has passed ({}).",
                    e.as_of_date
                ),
            );
            for (m, v) in [
                ("auc", e.auc),
                ("brier", e.brier),
                ("window_coverage", e.window_coverage),
                ("hit_at_3", e.hit_at_3),
            ] {
                if v.is_finite() {
                    let _ = writeln!(out, "retentiond_model_realized{{metric=\"{m}\"}} {v}");
                }
            }
            head(
                out,
                "retentiond_model_promised",
                "What the model that scored that day promised at training (its backtest).",
            );
            for (m, v) in [
                ("auc", e.promised_auc),
                ("window_coverage", e.promised_window_coverage),
                ("hit_at_3", e.promised_hit_at_3),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(out, "retentiond_model_promised{{metric=\"{m}\"}} {v}");
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "metrics: no evaluation gauges"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn install_twice_is_fine() {
        let a = install_metrics_recorder();
        let b = install_metrics_recorder();
        ::metrics::histogram!("retentiond_delivery_latency_seconds", "provider" => "unit")
            .record(0.2);
        let text = b.render();
        assert!(
            text.contains(
                "retentiond_delivery_latency_seconds_bucket{provider=\"unit\",le=\"0.25\"} 1"
            ),
            "{text}"
        );
        drop(a);
    }
}
