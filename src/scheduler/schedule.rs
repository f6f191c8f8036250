//! When each job fires: cron expressions in the brand's time zone.
//!
//! Expressions have six fields, seconds first (`sec min hour day-of-month month day-of-week`),
//! the grammar tokio-cron-scheduler uses. They are parsed with `croner`, which gives readable
//! errors and computes each next firing in the brand's time zone from the local wall clock:
//! tokio-cron-scheduler would fix the zone's UTC offset when a job is created, so a weekly
//! 23:00 job would drift an hour across a daylight-saving change. The daemon therefore asks
//! this module for the next instant after every firing and schedules a one-shot job for it.
//! Day-of-month and day-of-week follow Vixie cron (either matches when both are restricted).

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

use crate::config::IssueSink;

/// The scheduled jobs. Dispatch is not here: it runs continuously on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Retrain,
    Score,
    Campaigns,
    Housekeeping,
}

impl JobKind {
    pub const ALL: [JobKind; 4] = [
        JobKind::Retrain,
        JobKind::Score,
        JobKind::Campaigns,
        JobKind::Housekeeping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Retrain => "retrain",
            JobKind::Score => "score",
            JobKind::Campaigns => "campaigns",
            JobKind::Housekeeping => "housekeeping",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[scheduler]`: the jobs' cron expressions and how replicas share the work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerSettings {
    /// Weekly retraining. Default "0 0 23 * * SUN" (Sunday 23:00 in the brand's time zone).
    /// An empty string disables a job.
    pub retrain: String,
    /// Daily scoring. Default "0 0 5 * * *" (05:00).
    pub score: String,
    /// Daily campaign selection; it waits for the day's scores. Default "0 30 5 * * *".
    pub campaigns: String,
    /// Pruning of old scores, attempts and ledger rows. Default "0 0 3 * * *".
    pub housekeeping: String,
    /// How long the leader's lease lasts; another replica takes over this long after the
    /// leader stops renewing it. A running job's heartbeat uses the same period. Default 30.
    pub leader_lease_seconds: u64,
    /// SIGTERM/SIGINT: how long to let a running job, in-flight sends and HTTP requests finish
    /// before exiting anyway. Default 30.
    pub shutdown_timeout_seconds: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            retrain: "0 0 23 * * SUN".into(),
            score: "0 0 5 * * *".into(),
            campaigns: "0 30 5 * * *".into(),
            housekeeping: "0 0 3 * * *".into(),
            leader_lease_seconds: 30,
            shutdown_timeout_seconds: 30,
        }
    }
}

/// `[housekeeping]`: what the housekeeping job keeps. The outbox, suppressions, campaign runs
/// and model versions are never pruned: measurement needs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HousekeepingSettings {
    /// Days of daily scores kept (at least `model.horizon_days`, so monitoring can compare
    /// past promises with what happened). Default 120.
    pub keep_scores_days: u32,
    /// Days of delivery attempts kept. Default 180.
    pub keep_attempts_days: u32,
    /// Days of received provider webhook events kept. Default 90.
    pub keep_webhook_events_days: u32,
    /// Days of job ledger rows kept. Default 400.
    pub keep_job_runs_days: u32,
}

impl Default for HousekeepingSettings {
    fn default() -> Self {
        Self {
            keep_scores_days: 120,
            keep_attempts_days: 180,
            keep_webhook_events_days: 90,
            keep_job_runs_days: 400,
        }
    }
}

/// A validated cron expression.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expr: String,
    cron: Cron,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CronProblem(pub String);

/// Parses a six-field expression (seconds first).
pub fn parse_cron(expr: &str) -> Result<CronSchedule, CronProblem> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(CronProblem(format!(
            "{expr:?} has {fields} field(s); retentiond uses 6, seconds first: `sec min hour day-of-month month day-of-week`"
        )));
    }
    let parser = CronParser::builder().seconds(Seconds::Required).build();
    let cron = parser
        .parse(expr)
        .map_err(|e| CronProblem(format!("{expr:?} is not a valid cron expression: {e}")))?;
    Ok(CronSchedule {
        expr: expr.to_string(),
        cron,
    })
}

impl CronSchedule {
    /// The first firing strictly after `after`, computed on the wall clock of `tz` (so 23:00
    /// stays 23:00 local across daylight-saving changes; a time skipped by a spring-forward
    /// gap fires at the first valid instant after it).
    pub fn next_after(&self, after: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The latest firing at or before `at`.
    pub fn latest_at_or_before(
        &self,
        at: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// The parsed schedules, `None` for disabled jobs.
#[derive(Debug, Clone, Default)]
pub struct Schedules {
    pub retrain: Option<CronSchedule>,
    pub score: Option<CronSchedule>,
    pub campaigns: Option<CronSchedule>,
    pub housekeeping: Option<CronSchedule>,
}

impl Schedules {
    pub fn get(&self, job: JobKind) -> Option<&CronSchedule> {
        match job {
            JobKind::Retrain => self.retrain.as_ref(),
            JobKind::Score => self.score.as_ref(),
            JobKind::Campaigns => self.campaigns.as_ref(),
            JobKind::Housekeeping => self.housekeeping.as_ref(),
        }
    }
}

impl SchedulerSettings {
    fn expr(&self, job: JobKind) -> &str {
        match job {
            JobKind::Retrain => &self.retrain,
            JobKind::Score => &self.score,
            JobKind::Campaigns => &self.campaigns,
            JobKind::Housekeeping => &self.housekeeping,
        }
    }

    /// Every expression parsed; problems are reported against `scheduler.<job>`.
    pub fn validate(&self, sink: &mut IssueSink<'_>) {
        for job in JobKind::ALL {
            let expr = self.expr(job).trim();
            if !expr.is_empty()
                && let Err(e) = parse_cron(expr)
            {
                sink.push(format!("scheduler.{job}"), e.0, "use six fields, seconds first, e.g. \"0 0 23 * * SUN\" (Sundays 23:00) or \"0 30 5 * * *\" (daily 05:30); \"\" disables the job");
            }
        }
        if !(2..=3600).contains(&self.leader_lease_seconds) {
            sink.push(
                "scheduler.leader_lease_seconds",
                format!("{} is out of range", self.leader_lease_seconds),
                "use 2..=3600 (default 30)",
            );
        }
        if !(1..=3600).contains(&self.shutdown_timeout_seconds) {
            sink.push(
                "scheduler.shutdown_timeout_seconds",
                format!("{} is out of range", self.shutdown_timeout_seconds),
                "use 1..=3600 (default 30)",
            );
        }
    }

    /// The parsed schedules (after [`Self::validate`] passed; an invalid one is left out).
    pub fn schedules(&self) -> Schedules {
        let p = |job| {
            let e = self.expr(job).trim();
            if e.is_empty() {
                None
            } else {
                parse_cron(e).ok()
            }
        };
        Schedules {
            retrain: p(JobKind::Retrain),
            score: p(JobKind::Score),
            campaigns: p(JobKind::Campaigns),
            housekeeping: p(JobKind::Housekeeping),
        }
    }
}

/// Midnight-based helpers used by the jobs: the brand-local day of an instant.
pub fn local_day(at: DateTime<Utc>, tz: chrono_tz::Tz) -> chrono::NaiveDate {
    tz.from_utc_datetime(&at.naive_utc()).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_shipped_expression_parses() {
        let d = SchedulerSettings::default();
        for job in JobKind::ALL {
            parse_cron(d.expr(job)).unwrap_or_else(|e| panic!("default {job}: {e}"));
        }
        // And the shipped config file's, read as the daemon reads it.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/retentiond.toml"
        ))
        .unwrap();
        let mut issues = Vec::new();
        let s =
            crate::config::Settings::from_toml_str(&text, "config/retentiond.toml", &mut issues);
        s.validate("config/retentiond.toml", &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        let parsed = s.scheduler.schedules();
        for job in JobKind::ALL {
            assert!(
                parsed.get(job).is_some(),
                "{job} is scheduled in the shipped config"
            );
        }
    }

    #[test]
    fn invalid_expressions_are_rejected_clearly() {
        for (expr, needle) in [
            ("0 23 * * SUN", "has 5 field(s)"),
            ("0 0 25 * * *", "not a valid cron expression"),
            ("0 0 23 * * FUNDAY", "not a valid cron expression"),
            ("60 0 23 * * *", "not a valid cron expression"),
            ("every sunday", "has 2 field(s)"),
            ("0 0 23 * * SUN extra", "has 7 field(s)"),
        ] {
            let err = parse_cron(expr).expect_err(expr).0;
            assert!(err.contains(needle), "{expr}: {err}");
            assert!(err.contains(expr), "the message quotes the value: {err}");
        }
        let mut issues = Vec::new();
        let mut sink = IssueSink {
            file: "r.toml".into(),
            issues: &mut issues,
        };
        let s = SchedulerSettings {
            score: "0 5 * * *".into(),
            leader_lease_seconds: 0,
            ..Default::default()
        };
        s.validate(&mut sink);
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["scheduler.score", "scheduler.leader_lease_seconds"],
            "{issues:?}"
        );
        assert!(issues[0].fix.contains("six fields"), "{:?}", issues[0]);
        // Empty disables.
        let s = SchedulerSettings {
            housekeeping: String::new(),
            ..Default::default()
        };
        assert!(s.schedules().housekeeping.is_none());
    }

    #[test]
    fn local_times_hold_across_daylight_saving_changes() {
        let tz: chrono_tz::Tz = "Europe/London".parse().unwrap();
        let weekly = parse_cron("0 0 23 * * SUN").unwrap();
        // London: BST ends 2026-10-25 (02:00 BST -> 01:00 GMT).
        let a = weekly.next_after(utc("2026-10-15T00:00:00Z"), tz).unwrap();
        assert_eq!(a, utc("2026-10-18T22:00:00Z"), "23:00 BST");
        let b = weekly.next_after(a, tz).unwrap();
        assert_eq!(
            b,
            utc("2026-10-25T23:00:00Z"),
            "23:00 GMT after the change, not 22:00"
        );
        // Spring forward 2026-03-29: 01:00 GMT -> 02:00 BST.
        let daily = parse_cron("0 0 9 * * *").unwrap();
        let c = daily.next_after(utc("2026-03-28T12:00:00Z"), tz).unwrap();
        assert_eq!(c, utc("2026-03-29T08:00:00Z"), "09:00 BST");
        // A time inside the gap fires once, right after it.
        let gap = parse_cron("0 30 1 * * *").unwrap();
        let d = gap.next_after(utc("2026-03-28T12:00:00Z"), tz).unwrap();
        assert_eq!(local_day(d, tz).to_string(), "2026-03-29");
        assert!(
            d >= utc("2026-03-29T01:00:00Z") && d <= utc("2026-03-29T02:00:00Z"),
            "{d}"
        );
        let e = gap.next_after(d, tz).unwrap();
        assert_eq!(e, utc("2026-03-30T00:30:00Z"));
        // India has no DST: a fixed +05:30.
        let ist: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
        let f = parse_cron("0 30 5 * * *")
            .unwrap()
            .next_after(utc("2026-11-25T00:00:00Z"), ist)
            .unwrap();
        assert_eq!(f, utc("2026-11-26T00:00:00Z"));
        assert_eq!(
            parse_cron("0 30 5 * * *")
                .unwrap()
                .latest_at_or_before(utc("2026-11-26T00:00:00Z"), ist)
                .unwrap(),
            f
        );
    }

    #[test]
    fn fall_back_runs_an_ambiguous_time_once() {
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        // 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens twice on the wall clock.
        let c = parse_cron("0 30 1 * * *").unwrap();
        let first = c.next_after(utc("2026-11-01T00:00:00Z"), tz).unwrap();
        let second = c.next_after(first, tz).unwrap();
        assert_eq!(local_day(first, tz).to_string(), "2026-11-01");
        assert_eq!(
            local_day(second, tz).to_string(),
            "2026-11-02",
            "not twice on 2026-11-01: {first} {second}"
        );
    }
}
