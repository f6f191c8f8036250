//! The retry schedule: a pure function of the configured delays, the attempt number, the
//! provider's `Retry-After` and a random draw for jitter, so it is tested without a clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::IssueSink;

/// `[dispatch]` in the main config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DispatchSettings {
    /// Seconds a claimed message stays with its worker; past it the claim has expired (the
    /// worker died) and recovery decides what happened. Default 120.
    pub lease_seconds: u64,
    /// Attempts per channel before a message is dead. Default 6.
    pub max_attempts: u32,
    /// Delay before attempt 2, 3, … in seconds; the last value repeats. Default
    /// [30, 120, 600, 1800, 7200].
    pub retry_schedule_seconds: Vec<u64>,
    /// Each delay is stretched or shrunk by up to this share at random, so retries from a burst
    /// do not hit the provider together. Default 0.2.
    pub jitter: f64,
    /// Messages claimed per round. Default 200.
    pub claim_batch: u32,
    /// Pause between rounds when nothing is due, in milliseconds. Default 1000.
    pub idle_poll_ms: u64,
    /// On shutdown, how long in-flight sends may take before the worker stops. Default 30.
    pub shutdown_timeout_seconds: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            lease_seconds: 120,
            max_attempts: 6,
            retry_schedule_seconds: vec![30, 120, 600, 1800, 7200],
            jitter: 0.2,
            claim_batch: 200,
            idle_poll_ms: 1000,
            shutdown_timeout_seconds: 30,
        }
    }
}

impl DispatchSettings {
    pub fn validate(&self, sink: &mut IssueSink<'_>) {
        if !(5..=86_400).contains(&self.lease_seconds) {
            sink.push(
                "dispatch.lease_seconds",
                format!("{} is out of range", self.lease_seconds),
                "use 5..=86400 (default 120); it must exceed the slowest provider timeout",
            );
        }
        if !(1..=50).contains(&self.max_attempts) {
            sink.push(
                "dispatch.max_attempts",
                format!("{} is out of range", self.max_attempts),
                "use 1..=50 (default 6)",
            );
        }
        if self.retry_schedule_seconds.is_empty()
            || self
                .retry_schedule_seconds
                .iter()
                .any(|&s| s == 0 || s > 7 * 86_400)
        {
            sink.push(
                "dispatch.retry_schedule_seconds",
                "needs at least one delay, each 1..=604800 seconds",
                "use e.g. [30, 120, 600, 1800, 7200]",
            );
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            sink.push(
                "dispatch.jitter",
                format!("{} is not a share", self.jitter),
                "use 0..=1 (default 0.2)",
            );
        }
        if !(1..=5000).contains(&self.claim_batch) {
            sink.push(
                "dispatch.claim_batch",
                format!("{} is out of range", self.claim_batch),
                "use 1..=5000 (default 200)",
            );
        }
        if !(10..=60_000).contains(&self.idle_poll_ms) {
            sink.push(
                "dispatch.idle_poll_ms",
                format!("{} is out of range", self.idle_poll_ms),
                "use 10..=60000 (default 1000)",
            );
        }
        if !(1..=3600).contains(&self.shutdown_timeout_seconds) {
            sink.push(
                "dispatch.shutdown_timeout_seconds",
                format!("{} is out of range", self.shutdown_timeout_seconds),
                "use 1..=3600 (default 30)",
            );
        }
    }
}

/// What to do after a transient failure of attempt `attempt` (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    RetryIn(Duration),
    GiveUp,
}

/// The delay before the next attempt: the schedule's entry for this attempt (the last one
/// repeats) with jitter from `draw` ∈ [0, 1), but never sooner than the provider's
/// `Retry-After`. After `max_attempts` the message is dead.
pub fn next_retry(
    s: &DispatchSettings,
    attempt: u32,
    retry_after: Option<Duration>,
    draw: f64,
) -> RetryDecision {
    if attempt >= s.max_attempts {
        return RetryDecision::GiveUp;
    }
    let schedule = &s.retry_schedule_seconds;
    let base = schedule
        .get(attempt.saturating_sub(1) as usize)
        .or(schedule.last())
        .copied()
        .unwrap_or(60) as f64;
    let factor = 1.0 + s.jitter * (2.0 * draw.clamp(0.0, 1.0) - 1.0);
    let delay = Duration::from_secs_f64((base * factor).max(1.0));
    RetryDecision::RetryIn(retry_after.map_or(delay, |ra| delay.max(ra)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_followed_then_repeats_then_gives_up() {
        let s = DispatchSettings {
            jitter: 0.0,
            max_attempts: 7,
            ..DispatchSettings::default()
        };
        let d = |a| match next_retry(&s, a, None, 0.5) {
            RetryDecision::RetryIn(d) => d.as_secs(),
            RetryDecision::GiveUp => 0,
        };
        assert_eq!(
            [d(1), d(2), d(3), d(4), d(5), d(6)],
            [30, 120, 600, 1800, 7200, 7200]
        );
        assert_eq!(next_retry(&s, 7, None, 0.5), RetryDecision::GiveUp);
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let s = DispatchSettings::default();
        for draw in [0.0, 0.25, 0.5, 0.999] {
            let RetryDecision::RetryIn(d) = next_retry(&s, 1, None, draw) else {
                panic!()
            };
            assert!((24.0..=36.0).contains(&d.as_secs_f64()), "{d:?}");
        }
        let RetryDecision::RetryIn(lo) = next_retry(&s, 1, None, 0.0) else {
            panic!()
        };
        let RetryDecision::RetryIn(hi) = next_retry(&s, 1, None, 0.999) else {
            panic!()
        };
        assert!(hi > lo);
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let s = DispatchSettings {
            jitter: 0.0,
            ..DispatchSettings::default()
        };
        assert_eq!(
            next_retry(&s, 1, Some(Duration::from_secs(90)), 0.5),
            RetryDecision::RetryIn(Duration::from_secs(90))
        );
        assert_eq!(
            next_retry(&s, 1, Some(Duration::from_secs(5)), 0.5),
            RetryDecision::RetryIn(Duration::from_secs(30))
        );
    }
}
