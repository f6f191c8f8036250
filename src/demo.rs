//! `retentiond demo`: a synthetic brand, imported, then the daemon's cycle twice.
//!
//! 1. **A rehearsal in the past.** `rehearsal_days` before today the daemon's jobs run as they
//!    would have that day: train and score as of its start (the loaders read nothing after
//!    it), campaigns at noon. That outreach is sent in simulation (no provider), and the
//!    customers' responses are simulated with a known effect ([`crate::simulate`]): their
//!    attribution windows have closed by today, so the report has uplift to measure.
//! 2. **Today, for real**, as `retentiond run` does at start: catch up (score, campaigns,
//!    housekeeping; the model trained in the rehearsal is a day-zero champion, so no retrain),
//!    dispatch what is due to the configured providers, and write the report, which labels
//!    what came from the simulation.
//!
//! Messages are signed with the configured secrets when they are set. Without them the demo
//! signs with throw-away secrets and cancels (status `dead`, with the reason) the messages it
//! rendered that still wait for their send hours, so `retentiond run` never sends links that
//! cannot verify.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{NaiveDate, TimeZone, Utc};

use crate::campaigns::SharedCampaigns;
use crate::cli::{build_dispatcher, config_failure, connect};
use crate::config::Settings;
use crate::db::{Db, Val};
use crate::scheduler::jobs::{self, Done, JobContext};
use crate::scheduler::{Daemon, JobKind, Outcome, RunReport, Trigger};
use crate::selection::offer::Secrets;
use crate::simulate::Simulated;

/// What `demo` does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub customers: u64,
    pub seed: u64,
    /// Where the generated CSV files go.
    pub out: PathBuf,
    /// The report file.
    pub report: PathBuf,
    /// How many days before today the rehearsed outreach happens (its attribution windows
    /// must have closed by now: more than the longest channel window).
    pub rehearsal_days: u32,
    /// The known effect of a message on the chance of ordering within its window.
    pub effect: f64,
}

impl DemoOptions {
    pub fn new(customers: u64, seed: u64, out: PathBuf) -> DemoOptions {
        DemoOptions {
            customers,
            seed,
            out,
            report: PathBuf::from("data/report.html"),
            rehearsal_days: 14,
            effect: 0.08,
        }
    }
}

/// What the demo did, for its caller and tests.
#[derive(Debug)]
pub struct DemoSummary {
    pub code: ExitCode,
    pub rehearsal_day: Option<NaiveDate>,
    /// Messages of the rehearsal day marked sent in simulation.
    pub simulated_sends: u64,
    pub simulated: Option<Simulated>,
    /// Messages rendered with throw-away secrets that were cancelled rather than left queued.
    pub cancelled: u64,
    /// The report's one-line summary.
    pub report_line: Option<String>,
}

impl DemoSummary {
    fn stopped(code: ExitCode) -> DemoSummary {
        DemoSummary {
            code,
            rehearsal_day: None,
            simulated_sends: 0,
            simulated: None,
            cancelled: 0,
            report_line: None,
        }
    }
}

/// Why the demo cancels a message it rendered with a throw-away secret (its `last_error`).
pub const CANCELLED_REASON: &str = "cancelled by `retentiond demo`: rendered with a throw-away secret (the secret environment variables were not set), so its links could never verify; it is not sent";

/// The local instant `h:m` of `day` in the brand's time zone.
fn local_at(settings: &Settings, day: NaiveDate, h: u32, m: u32) -> chrono::DateTime<Utc> {
    let naive = day.and_hms_opt(h, m, 0).expect("a valid time of day");
    settings
        .timezone()
        .from_local_datetime(&naive)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&naive), |t| t.with_timezone(&Utc))
}

/// Runs one job as of `now` (the rehearsal's clock), printed like the daemon's own runs.
async fn rehearse(ctx: &JobContext, job: JobKind, now: chrono::DateTime<Utc>) -> RunReport {
    let started = std::time::Instant::now();
    let result = jobs::run(ctx, job, Trigger::Once, now).await;
    let (outcome, detail) = match result {
        Ok(Done::Ok(v)) => (Outcome::Ok, v.to_string()),
        Ok(Done::Skipped(why)) => (Outcome::Skipped, why),
        Err(e) => (Outcome::Failed, format!("{e:#}")),
    };
    let r = RunReport {
        job,
        trigger: Trigger::Once,
        outcome,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    };
    crate::daemon::print_report(&r);
    r
}

