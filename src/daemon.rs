//! `retentiond run` and `status`: the glue that assembles the scheduler,
//! the dispatcher and the HTTP server around one database.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::campaigns::{CampaignSet, SharedCampaigns};
use crate::cli::{build_dispatcher, config_failure, connect, http_state, shutdown_signal};
use crate::config::Settings;
use crate::scheduler::{Daemon, JobContext, JobKind, Outcome, RunReport, Trigger, ledger};
use crate::selection::offer::Secrets;

/// Loads the campaigns and checks the secrets they need; `Err(exit code)` after printing why.
pub(crate) fn campaigns_and_secrets(
    settings: &Settings,
    config: &Path,
    secrets: &Secrets,
) -> Result<CampaignSet, ExitCode> {
    let set = crate::selection::preflight::load(settings, &config.display().to_string())
        .map_err(|e| config_failure(&e))?;
    let needs_code = set.campaigns.iter().any(|c| c.needs_code_secret());
    match crate::cli::refuse_without_secrets(settings, config, secrets, needs_code) {
        Some(code) => Err(code),
        None => Ok(set),
    }
}

/// Campaigns the run skipped because they failed (from the campaigns job's stats).
pub(crate) fn failed_campaigns(r: &RunReport) -> usize {
    if r.job != JobKind::Campaigns {
        return 0;
    }
    serde_json::from_str::<serde_json::Value>(&r.detail)
        .ok()
        .and_then(|v| v["failed"].as_array().map(Vec::len))
        .unwrap_or(0)
}

pub(crate) fn print_report(r: &RunReport) {
    println!(
        "   {:<12} {:<9} {:>6.1} s  {}",
        r.job.as_str(),
        r.outcome.as_str(),
        r.seconds,
        summarize(r)
    );
}

