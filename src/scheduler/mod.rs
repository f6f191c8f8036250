//! The daemon's scheduler: weekly retraining, daily scoring and campaigns, housekeeping.
//!
//! - **When:** [`schedule`] turns cron expressions into instants in the brand's time zone;
//!   each firing is a one-shot tokio-cron-scheduler job that schedules the next one, so local
//!   times survive daylight-saving changes.
//! - **Once per slot:** [`ledger`] claims (job, slot) with an insert that only one replica can
//!   win, records start, end, outcome, error chain and stats, and heartbeats long runs.
//! - **One leader:** replicas compete for a lease; only its holder runs scheduled jobs. Every
//!   replica dispatches. When the leader dies, another takes the lease once it expires and
//!   catches up.
//! - **Catch-up:** on becoming leader (at start, too), whatever the data shows is missing runs
//!   at once, in order: train if there is no champion (or the last weekly slot was missed),
//!   score if today's scores are missing, campaigns if they have not run today, housekeeping if
//!   its last slot was missed.
//! - **Dependencies:** jobs run one at a time; campaigns skip until the day's scores exist and
//!   run right after the scoring that was holding them; a failed training keeps the champion.
//!   A failed job is recorded and logged with its error chain and retried at its next slot.

pub mod jobs;
pub mod ledger;
pub mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_cron_scheduler::{Job, JobScheduler};

pub use jobs::JobContext;
pub use ledger::{Outcome, Trigger};
pub use schedule::{HousekeepingSettings, JobKind, SchedulerSettings, Schedules};

use crate::db::Db;

/// The lease that makes a replica the leader.
pub const LEADER_LEASE: &str = "scheduler";

/// One replica's scheduler.
pub struct Daemon {
    ctx: JobContext,
    schedules: Schedules,
    id: String,
    lease_seconds: i64,
    leader: AtomicBool,
    /// Jobs run one at a time: training and scoring each use most of the memory budget.
    job_lock: tokio::sync::Mutex<()>,
}

/// What a job run ended as, for `--once`, the demo and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub job: JobKind,
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub detail: String,
    pub seconds: f64,
}

