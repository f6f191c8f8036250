//! The job ledger (`job_runs`) and the leader lease (`leases`), on both backends.
//!
//! A run is claimed by inserting its (job, scheduled instant) row: `ON CONFLICT DO NOTHING`
//! makes the insert the lock, so a firing runs at most once whatever the number of replicas.
//! The leader lease is one row renewed by its holder; another replica may take it only after
//! it expired. Both use each replica's clock (keep replicas' clocks in sync, as NTP does).

use serde::Serialize;

use crate::db::{Db, Val};

/// How a run came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its cron slot fired.
    Schedule,
    /// At start or on becoming leader: the data showed it was missing.
    CatchUp,
    /// Campaigns run as soon as the day's scoring finished after their slot had passed.
    AfterScore,
    /// `retentiond run --once`.
    Once,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::AfterScore => "after_score",
            Trigger::Once => "once",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Nothing to do (e.g. campaigns before the day's scores exist); the reason is in `error`.
    Skipped,
    Failed,
    /// Its runner stopped heartbeating (killed) or shut down before it finished.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// One claimed run.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: String,
    pub scheduled_for: i64,
    pub runner: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims (job, scheduled_for) for `runner`; `None` when another run has it already.
pub async fn claim(
    db: &Db,
    job: &str,
    scheduled_for: i64,
    trigger: Trigger,
    runner: &str,
    day: &str,
) -> sqlx::Result<Option<Claim>> {
    let t = now();
    let mut tx = db.begin().await?;
    let n = tx
        .execute(
            "INSERT INTO job_runs (job, scheduled_for, trigger_kind, runner, day, started_at, heartbeat_at, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, 'running') ON CONFLICT (job, scheduled_for) DO NOTHING",
            &[Val::Text(Some(job.into())), Val::Int(Some(scheduled_for)), Val::Text(Some(trigger.as_str().into())), Val::Text(Some(runner.into())), Val::Text(Some(day.into())), Val::Int(Some(t))],
        )
        .await?;
    tx.commit().await?;
    Ok((n == 1).then(|| Claim {
        job: job.into(),
        scheduled_for,
        runner: runner.into(),
    }))
}

/// Records how a claimed run ended.
pub async fn finish(
    db: &Db,
    c: &Claim,
    outcome: Outcome,
    error: Option<&str>,
    stats: Option<&serde_json::Value>,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    tx.execute(
        "UPDATE job_runs SET finished_at = $1, heartbeat_at = $1, outcome = $2, error = $3, stats = $4 \
         WHERE job = $5 AND scheduled_for = $6 AND runner = $7 AND outcome = 'running'",
        &[
            Val::Int(Some(now())),
            Val::Text(Some(outcome.as_str().into())),
            Val::Text(error.map(str::to_string)),
            Val::Text(stats.map(|s| s.to_string())),
            Val::Text(Some(c.job.clone())),
            Val::Int(Some(c.scheduled_for)),
            Val::Text(Some(c.runner.clone())),
        ],
    )
    .await?;
    tx.commit().await
}

/// Renews a running claim's heartbeat.
pub async fn heartbeat(db: &Db, c: &Claim) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    tx.execute(
        "UPDATE job_runs SET heartbeat_at = $1 WHERE job = $2 AND scheduled_for = $3 AND runner = $4 AND outcome = 'running'",
        &[Val::Int(Some(now())), Val::Text(Some(c.job.clone())), Val::Int(Some(c.scheduled_for)), Val::Text(Some(c.runner.clone()))],
    )
    .await?;
    tx.commit().await
}