/// Cancels the queued messages this demo rendered (created since `since`) with throw-away
/// secrets: `retentiond run` would otherwise send links and codes nobody can verify.
pub async fn cancel_throwaway(db: &Db, since: i64) -> anyhow::Result<u64> {
    let mut tx = db.begin().await?;
    let n = tx
        .execute(
            "UPDATE outbox SET status = 'dead', last_error = $1, updated_at = $2 WHERE status = 'queued' AND created_at >= $3",
            &[Val::Text(Some(CANCELLED_REASON.into())), Val::Int(Some(Utc::now().timestamp())), Val::Int(Some(since))],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// `retentiond demo`: generate, import, rehearse in the past with simulated responses, run
/// today's cycle, write the report. `env_secrets` are the configured secrets (the process
/// environment, for the command).
pub async fn run(
    settings: &Settings,
    config: &Path,
    opts: &DemoOptions,
    env_secrets: Secrets,
) -> anyhow::Result<DemoSummary> {
    let started_at = Utc::now().timestamp();
    let clock = std::time::Instant::now();
    let tz = settings.timezone();
    let today = crate::scheduler::schedule::local_day(Utc::now(), tz);
    // Every attribution window of the rehearsed day must have closed by now (a day's margin
    // for send hours).
    let m = &settings.measurement;
    let longest = m
        .window_days_email
        .max(m.window_days_sms)
        .max(m.window_days_whatsapp);
    let rehearsal_days = opts.rehearsal_days.max(longest + 2);
    let day = today - chrono::Days::new(u64::from(rehearsal_days));
    println!(
        "== 1/5 generate a synthetic brand ({} customers, seed {}, history up to today)",
        opts.customers, opts.seed
    );
    crate::cli::gen_brand(opts.customers, opts.seed, &opts.out, None, 3)?;
    println!(
        "== 2/5 import it into {}",
        crate::config::redact_url(&settings.database.url)
    );
    let code = crate::cli::import(settings, opts.out.clone(), false, None, false).await?;
    if code != ExitCode::SUCCESS {
        return Ok(DemoSummary::stopped(code));
    }

    let mut secrets = env_secrets;
    let (no_unsubscribe, no_code) = (secrets.unsubscribe.is_none(), secrets.code.is_none());
    crate::cli::demo_secrets(&mut secrets, &settings.campaigns);
    let set = match crate::daemon::campaigns_and_secrets(settings, config, &secrets) {
        Ok(s) => s,
        Err(code) => return Ok(DemoSummary::stopped(code)),
    };
    // A throw-away code secret only matters when a campaign puts codes in its messages.
    let throwaway =
        no_unsubscribe || (no_code && set.campaigns.iter().any(|c| c.needs_code_secret()));
    let db = connect(settings).await?;
    let campaigns = SharedCampaigns::new(set);
    let ctx = JobContext {
        db: db.clone(),
        settings: settings.clone(),
        campaigns: campaigns.clone(),
        secrets: secrets.clone(),
    };
    let daemon = Daemon::new(ctx.clone());
    if !daemon.try_lead().await {
        anyhow::bail!(
            "another retentiond daemon leads on this database: stop it before running the demo"
        );
    }

    println!(
        "== 3/5 rehearse {day} ({} days ago) as the daemon would have run it, on the history up to that day: train, score, campaigns",
        rehearsal_days
    );
    let mut failed = false;
    for (job, h, m) in [
        (JobKind::Retrain, 5, 0),
        (JobKind::Score, 5, 0),
        (JobKind::Campaigns, 12, 0),
    ] {
        let r = rehearse(&ctx, job, local_at(settings, day, h, m)).await;
        if r.outcome == Outcome::Failed {
            failed = true;
            eprintln!(
                "error: the rehearsal's {} failed: {}",
                job.as_str(),
                r.detail
            );
            break;
        }
    }
    let mut summary = DemoSummary::stopped(ExitCode::SUCCESS);
    summary.rehearsal_day = Some(day);
    if !failed {
        println!(
            "== 4/5 simulate the {} days since: that outreach is sent in simulation and the customers respond (known effect)",
            rehearsal_days
        );
        let sends = crate::simulate::send_in_simulation(&db, day).await?;
        let sim = crate::simulate::simulate_responses(
            &db,
            &settings.measurement,
            &campaigns.current(),
            day,
            opts.effect,
            opts.seed,
        )
        .await?;
        println!(
            "   {:<12} {sends} message(s) of {day} marked sent (provider \"{}\": nothing left the machine); {} simulated order(s) in their attribution windows; known effect {:+.1} pts for messaged customers",
            "simulate",
            crate::simulate::SIMULATED_PROVIDER,
            sim.orders,
            sim.true_effect * 100.0
        );
        summary.simulated_sends = sends;
        summary.simulated = Some(sim);
    }

    println!(
        "== 5/5 today's cycle, as `retentiond run` does at start: score, campaigns, dispatch, report"
    );
    let dispatcher = match build_dispatcher(settings, config, &db, secrets, Some(campaigns.clone()))
    {
        Ok(d) => d,
        Err(e) => {
            return Ok(DemoSummary {
                code: config_failure(&e),
                ..summary
            });
        }
    };
    if !failed {
        for r in daemon.catch_up(Trigger::Once).await {
            failed |= r.outcome == Outcome::Failed || crate::daemon::failed_campaigns(&r) > 0;
            crate::daemon::print_report(&r);
        }
    }
    daemon.resign().await;
    let stats = dispatcher.drain().await?;
    if throwaway {
        summary.cancelled = cancel_throwaway(&db, started_at).await?;
    }
    let waiting = crate::delivery::dispatcher::queue_depth(&db).await?;
    // The report as `retentiond report` writes it (it attributes conversions first).
    let report = crate::report::write(
        &db,
        settings,
        &campaigns.current(),
        &opts.report,
        None,
        None,
    )
    .await;
    db.close().await;
    println!(
        "   {:<12} sent {} message(s), {} suppressed, {} failed",
        "dispatch",
        stats.sent,
        stats.suppressed,
        stats.failed + stats.dead
    );
    if summary.cancelled > 0 {
        println!(
            "   {:<12} {} message(s) waiting for their send hours were signed with throw-away secrets: cancelled (status dead), so `retentiond run` never sends links that cannot verify; set {} and {} before the demo to keep them queued",
            "cancel",
            summary.cancelled,
            settings.campaigns.unsubscribe_secret_env,
            settings.campaigns.code_secret_env
        );
    } else if waiting > 0 {
        println!(
            "   {:<12} {waiting} message(s) wait in the outbox for their customers' send hours (`retentiond run` sends them)",
            "queue"
        );
    }
    if [
        &settings.delivery.email,
        &settings.delivery.sms,
        &settings.delivery.whatsapp,
    ]
    .iter()
    .any(|p| p.as_str() == "file")
    {
        println!(
            "messages written to {}/ (one JSON file per message, named after its campaign, customer and day)",
            settings.delivery.file.dir.display()
        );
    }
    match report {
        Ok(line) => {
            println!(
                "{line}\nopen {} in a browser (the daemon serves the same page at http://{}/)",
                opts.report.display(),
                settings.http.bind
            );
            println!(
                "the report's uplift for {day} measures simulated responses (labelled \"Simulation\" on the page); the known effect was {:+.1} pts",
                summary
                    .simulated
                    .as_ref()
                    .map_or(0.0, |s| s.true_effect * 100.0)
            );
            summary.report_line = Some(line);
        }
        Err(e) => {
            failed = true;
            eprintln!("error: the report failed: {e:#}");
        }
    }
    println!(
        "demo finished in {:.0} s; today's steps are recorded in the job ledger: `retentiond status`",
        clock.elapsed().as_secs_f64()
    );
    summary.code = if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    Ok(summary)
}