impl Daemon {
    pub fn new(ctx: JobContext) -> Arc<Daemon> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let id = format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let schedules = ctx.settings.scheduler.schedules();
        let lease_seconds = ctx.settings.scheduler.leader_lease_seconds as i64;
        Arc::new(Daemon {
            ctx,
            schedules,
            id,
            lease_seconds,
            leader: AtomicBool::new(false),
            job_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn db(&self) -> &Db {
        &self.ctx.db
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    fn tz(&self) -> chrono_tz::Tz {
        self.ctx.settings.timezone()
    }

    /// Takes or renews the leader lease; returns whether this replica now leads.
    pub async fn try_lead(&self) -> bool {
        let held =
            match ledger::acquire_lease(&self.ctx.db, LEADER_LEASE, &self.id, self.lease_seconds)
                .await
            {
                Ok(h) => h,
                Err(e) => {
                    // Unsure whether the renewal landed: stop leading; the lease expires on its own.
                    tracing::warn!(error = %e, "cannot renew the leader lease");
                    false
                }
            };
        let was = self.leader.swap(held, Ordering::SeqCst);
        match (was, held) {
            (false, true) => {
                tracing::info!(replica = %self.id, "this replica is now the leader: it runs the scheduled jobs")
            }
            (true, false) => {
                tracing::warn!(replica = %self.id, "leadership lost: another replica runs the scheduled jobs")
            }
            _ => {}
        }
        held
    }

    /// Renews the lease every third of its length until `shutdown`; catches up each time this
    /// replica becomes leader. Releases the lease on the way out.
    pub async fn lead(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let period = Duration::from_millis((self.lease_seconds as u64 * 1000 / 3).max(500));
        loop {
            let was = self.is_leader();
            if self.try_lead().await && !was {
                let me = self.clone();
                tokio::spawn(async move {
                    me.catch_up(Trigger::CatchUp).await;
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
    }

    /// Gives up leadership (clean shutdown) so another replica takes over at once.
    pub async fn resign(&self) {
        if self.leader.swap(false, Ordering::SeqCst)
            && let Err(e) = ledger::release_lease(&self.ctx.db, LEADER_LEASE, &self.id).await
        {
            tracing::warn!(error = %e, "cannot release the leader lease; it expires on its own");
        }
    }

    /// Adds each enabled job's next firing to `sched`.
    pub async fn schedule_all(self: &Arc<Self>, sched: &JobScheduler) -> anyhow::Result<()> {
        let now = Utc::now();
        for job in JobKind::ALL {
            self.schedule_next(sched, job, now).await?;
        }
        Ok(())
    }

    /// Schedules `job`'s first firing after `after` as a one-shot job; when it fires it
    /// schedules the following one, then runs. The instant is recomputed on the brand's wall
    /// clock every time (daylight saving).
    fn schedule_next<'a>(
        self: &'a Arc<Self>,
        sched: &'a JobScheduler,
        job: JobKind,
        after: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
        // Boxed with an explicit `Send`: the firing schedules the next one, a recursion the
        // compiler cannot prove `Send` through on its own.
        Box::pin(async move {
            let Some(next) = self
                .schedules
                .get(job)
                .and_then(|c| c.next_after(after, self.tz()))
            else {
                return Ok(());
            };
            let delay = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            let me = self.clone();
            let one_shot = Job::new_one_shot_async(delay, move |_id, sched| {
                let me = me.clone();
                Box::pin(async move {
                    tokio::spawn(async move {
                        if let Err(e) = me.schedule_next(&sched, job, next).await {
                            tracing::error!(job = %job, error = %e, "cannot schedule the next firing");
                        }
                        me.fire(job, next).await;
                    });
                })
            })?;
            sched.add(one_shot).await?;
            tracing::debug!(job = %job, at = %next, "next firing");
            Ok(())
        })
    }

    /// A slot fired: the leader runs it (unless a later slot has already come: then it is
    /// recorded as skipped), then lets campaigns that were waiting for the scores run.
    pub async fn fire(&self, job: JobKind, slot: DateTime<Utc>) {
        if !self.is_leader() {
            tracing::debug!(job = %job, slot = %slot, "not the leader: slot left to the leader");
            return;
        }
        let _one_at_a_time = self.job_lock.lock().await;
        let overtaken = self
            .schedules
            .get(job)
            .and_then(|c| c.next_after(slot, self.tz()))
            .is_some_and(|n| n <= Utc::now());
        if overtaken {
            if let Some(c) = self.claim(job, slot.timestamp(), Trigger::Schedule).await {
                let msg = "a later slot came while this one waited for another job";
                self.finish(&c, job, Outcome::Skipped, Some(msg), None, 0.0)
                    .await;
            }
            return;
        }
        let report = self.execute(job, slot.timestamp(), Trigger::Schedule).await;
        if job == JobKind::Score
            && report.as_ref().is_some_and(|r| r.outcome == Outcome::Ok)
            && self.campaigns_waiting().await
        {
            self.execute(
                JobKind::Campaigns,
                Utc::now().timestamp(),
                Trigger::AfterScore,
            )
            .await;
        }
    }

    /// Today's campaigns slot has passed without a run (it skipped for lack of scores).
    async fn campaigns_waiting(&self) -> bool {
        let now = Utc::now();
        let tz = self.tz();
        let Some(last) = self
            .schedules
            .campaigns
            .as_ref()
            .and_then(|c| c.latest_at_or_before(now, tz))
        else {
            return false;
        };
        let today = schedule::local_day(now, tz).to_string();
        schedule::local_day(last, tz).to_string() == today
            && !ledger::done_for_day(&self.ctx.db, "campaigns", &today)
                .await
                .unwrap_or(true)
    }

    async fn claim(&self, job: JobKind, slot: i64, trigger: Trigger) -> Option<ledger::Claim> {
        let day = schedule::local_day(Utc::now(), self.tz()).to_string();
        match ledger::claim(&self.ctx.db, job.as_str(), slot, trigger, &self.id, &day).await {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                tracing::info!(job = %job, slot, "slot already claimed by another run");
                None
            }
            Err(e) => {
                tracing::error!(job = %job, error = %e, "cannot claim the job slot; it is not run");
                None
            }
        }
    }

    async fn finish(
        &self,
        c: &ledger::Claim,
        job: JobKind,
        outcome: Outcome,
        error: Option<&str>,
        stats: Option<&serde_json::Value>,
        seconds: f64,
    ) {
        metrics::counter!("retentiond_job_runs_total", "job" => job.as_str(), "outcome" => outcome.as_str()).increment(1);
        metrics::histogram!("retentiond_job_duration_seconds", "job" => job.as_str())
            .record(seconds);
        if let Err(e) = ledger::finish(&self.ctx.db, c, outcome, error, stats).await {
            tracing::error!(job = %job, error = %e, "cannot record the job's outcome");
        }
    }

    /// Claims (job, slot), runs the body with a heartbeat, and records the outcome. The caller
    /// holds `job_lock`. `None` when the slot was already claimed.
    async fn execute(&self, job: JobKind, slot: i64, trigger: Trigger) -> Option<RunReport> {
        let claim = self.claim(job, slot, trigger).await?;
        let span = tracing::info_span!("job", job = %job, trigger = trigger.as_str(), slot);
        tracing::info!(parent: &span, "job started");
        let beat = {
            let db = self.ctx.db.clone();
            let c = claim.clone();
            let period = Duration::from_millis((self.lease_seconds as u64 * 1000 / 3).max(500));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    if let Err(e) = ledger::heartbeat(&db, &c).await {
                        tracing::warn!(error = %e, "job heartbeat failed");
                    }
                }
            })
        };
        let started = std::time::Instant::now();
        let result = tracing::Instrument::instrument(
            jobs::run(&self.ctx, job, trigger, Utc::now()),
            span.clone(),
        )
        .await;
        beat.abort();
        let seconds = started.elapsed().as_secs_f64();
        let (outcome, detail, stats, error) = match result {
            Ok(jobs::Done::Ok(stats)) => (Outcome::Ok, stats.to_string(), Some(stats), None),
            Ok(jobs::Done::Skipped(why)) => (Outcome::Skipped, why.clone(), None, Some(why)),
            Err(e) => {
                let chain = format!("{e:#}");
                (Outcome::Failed, chain.clone(), None, Some(chain))
            }
        };
        match outcome {
            Outcome::Failed => {
                tracing::error!(parent: &span, error.chain = %detail, seconds, "job failed; it runs again at its next slot")
            }
            Outcome::Skipped => tracing::info!(parent: &span, reason = %detail, "job skipped"),
            _ => tracing::info!(parent: &span, seconds, stats = %detail, "job finished"),
        }
        self.finish(
            &claim,
            job,
            outcome,
            error.as_deref(),
            stats.as_ref(),
            seconds,
        )
        .await;
        Some(RunReport {
            job,
            trigger,
            outcome,
            detail,
            seconds,
        })
    }

    /// Runs, in order, every job the data shows is due: a model if there is no champion or
    /// the latest weekly slot passed since the newest one was trained; today's scores; today's
    /// campaigns; housekeeping if its latest slot has no run. Returns what ran.
    pub async fn catch_up(&self, trigger: Trigger) -> Vec<RunReport> {
        let _one_at_a_time = self.job_lock.lock().await;
        let mut done = Vec::new();
        match ledger::abandon_stale(&self.ctx.db, self.lease_seconds * 2).await {
            Ok(n) if n > 0 => {
                tracing::warn!(runs = n, "marked runs of stopped replicas as abandoned")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check for abandoned runs"),
        }
        for job in JobKind::ALL {
            if !self.is_leader() && trigger != Trigger::Once {
                break;
            }
            match self.due(job).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    tracing::info!(job = %job, reason = %reason, "catching up");
                    if let Some(r) = self.execute(job, Utc::now().timestamp(), trigger).await {
                        done.push(r);
                    }
                }
                Err(e) => {
                    tracing::error!(job = %job, error = %format!("{e:#}"), "cannot tell whether the job is due")
                }
            }
        }
        done
    }

    /// Why `job` should run now, or `None`.
    async fn due(&self, job: JobKind) -> anyhow::Result<Option<String>> {
        let db = &self.ctx.db;
        let now = Utc::now();
        let tz = self.tz();
        let today = schedule::local_day(now, tz).to_string();
        let latest_slot = self
            .schedules
            .get(job)
            .and_then(|c| c.latest_at_or_before(now, tz));
        Ok(match job {
            JobKind::Retrain => {
                let versions = crate::models::registry::list(db).await?;
                let has_champion = versions.iter().any(|v| v.status == "champion");
                let newest = versions.iter().map(|v| v.trained_at).max();
                if !has_champion {
                    Some("there is no champion model".into())
                } else {
                    match (latest_slot, newest) {
                        (Some(slot), Some(t)) if t < slot.timestamp() => Some(format!(
                            "the weekly slot of {slot} passed without a training"
                        )),
                        _ => None,
                    }
                }
            }
            JobKind::Score => {
                let champion = crate::with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM model_versions WHERE status = 'champion'").fetch_one(p).await)?;
                (champion > 0 && !jobs::scores_exist(db, &today).await?)
                    .then(|| format!("no scores for {today}"))
            }
            JobKind::Campaigns => {
                let ran = crate::with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM campaign_runs WHERE day = $1").bind(&today).fetch_one(p).await)?;
                (jobs::scores_exist(db, &today).await?
                    && ran == 0
                    && !ledger::done_for_day(db, "campaigns", &today).await?)
                    .then(|| format!("campaigns have not run for {today}"))
            }
            JobKind::Housekeeping => {
                let Some(slot) = latest_slot else {
                    return Ok(None);
                };
                let last: Option<i64> = crate::with_pool!(db, p => sqlx::query_scalar("SELECT MAX(started_at) FROM job_runs WHERE job = 'housekeeping'").fetch_one(p).await)?;
                last.is_none_or(|t| t < slot.timestamp())
                    .then(|| format!("its slot of {slot} was missed"))
            }
        })
    }

    /// Shutdown: waits up to `limit` for a running job; past it, the job's ledger row is
    /// marked abandoned (every job writes in one transaction, so nothing is half-written).
    pub async fn stop(&self, limit: Duration) {
        match tokio::time::timeout(limit, self.job_lock.lock()).await {
            Ok(_idle) => {}
            Err(_) => {
                tracing::warn!(
                    "shutdown timeout: the running job is abandoned (its transaction is rolled back)"
                );
                let mut tx = match self.ctx.db.begin().await {
                    Ok(tx) => tx,
                    Err(e) => {
                        return tracing::warn!(error = %e, "cannot mark the running job abandoned");
                    }
                };
                let r = tx
                    .execute(
                        "UPDATE job_runs SET outcome = 'abandoned', finished_at = $1, error = 'interrupted by shutdown' WHERE runner = $2 AND outcome = 'running'",
                        &[crate::db::Val::Int(Some(Utc::now().timestamp())), crate::db::Val::Text(Some(self.id.clone()))],
                    )
                    .await;
                if r.is_ok() {
                    let _ = tx.commit().await;
                }
            }
        }
        self.resign().await;
    }

    /// The next firing of each job, for `status`.
    pub fn next_firings(&self, after: DateTime<Utc>) -> Vec<(JobKind, Option<DateTime<Utc>>)> {
        JobKind::ALL
            .iter()
            .map(|&j| {
                (
                    j,
                    self.schedules
                        .get(j)
                        .and_then(|c| c.next_after(after, self.tz())),
                )
            })
            .collect()
    }
}