/// Marks runs whose runner stopped heartbeating more than `stale_seconds` ago as abandoned.
pub async fn abandon_stale(db: &Db, stale_seconds: i64) -> sqlx::Result<u64> {
    let t = now();
    let mut tx = db.begin().await?;
    let n = tx
        .execute(
            "UPDATE job_runs SET outcome = 'abandoned', finished_at = $1, error = 'its runner stopped (killed or lost) before finishing' \
             WHERE outcome = 'running' AND heartbeat_at < $2",
            &[Val::Int(Some(t)), Val::Int(Some(t - stale_seconds))],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Takes or renews the named lease for `holder` until now + `seconds`. True when held.
pub async fn acquire_lease(db: &Db, name: &str, holder: &str, seconds: i64) -> sqlx::Result<bool> {
    let t = now();
    let mut tx = db.begin().await?;
    let n = tx
        .execute(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET \
               acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END, \
               holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < excluded.acquired_at",
            &[Val::Text(Some(name.into())), Val::Text(Some(holder.into())), Val::Int(Some(t)), Val::Int(Some(t + seconds))],
        )
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Gives the lease up (clean shutdown), so another replica takes over at once.
pub async fn release_lease(db: &Db, name: &str, holder: &str) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    tx.execute(
        "DELETE FROM leases WHERE name = $1 AND holder = $2",
        &[Val::Text(Some(name.into())), Val::Text(Some(holder.into()))],
    )
    .await?;
    tx.commit().await
}

/// The current holder of a lease and when it expires.
pub async fn lease_holder(db: &Db, name: &str) -> sqlx::Result<Option<(String, i64)>> {
    crate::with_pool!(db, p => {
        sqlx::query_as::<_, (String, i64)>("SELECT holder, expires_at FROM leases WHERE name = $1").bind(name).fetch_optional(p).await
    })
}

/// A ledger row, for `status` and tests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Run {
    pub job: String,
    pub scheduled_for: i64,
    pub trigger: String,
    pub runner: String,
    pub day: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
    pub stats: Option<String>,
}

type RunRow = (
    String,
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
);

fn to_run(r: RunRow) -> Run {
    Run {
        job: r.0,
        scheduled_for: r.1,
        trigger: r.2,
        runner: r.3,
        day: r.4,
        started_at: r.5,
        finished_at: r.6,
        outcome: r.7,
        error: r.8,
        stats: r.9,
    }
}

const RUN_COLUMNS: &str =
    "job, scheduled_for, trigger_kind, runner, day, started_at, finished_at, outcome, error, stats";

/// The latest run (by start) of each job.
pub async fn latest_runs(db: &Db) -> sqlx::Result<Vec<Run>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM job_runs r WHERE started_at = (SELECT MAX(started_at) FROM job_runs x WHERE x.job = r.job) ORDER BY job, scheduled_for"
    );
    let rows: Vec<RunRow> =
        crate::with_pool!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await)?;
    let mut out: Vec<Run> = Vec::new();
    for r in rows.into_iter().map(to_run) {
        // Two runs started in the same second: keep the later slot.
        out.retain(|x| x.job != r.job);
        out.push(r);
    }
    Ok(out)
}

/// Every run, oldest first (tests, `status --json`).
pub async fn all_runs(db: &Db) -> sqlx::Result<Vec<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM job_runs ORDER BY started_at, job, scheduled_for");
    let rows: Vec<RunRow> =
        crate::with_pool!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await)?;
    Ok(rows.into_iter().map(to_run).collect())
}

/// True when `job` finished `ok` for brand-local `day`.
pub async fn done_for_day(db: &Db, job: &str, day: &str) -> sqlx::Result<bool> {
    let n: i64 = crate::with_pool!(db, p => {
        sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE job = $1 AND day = $2 AND outcome = 'ok'").bind(job).bind(day).fetch_one(p).await
    })?;
    Ok(n > 0)
}

/// True when a run of `job` is in progress (any replica).
pub async fn running(db: &Db, job: &str) -> sqlx::Result<bool> {
    let n: i64 = crate::with_pool!(db, p => {
        sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE job = $1 AND outcome = 'running'").bind(job).fetch_one(p).await
    })?;
    Ok(n > 0)
}