/// One line a person can read from a run's stats.
fn summarize(r: &RunReport) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.detail) else {
        return r.detail.clone();
    };
    let f = |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |f| format!("{f:.3}"));
    match r.job {
        JobKind::Retrain => {
            let (verb, o) = match (&v["outcome"]["Promoted"], &v["outcome"]["KeptChampion"]) {
                (p, _) if p.is_object() => ("promoted", p),
                (_, k) => ("stored, champion kept", k),
            };
            format!(
                "model version {} {verb} ({}); backtest AUC {}, C-index {}, hit@1 {}",
                o["model_version_id"],
                o["reason"].as_str().unwrap_or(""),
                f(&v["evaluation"]["auc"]),
                f(&v["evaluation"]["c_index"]),
                f(&v["evaluation"]["hit_at_1"])
            )
        }
        JobKind::Score => format!(
            "{} customers scored as of {} with model version {}; mean P(return) {}",
            v["customers"],
            v["as_of_date"].as_str().unwrap_or(""),
            v["model_version_id"],
            f(&v["mean_p_return"])
        ),
        JobKind::Campaigns => {
            let parts: Vec<String> = v["campaigns"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| match c["error"].as_str() {
                            Some(why) => format!(
                                "{}: FAILED, skipped ({why})",
                                c["campaign"].as_str().unwrap_or("")
                            ),
                            None => format!(
                                "{}: {} selected, {} held out, {} new outbox rows",
                                c["campaign"].as_str().unwrap_or(""),
                                c["selected"],
                                c["held_out"],
                                c["queued"]
                            ),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if parts.is_empty() {
                "no active campaigns".into()
            } else {
                parts.join("; ")
            }
        }
        JobKind::Housekeeping => format!(
            "pruned {} scores, {} attempts, {} webhook events, {} ledger rows",
            v["scores_deleted"],
            v["attempts_deleted"],
            v["webhook_events_deleted"],
            v["job_runs_deleted"]
        ),
    }
}

/// `retentiond run [--once]`.
pub async fn run(settings: &Settings, config: &Path, once: bool) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::from_env(&settings.campaigns);
    let set = match campaigns_and_secrets(settings, config, &secrets) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let auth_token =
        match crate::secrets::http_auth_token(settings, &config.display().to_string(), &|k| {
            std::env::var(k).ok()
        }) {
            Ok(t) => t,
            Err(e) => return Ok(config_failure(&e)),
        };
    let db = connect(settings).await?;
    let campaigns = SharedCampaigns::new(set);
    let dispatcher = match build_dispatcher(
        settings,
        config,
        &db,
        secrets.clone(),
        Some(campaigns.clone()),
    ) {
        Ok(d) => d,
        Err(e) => return Ok(config_failure(&e)),
    };
    let daemon = Daemon::new(JobContext {
        db: db.clone(),
        settings: settings.clone(),
        campaigns: campaigns.clone(),
        secrets: secrets.clone(),
    });

    if once {
        let mut failed = false;
        if daemon.try_lead().await {
            println!("catching up ({})", daemon.id());
            for r in daemon.catch_up(Trigger::Once).await {
                failed |= r.outcome == Outcome::Failed || failed_campaigns(&r) > 0;
                print_report(&r);
            }
            daemon.resign().await;
        } else {
            let holder = ledger::lease_holder(&db, crate::scheduler::LEADER_LEASE)
                .await?
                .map(|h| h.0)
                .unwrap_or_default();
            println!("replica {holder} leads: scheduled jobs are left to it; dispatching only");
        }
        let stats = dispatcher.drain().await?;
        db.close().await;
        println!("dispatch: {}", serde_json::to_string(&stats)?);
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }

    let listener = tokio::net::TcpListener::bind(&settings.http.bind)
        .await
        .with_context(|| format!("Failed to bind {}", settings.http.bind))?;
    let state = http_state(settings, &db, &secrets, Some(campaigns.clone()), auth_token);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn({
        let mut rx = rx.clone();
        crate::http::serve(listener, state, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        })
    });
    let worker = tokio::spawn({
        let d = dispatcher.clone();
        let rx = rx.clone();
        async move { d.run(rx).await }
    });
    let leader = tokio::spawn(daemon.clone().lead(rx.clone()));
    let mut sched = tokio_cron_scheduler::JobScheduler::new()
        .await
        .context("Failed to start the scheduler")?;
    daemon
        .schedule_all(&sched)
        .await
        .context("Failed to schedule the jobs")?;
    sched
        .start()
        .await
        .context("Failed to start the scheduler")?;
    let reload = tokio::spawn(reload_on_sighup(
        settings.clone(),
        config.to_path_buf(),
        campaigns,
        rx.clone(),
    ));
    tracing::info!(replica = daemon.id(), addr = %settings.http.bind, "daemon started");
    for (job, next) in daemon.next_firings(Utc::now()) {
        match next {
            Some(t) => {
                tracing::info!(job = %job, next = %t.with_timezone(&settings.timezone()), "scheduled")
            }
            None => tracing::info!(job = %job, "disabled"),
        }
    }

    shutdown_signal().await;
    tracing::info!(
        "shutting down: no new jobs or claims; finishing the running job, in-flight sends and requests"
    );
    let _ = tx.send(true);
    let _ = sched.shutdown().await;
    let limit = Duration::from_secs(settings.scheduler.shutdown_timeout_seconds);
    let (stats, _, _, _) = tokio::join!(
        async {
            match tokio::time::timeout(limit, worker).await {
                Ok(Ok(Ok(s))) => s,
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %format!("{e:#}"), "dispatcher stopped with an error");
                    Default::default()
                }
                _ => {
                    tracing::warn!("shutdown timeout: in-flight claims are left to lease recovery");
                    Default::default()
                }
            }
        },
        daemon.stop(limit),
        tokio::time::timeout(limit, http),
        leader,
    );
    reload.abort();
    db.close().await;
    println!("{}", serde_json::to_string(&stats)?);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP reloads the campaign files; an invalid set is refused (its errors logged) and the
/// campaigns in force stay.
async fn reload_on_sighup(
    settings: Settings,
    config: std::path::PathBuf,
    campaigns: SharedCampaigns,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let dir = settings.campaigns.dir.clone();
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            match crate::selection::preflight::load(&settings, &config.display().to_string()) {
                Ok(set) => {
                    let names: Vec<&str> = set.campaigns.iter().map(|c| c.name.as_str()).collect();
                    tracing::info!(dir = %dir.display(), campaigns = ?names, "SIGHUP: campaigns reloaded");
                    metrics::counter!("retentiond_campaign_reloads_total", "outcome" => "ok")
                        .increment(1);
                    campaigns.replace(set);
                }
                Err(e) => {
                    for issue in &e.issues {
                        tracing::error!(file = %issue.file, key = %issue.key, problem = %issue.message, fix = %issue.fix, "SIGHUP: campaign reload refused");
                    }
                    metrics::counter!("retentiond_campaign_reloads_total", "outcome" => "refused")
                        .increment(1);
                    tracing::error!(
                        problems = e.issues.len(),
                        "SIGHUP: the campaigns in force stay"
                    );
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, config, campaigns, shutdown.wait_for(|s| *s).await);
}

#[derive(serde::Serialize)]
struct JobStatus {
    job: JobKind,
    schedule: String,
    last: Option<ledger::Run>,
    next: Option<chrono::DateTime<Utc>>,
}

/// `retentiond status`.
pub async fn status(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let tz = settings.timezone();
    let champion = crate::models::registry::list(&db)
        .await?
        .into_iter()
        .find(|v| v.status == "champion");
    let leader = ledger::lease_holder(&db, crate::scheduler::LEADER_LEASE)
        .await?
        .filter(|(_, exp)| *exp >= Utc::now().timestamp());
    let last = ledger::latest_runs(&db).await?;
    let schedules = settings.scheduler.schedules();
    let now = Utc::now();
    let jobs: Vec<JobStatus> = JobKind::ALL
        .iter()
        .map(|&j| {
            let s = schedules.get(j);
            JobStatus {
                job: j,
                schedule: s
                    .map(|c| c.expr.clone())
                    .unwrap_or_else(|| "disabled".into()),
                last: last.iter().find(|r| r.job == j.as_str()).cloned(),
                next: s.and_then(|c| c.next_after(now, tz)),
            }
        })
        .collect();
    let queue = crate::outbox::counts_by_status(&db).await?;
    let suppressions = db.count("suppressions").await?;
    let campaign_failures = crate::selection::run::latest_failures(&db).await?;
    db.close().await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "champion": champion, "leader": leader.map(|l| l.0), "jobs": jobs, "queue": queue, "suppressions": suppressions,
                "campaign_failures": campaign_failures
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let at = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| {
                d.with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_default()
    };
    match &champion {
        Some(v) => {
            let e = &v.metrics["evaluation"];
            let num =
                |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |f| format!("{f:.3}"));
            println!(
                "champion: model version {} ({}), trained {}; backtest AUC {}, C-index {}, hit@1 {}",
                v.model_version_id,
                v.kind,
                at(v.trained_at),
                num(&e["return"]["auc"]),
                num(&e["timing"]["c_index"]),
                num(&e["category"]["hit_at_1"])
            );
        }
        None => println!("champion: none yet (the daemon trains one at start)"),
    }
    println!(
        "leader: {}",
        leader.map_or("none (no daemon running)".to_string(), |l| l.0)
    );
    println!(
        "\n{:<13} {:<16} {:<26} {:<9} {:<26}",
        "job", "schedule", "last run", "outcome", "next run"
    );
    for j in &jobs {
        let (when, outcome) = match &j.last {
            Some(r) => (at(r.started_at), r.outcome.clone()),
            None => ("never".into(), "-".into()),
        };
        let next = j
            .next
            .map(|t| at(t.timestamp()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:<16} {:<26} {:<9} {:<26}",
            j.job.as_str(),
            j.schedule,
            when,
            outcome,
            next
        );
        if let Some(err) = j
            .last
            .as_ref()
            .and_then(|r| r.error.as_ref())
            .filter(|_| j.last.as_ref().is_some_and(|r| r.outcome == "failed"))
        {
            println!("              error: {err}");
        }
    }
    if !campaign_failures.is_empty() {
        println!(
            "\ncampaigns that failed on {} (skipped; the others ran):",
            campaign_failures[0].day
        );
        for f in &campaign_failures {
            println!("  {:<16} {}", f.campaign, f.reason);
        }
    }
    println!("\nqueue by status:");
    if queue.is_empty() {
        println!("  (empty)");
    }
    for (s, n) in &queue {
        println!("  {s:<12} {n}");
    }
    println!("suppressions: {suppressions}");
    Ok(ExitCode::SUCCESS)
}
