//! The dispatcher drains the outbox. The database is the queue:
//!
//! 1. **claim** a batch of due `queued` rows by setting `status = 'sending'` and a lease (one
//!    `UPDATE … RETURNING`; `FOR UPDATE SKIP LOCKED` on PostgreSQL so replicas never claim the
//!    same row; SQLite has a single writer);
//! 2. check suppression and consent again (the customer may have unsubscribed since selection);
//! 3. each message waits for its provider's concurrency slot and rate permit, then its attempt
//!    is recorded `started` (committed) **right before** its provider call — no transaction is
//!    held open across calls;
//! 4. its outcome is recorded as soon as the call returns, and only then is the slot freed.
//!
//! The `started` and outcome records of all messages in flight go through one recorder that
//! commits whatever has arrived while its previous commit ran (a group commit), so nothing
//! waits behind a slow request and commits stay few at high throughput.
//!
//! A worker killed anywhere leaves rows `sending` with a lease that expires. **Recovery** then
//! knows: no `started` attempt for the current try → never sent, queue again; a `started`
//! attempt without outcome → the crash fell between the provider call and the record: resend
//! with the same idempotency key if the provider honours one, otherwise mark `unknown` (left for
//! review, counted, never resent). So no message is sent twice and none is lost, and since a
//! slot is held from `started` to the committed outcome, one crash leaves at most the providers'
//! `concurrency` messages in doubt; messages still waiting for a slot or a rate permit are
//! simply queued again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot, watch};

use super::providers::{Outgoing, Provider, Providers, SendError};
use super::retry::{DispatchSettings, RetryDecision, next_retry};
use crate::campaigns::Channel;
use crate::config::Settings;
use crate::db::{Backend, Db, Val};
use crate::scan::{Bind, scan_with};
use crate::selection::offer::{Offer, Rendered, Secrets};

/// Re-renders a message for a fallback channel after a permanent failure.
pub struct Fallback {
    pub settings: Settings,
    pub campaigns: crate::campaigns::SharedCampaigns,
    pub secrets: Secrets,
}

/// What one round (or a whole drain) did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DispatchStats {
    pub claimed: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead: u64,
    pub suppressed: u64,
    pub expired: u64,
    pub fell_back: u64,
    pub released: u64,
    pub recovered_requeued: u64,
    pub recovered_unknown: u64,
}

impl DispatchStats {
    fn add(&mut self, o: &DispatchStats) {
        self.claimed += o.claimed;
        self.sent += o.sent;
        self.retried += o.retried;
        self.failed += o.failed;
        self.dead += o.dead;
        self.suppressed += o.suppressed;
        self.expired += o.expired;
        self.fell_back += o.fell_back;
        self.released += o.released;
        self.recovered_requeued += o.recovered_requeued;
        self.recovered_unknown += o.recovered_unknown;
    }
}

#[derive(Debug, Clone)]
struct Claimed {
    message_id: i64,
    idempotency_key: String,
    campaign: String,
    customer_id: String,
    channel: String,
    message: Option<String>,
    attempts: i64,
    fallback_channels: String,
    offer: String,
}

/// What one provider call took, for its `delivery_attempts` row.
struct Attempt {
    outcome: &'static str,
    latency_ms: i64,
    status_code: Option<i64>,
    error: Option<String>,
}

struct Pace {
    limiter: Option<DefaultDirectRateLimiter>,
    permits: Semaphore,
}

pub struct Dispatcher {
    db: Db,
    providers: Arc<Providers>,
    settings: DispatchSettings,
    owner: String,
    pace: HashMap<String, Pace>,
    fallback: Option<Fallback>,
    /// Messages claimed per round: `claim_batch`, or fewer when rate limits could not send
    /// them within half a lease (the rest would wait with an expiring claim).
    claim_limit: u32,
}

enum Outcome {
    Sent {
        provider: String,
        provider_message_id: Option<String>,
    },
    Failed {
        provider: Option<String>,
        error: SendError,
    },
    Released,
}

/// What became of one claimed message in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Sent,
    Retried,
    Failed,
    Dead,
    FellBack,
    Released,
    /// Its lease expired and was recovered elsewhere before it was sent.
    LeaseLost,
}

/// What a message reports to the round's recorder.
enum Record<'a> {
    /// Its request is about to be handed to `provider`: answered with whether the lease is
    /// still this worker's (then the attempt is committed as `started`).
    Start {
        m: &'a Claimed,
        provider: String,
        reply: oneshot::Sender<bool>,
    },
    /// The outcome, with the provider call's attempt row when there was a call.
    Finish {
        m: &'a Claimed,
        outcome: Outcome,
        attempt: Option<Attempt>,
        reply: oneshot::Sender<Label>,
    },
}

enum Reply {
    Start(oneshot::Sender<bool>, bool),
    Finish(oneshot::Sender<Label>, Label),
}

fn recorder_gone() -> anyhow::Error {
    anyhow::anyhow!("the dispatch round's recorder stopped (a database error ends the round)")
}

/// `claim_batch`, capped where every provider is rate-limited at what they can send in half a
/// lease (at least one slot each).
fn claim_limit(
    settings: &DispatchSettings,
    limits: impl Iterator<Item = super::providers::Limits>,
) -> u32 {
    let half_lease = settings.lease_seconds / 2;
    let mut cap: u64 = 0;
    for l in limits {
        if l.rate_per_second == 0 {
            return settings.claim_batch;
        }
        cap += (u64::from(l.rate_per_second) * half_lease).max(u64::from(l.concurrency.max(1)));
    }
    if cap == 0 {
        settings.claim_batch
    } else {
        settings
            .claim_batch
            .min(cap.min(u64::from(u32::MAX)) as u32)
    }
}

/// Sends the outcome to the recorder and waits until it is committed.
async fn finish<'a>(
    records: &mpsc::UnboundedSender<Record<'a>>,
    m: &'a Claimed,
    outcome: Outcome,
    attempt: Option<Attempt>,
) -> anyhow::Result<Label> {
    let (reply, done) = oneshot::channel();
    records
        .send(Record::Finish {
            m,
            outcome,
            attempt,
            reply,
        })
        .map_err(|_| recorder_gone())?;
    done.await.map_err(|_| recorder_gone())
}

/// The provider's concurrency slot, then its rate permit.
async fn ready(pace: Option<&Pace>) -> Option<SemaphorePermit<'_>> {
    let pace = pace?;
    let permit = pace.permits.acquire().await.ok();
    if let Some(l) = &pace.limiter {
        l.until_ready().await;
    }
    permit
}

/// Resolves once `shutdown` turns true (never, if its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Dispatcher {
    pub fn new(
        db: Db,
        providers: Arc<Providers>,
        settings: DispatchSettings,
        fallback: Option<Fallback>,
    ) -> Dispatcher {
        let mut pace = HashMap::new();
        for e in providers.entries() {
            let l = e.limits;
            let limiter = std::num::NonZeroU32::new(l.rate_per_second)
                .map(|r| RateLimiter::direct(Quota::per_second(r)));
            pace.insert(
                e.name().to_string(),
                Pace {
                    limiter,
                    permits: Semaphore::new(l.concurrency.max(1) as usize),
                },
            );
        }
        let owner = format!("{}-{:08x}", std::process::id(), rand::rng().random::<u32>());
        let claim_limit = claim_limit(&settings, providers.entries().iter().map(|e| e.limits));
        Dispatcher {
            db,
            providers,
            settings,
            owner,
            pace,
            fallback,
            claim_limit,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Rounds until nothing is due (then returns): `dispatch --once`, the daemon's catch-up,
    /// and tests that run the queue to completion instead of sleeping.
    pub async fn drain(&self) -> anyhow::Result<DispatchStats> {
        let (_tx, rx) = watch::channel(false);
        let mut total = self.recover().await?;
        loop {
            let s = self.round(&rx).await?;
            let idle = s.claimed == 0;
            total.add(&s);
            if idle {
                return Ok(total);
            }
        }
    }

    /// Runs until `shutdown` turns true: stops claiming, lets in-flight sends finish, releases
    /// claimed messages it has not started.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<DispatchStats> {
        let mut total = DispatchStats::default();
        let mut last_recovery = Instant::now() - Duration::from_secs(3600);
        while !*shutdown.borrow() {
            if last_recovery.elapsed() >= Duration::from_secs(self.settings.lease_seconds.min(60)) {
                match self.recover().await {
                    Ok(s) => total.add(&s),
                    Err(e) => tracing::error!(error = %e, "recovery of expired leases failed"),
                }
                last_recovery = Instant::now();
            }
            let s = match self.round(&shutdown).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "dispatch round failed; retrying");
                    DispatchStats::default()
                }
            };
            let idle = s.claimed == 0;
            total.add(&s);
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(self.settings.idle_poll_ms)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        Ok(total)
    }

    /// Settles rows whose lease expired (their worker died).
    #[tracing::instrument(skip(self))]
    pub async fn recover(&self) -> anyhow::Result<DispatchStats> {
        let now = chrono::Utc::now().timestamp();
        let mut stale: Vec<(i64, String, i64, bool)> = Vec::new();
        let sql = "SELECT o.message_id, o.channel, o.attempts, \
                   CASE WHEN EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.message_id = o.message_id AND a.attempt = o.attempts) THEN 1 ELSE 0 END \
                   FROM outbox o WHERE o.status = 'sending' AND o.lease_until < $1";
        scan_with(&self.db, sql, &[Bind::Int(now)], |r| {
            stale.push((
                r.int(0)?.unwrap_or_default(),
                r.text(1)?.unwrap_or_default().to_owned(),
                r.int(2)?.unwrap_or_default(),
                r.int(3)? == Some(1),
            ));
            Ok(())
        })
        .await?;
        let mut stats = DispatchStats::default();
        for (id, channel, attempts, started) in stale {
            let idempotent = Channel::parse(&channel)
                .and_then(|c| self.providers.for_channel(c))
                .is_some_and(|p| p.honours_idempotency_key());
            let mut tx = self.db.begin().await?;
            let (status, attempts, note) = if !started {
                (
                    "queued",
                    attempts - 1,
                    "lease expired before the send started: queued again",
                )
            } else if idempotent {
                (
                    "queued",
                    attempts,
                    "lease expired during the send: resent with the same idempotency key",
                )
            } else {
                (
                    "unknown",
                    attempts,
                    "lease expired during the send; the provider may have accepted it and has no idempotency key: not resent, left for review",
                )
            };
            let n = tx
                .execute(
                    "UPDATE outbox SET status = $1, attempts = $2, lease_owner = NULL, lease_until = NULL, last_error = $3, updated_at = $4 \
                     WHERE message_id = $5 AND status = 'sending' AND lease_until < $4",
                    &[Val::Text(Some(status.into())), Val::Int(Some(attempts.max(0))), Val::Text(Some(note.into())), Val::Int(Some(now)), Val::Int(Some(id))],
                )
                .await?;
            if started {
                tx.execute(
                    "UPDATE delivery_attempts SET outcome = 'unknown', error = $1 WHERE message_id = $2 AND attempt = $3 AND outcome = 'started'",
                    &[Val::Text(Some(note.into())), Val::Int(Some(id)), Val::Int(Some(attempts))],
                )
                .await?;
            }
            tx.commit().await?;
            if n == 1 {
                if status == "unknown" {
                    stats.recovered_unknown += 1;
                    metrics::counter!("retentiond_delivery_unknown_total").increment(1);
                } else {
                    stats.recovered_requeued += 1;
                }
                tracing::warn!(message_id = id, status, "recovered an expired claim");
            }
        }
        Ok(stats)
    }

    /// One round: expire what is too late, claim a batch, check it, send it, record it.
    pub async fn round(&self, shutdown: &watch::Receiver<bool>) -> anyhow::Result<DispatchStats> {
        let mut stats = DispatchStats::default();
        let now = chrono::Utc::now().timestamp();
        stats.expired = self.expire(now).await?;
        let claimed = self.claim(now).await?;
        stats.claimed = claimed.len() as u64;
        if claimed.is_empty() {
            return Ok(stats);
        }
        let blocked = self.blocked(&claimed).await?;
        let mut to_send = Vec::with_capacity(claimed.len());
        for m in claimed {
            if blocked.contains(&(m.customer_id.clone(), m.channel.clone())) {
                self.finish_suppressed(&m).await?;
                stats.suppressed += 1;
            } else {
                to_send.push(m);
            }
        }
        // Every message goes its own way (slot, rate permit, `started`, send, outcome) while one
        // recorder writes what they report in group commits: a message is recorded `started`
        // only once its request is about to leave, and its outcome as soon as it returns, so a
        // crash leaves at most the requests in flight in doubt, never a message that waited.
        let (records, inbox) = mpsc::unbounded_channel();
        let work = futures_util::future::join_all(
            to_send
                .iter()
                .map(|m| self.deliver(m, records.clone(), shutdown.clone())),
        );
        drop(records);
        let (labels, recorded) = tokio::join!(work, self.recorder(inbox));
        recorded?;
        for label in labels {
            match label? {
                Label::Sent => stats.sent += 1,
                Label::Retried => stats.retried += 1,
                Label::Failed => stats.failed += 1,
                Label::Dead => stats.dead += 1,
                Label::FellBack => stats.fell_back += 1,
                Label::Released => stats.released += 1,
                Label::LeaseLost => {}
            }
        }
        Ok(stats)
    }

    /// One message: wait for the provider's concurrency slot and rate permit (a stop meanwhile
    /// releases it unsent), record `started`, send, record the outcome. The slot is held until
    /// the outcome is committed, so at most `concurrency` messages per provider are ever in doubt.
    async fn deliver<'a>(
        &'a self,
        m: &'a Claimed,
        records: mpsc::UnboundedSender<Record<'a>>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Label> {
        let (provider, rendered) = match self.prepare(m) {
            Ok(p) => p,
            Err(error) => {
                return finish(
                    &records,
                    m,
                    Outcome::Failed {
                        provider: None,
                        error,
                    },
                    None,
                )
                .await;
            }
        };
        let pace = self.pace.get(provider.name());
        let permit = tokio::select! {
            biased;
            _ = stopped(shutdown) => return finish(&records, m, Outcome::Released, None).await,
            permit = ready(pace) => permit,
        };
        let (reply, held) = oneshot::channel();
        records
            .send(Record::Start {
                m,
                provider: provider.name().to_string(),
                reply,
            })
            .map_err(|_| recorder_gone())?;
        if !held.await.map_err(|_| recorder_gone())? {
            // A batch slower than `lease_seconds` was recovered elsewhere: not ours to send.
            tracing::warn!(
                message_id = m.message_id,
                "lease lost before sending; left to its new owner"
            );
            return Ok(Label::LeaseLost);
        }
        let (outcome, attempt) = self.send_prepared(m, provider, &rendered).await;
        let label = finish(&records, m, outcome, Some(attempt)).await;
        drop(permit);
        label
    }

    /// Writes what the messages report, batching whatever arrived while the previous commit
    /// ran (a group commit), and answers each only after its record is committed.
    async fn recorder(&self, mut inbox: mpsc::UnboundedReceiver<Record<'_>>) -> anyhow::Result<()> {
        let mut batch = Vec::new();
        while inbox.recv_many(&mut batch, 256).await > 0 {
            // Let the messages that are ready report too, so a commit carries more records.
            tokio::task::yield_now().await;
            while batch.len() < 256 {
                match inbox.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            // On an error the batch's replies are dropped: their senders fail with the round.
            let replies = self.write_records(std::mem::take(&mut batch)).await?;
            for reply in replies {
                match reply {
                    Reply::Start(tx, held) => {
                        let _ = tx.send(held);
                    }
                    Reply::Finish(tx, label) => {
                        let _ = tx.send(label);
                    }
                }
            }
        }
        Ok(())
    }

    /// One transaction for a batch of records; the replies to send once it is committed.
    async fn write_records<'a>(&self, batch: Vec<Record<'a>>) -> anyhow::Result<Vec<Reply>> {
        let now = chrono::Utc::now().timestamp();
        let mut tx = self.db.begin().await?;
        let mut replies = Vec::with_capacity(batch.len());
        let (starts, finishes): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|r| matches!(r, Record::Start { .. }));
        let starts: Vec<(&Claimed, String, oneshot::Sender<bool>)> = starts
            .into_iter()
            .filter_map(|r| match r {
                Record::Start { m, provider, reply } => Some((m, provider, reply)),
                Record::Finish { .. } => None,
            })
            .collect();
        if !starts.is_empty() {
            // The same statement renews the leases; a row whose lease this worker lost (then
            // recovered elsewhere) is not sent.
            let params: Vec<String> = (3..3 + starts.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE outbox SET lease_until = $1 WHERE lease_owner = $2 AND status = 'sending' AND message_id IN ({}) \
                 RETURNING CAST(message_id AS TEXT)",
                params.join(", ")
            );
            let mut binds = vec![
                Val::Int(Some(now + self.settings.lease_seconds as i64)),
                Val::Text(Some(self.owner.clone())),
            ];
            binds.extend(starts.iter().map(|s| Val::Int(Some(s.0.message_id))));
            let held: HashSet<String> = tx.fetch_strings(&sql, &binds).await?.into_iter().collect();
            let rows: Vec<Vec<Val>> = starts
                .iter()
                .filter(|(m, _, _)| held.contains(&m.message_id.to_string()))
                .map(|(m, provider, _)| {
                    vec![
                        Val::Int(Some(m.message_id)),
                        Val::Int(Some(m.attempts)),
                        Val::Text(Some(provider.clone())),
                        Val::Text(Some(m.channel.clone())),
                        Val::Int(Some(now)),
                        Val::Text(Some("started".into())),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                tx.insert_rows(
                    "delivery_attempts",
                    &[
                        "message_id",
                        "attempt",
                        "provider",
                        "channel",
                        "started_at",
                        "outcome",
                    ],
                    &rows,
                )
                .await?;
            }
            for (m, _, reply) in starts {
                replies.push(Reply::Start(
                    reply,
                    held.contains(&m.message_id.to_string()),
                ));
            }
        }
        for r in finishes {
            let Record::Finish {
                m,
                outcome,
                attempt,
                reply,
            } = r
            else {
                continue;
            };
            if let Some(a) = attempt {
                tx.execute(
                    "UPDATE delivery_attempts SET outcome = $1, latency_ms = $2, status_code = $3, error = $4 WHERE message_id = $5 AND attempt = $6 AND outcome = 'started'",
                    &[
                        Val::Text(Some(a.outcome.into())),
                        Val::Int(Some(a.latency_ms)),
                        Val::Int(a.status_code),
                        Val::Text(a.error.clone()),
                        Val::Int(Some(m.message_id)),
                        Val::Int(Some(m.attempts)),
                    ],
                )
                .await?;
            }
            let label = self.record(&mut tx, m, outcome).await?;
            replies.push(Reply::Finish(reply, label));
        }
        tx.commit().await?;
        Ok(replies)
    }

    /// Queued messages past the end of their send slot are dead: a day-late offer is worse
    /// than none.
    async fn expire(&self, now: i64) -> anyhow::Result<u64> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                "UPDATE outbox SET status = 'dead', last_error = 'expired: not sent before the end of its send slot', updated_at = $1 \
                 WHERE status = 'queued' AND expires_at < $1",
                &[Val::Int(Some(now))],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn claim(&self, now: i64) -> anyhow::Result<Vec<Claimed>> {
        let lock = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
             WHERE message_id IN (SELECT message_id FROM outbox WHERE status = 'queued' AND not_before <= $3 \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $3) ORDER BY not_before, message_id LIMIT $4{lock}) \
             RETURNING message_id, idempotency_key, campaign, customer_id, channel, message, attempts, fallback_channels, offer"
        );
        let lease_until = now + self.settings.lease_seconds as i64;
        let mut out = Vec::new();
        let binds = [
            Bind::Text(&self.owner),
            Bind::Int(lease_until),
            Bind::Int(now),
            Bind::Int(i64::from(self.claim_limit)),
        ];
        // A write: on SQLite through a transaction so the claim is one atomic statement.
        crate::with_pool!(&self.db, p => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for b in binds {
                q = match b {
                    Bind::Int(i) => q.bind(i),
                    Bind::Text(t) => q.bind(t),
                };
            }
            let rows = q.fetch_all(p).await?;
            for r in rows {
                use sqlx::Row;
                out.push(Claimed {
                    message_id: r.try_get(0)?,
                    idempotency_key: r.try_get(1)?,
                    campaign: r.try_get(2)?,
                    customer_id: r.try_get(3)?,
                    channel: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                    message: r.try_get(5)?,
                    attempts: r.try_get(6)?,
                    fallback_channels: r.try_get(7)?,
                    offer: r.try_get(8)?,
                });
            }
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(out)
    }

    /// (customer, channel) pairs that may not be messaged now: suppressed, or consent withdrawn.
    async fn blocked(&self, batch: &[Claimed]) -> anyhow::Result<HashSet<(String, String)>> {
        let mut ids: Vec<&str> = batch.iter().map(|m| m.customer_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut blocked = HashSet::new();
        for chunk in ids.chunks(500) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let list = params.join(", ");
            let binds: Vec<Bind<'_>> = chunk.iter().map(|c| Bind::Text(c)).collect();
            // Address suppressions (`suppressions add/import`) count for the customers holding the address.
            let sql = format!(
                "SELECT customer_id, channel FROM ({}) e WHERE customer_id IN ({list})",
                crate::suppressions::EFFECTIVE_SQL
            );
            scan_with(&self.db, &sql, &binds, |r| {
                let c = r.text(0)?.unwrap_or_default().to_owned();
                match r.text(1)? {
                    Some(ch) => {
                        blocked.insert((c, ch.to_owned()));
                    }
                    None => {
                        for ch in crate::campaigns::CHANNELS {
                            blocked.insert((c.clone(), ch.to_string()));
                        }
                    }
                }
                Ok(())
            })
            .await?;
            let sql = format!(
                "SELECT customer_id, CASE WHEN email_opt_in THEN 1 ELSE 0 END, CASE WHEN sms_opt_in THEN 1 ELSE 0 END, \
                 CASE WHEN whatsapp_opt_in THEN 1 ELSE 0 END FROM customers WHERE customer_id IN ({list})"
            );
            scan_with(&self.db, &sql, &binds, |r| {
                let c = r.text(0)?.unwrap_or_default();
                for (i, ch) in ["email", "sms", "whatsapp"].iter().enumerate() {
                    if r.int(1 + i)? != Some(1) {
                        blocked.insert((c.to_owned(), ch.to_string()));
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(blocked)
    }

    async fn finish_suppressed(&self, m: &Claimed) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "UPDATE outbox SET status = 'suppressed', lease_owner = NULL, lease_until = NULL, \
             last_error = 'suppressed or consent withdrawn since selection', updated_at = $1 WHERE message_id = $2 AND lease_owner = $3",
            &[Val::Int(Some(chrono::Utc::now().timestamp())), Val::Int(Some(m.message_id)), Val::Text(Some(self.owner.clone()))],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The provider and the stored message, or why it cannot be sent at all.
    fn prepare(&self, m: &Claimed) -> Result<(Arc<dyn Provider>, Rendered), SendError> {
        let channel = Channel::parse(&m.channel)
            .ok_or_else(|| SendError::permanent(format!("unknown channel {:?}", m.channel)))?;
        let provider = self.providers.for_channel(channel).ok_or_else(|| {
            SendError::permanent(format!("no provider configured for {}", channel.as_str()))
        })?;
        let rendered: Rendered = match m.message.as_deref().map(serde_json::from_str) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                return Err(SendError::permanent(format!(
                    "stored message unreadable: {e}"
                )));
            }
            None => return Err(SendError::permanent("no message to send")),
        };
        Ok((provider, rendered))
    }

    /// One provider call (its pacing is done by the caller, before `started` is recorded).
    #[tracing::instrument(skip(self, m, provider, rendered), fields(message_id = m.message_id, channel = %m.channel))]
    async fn send_prepared(
        &self,
        m: &Claimed,
        provider: Arc<dyn Provider>,
        rendered: &Rendered,
    ) -> (Outcome, Attempt) {
        let name = provider.name().to_string();
        let out = Outgoing {
            message_id: m.message_id,
            idempotency_key: &m.idempotency_key,
            campaign: &m.campaign,
            customer_id: &m.customer_id,
            rendered,
            test: false,
        };
        let t0 = Instant::now();
        let result = provider.send(&out).await;
        let latency = t0.elapsed();
        metrics::histogram!("retentiond_delivery_latency_seconds", "provider" => name.clone())
            .record(latency.as_secs_f64());
        let label = match &result {
            Ok(_) => "accepted",
            Err(e) if e.is_permanent() => "permanent",
            Err(_) => "transient",
        };
        metrics::counter!("retentiond_delivery_attempts_total", "provider" => name.clone(), "outcome" => label).increment(1);
        let attempt = Attempt {
            outcome: label,
            latency_ms: latency.as_millis() as i64,
            status_code: result
                .as_ref()
                .err()
                .and_then(|e| e.status())
                .map(i64::from),
            error: result.as_ref().err().map(|e| e.reason().to_string()),
        };
        let outcome = match result {
            Ok(a) => Outcome::Sent {
                provider: name,
                provider_message_id: a.provider_message_id,
            },
            Err(error) => Outcome::Failed {
                provider: Some(name),
                error,
            },
        };
        (outcome, attempt)
    }

    /// Writes the outcome in `tx`, only while this worker still holds the lease.
    async fn record(
        &self,
        tx: &mut crate::db::Tx,
        m: &Claimed,
        outcome: Outcome,
    ) -> anyhow::Result<Label> {
        let now = chrono::Utc::now().timestamp();
        let owner = Val::Text(Some(self.owner.clone()));
        let id = Val::Int(Some(m.message_id));
        let label = match outcome {
            Outcome::Released => {
                tx.execute(
                    "UPDATE outbox SET status = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_until = NULL, updated_at = $1 \
                     WHERE message_id = $2 AND lease_owner = $3 AND status = 'sending'",
                    &[Val::Int(Some(now)), id, owner],
                )
                .await?;
                Label::Released
            }
            Outcome::Sent {
                provider,
                provider_message_id,
            } => {
                tx.execute(
                    "UPDATE outbox SET status = 'sent', provider = $1, provider_message_id = $2, sent_at = $3, last_error = NULL, \
                     lease_owner = NULL, lease_until = NULL, updated_at = $3 WHERE message_id = $4 AND lease_owner = $5 AND status = 'sending'",
                    &[Val::Text(Some(provider)), Val::Text(provider_message_id), Val::Int(Some(now)), id, owner],
                )
                .await?;
                Label::Sent
            }
            Outcome::Failed { provider, error } if !error.is_permanent() => {
                let draw: f64 = rand::rng().random();
                match next_retry(
                    &self.settings,
                    m.attempts.max(0) as u32,
                    error.retry_after(),
                    draw,
                ) {
                    RetryDecision::RetryIn(d) => {
                        tx.execute(
                            "UPDATE outbox SET status = 'queued', provider = $1, next_attempt_at = $2, last_error = $3, lease_owner = NULL, \
                             lease_until = NULL, updated_at = $4 WHERE message_id = $5 AND lease_owner = $6 AND status = 'sending'",
                            &[Val::Text(provider), Val::Int(Some(now + d.as_secs().max(1) as i64)), Val::Text(Some(error.reason().to_string())), Val::Int(Some(now)), id, owner],
                        )
                        .await?;
                        Label::Retried
                    }
                    RetryDecision::GiveUp => {
                        tx.execute(
                            "UPDATE outbox SET status = 'dead', provider = $1, last_error = $2, lease_owner = NULL, lease_until = NULL, updated_at = $3 \
                             WHERE message_id = $4 AND lease_owner = $5 AND status = 'sending'",
                            &[Val::Text(provider), Val::Text(Some(format!("gave up after {} attempts: {}", m.attempts, error.reason()))), Val::Int(Some(now)), id, owner],
                        )
                        .await?;
                        Label::Dead
                    }
                }
            }
            Outcome::Failed { provider, error } => {
                if error.is_bad_address() {
                    // The address itself is invalid: never use it again.
                    tx.execute(
                        "INSERT INTO suppressions (customer_id, channel, address, reason, source, created_at) \
                         SELECT customer_id, channel, recipient, 'invalid_address', $1, $2 FROM outbox WHERE message_id = $3",
                        &[Val::Text(Some(provider.clone().unwrap_or_else(|| "dispatcher".into()))), Val::Int(Some(now)), id.clone()],
                    )
                    .await?;
                }
                match self.fallback_for(m, &error).await {
                    Some((channel, rest, recipient, message)) => {
                        tx.execute(
                            "UPDATE outbox SET status = 'queued', channel = $1, fallback_channels = $2, recipient = $3, message = $4, attempts = 0, \
                             next_attempt_at = NULL, provider = NULL, last_error = $5, lease_owner = NULL, lease_until = NULL, updated_at = $6 \
                             WHERE message_id = $7 AND lease_owner = $8 AND status = 'sending'",
                            &[
                                Val::Text(Some(channel)),
                                Val::Text(Some(rest)),
                                Val::Text(Some(recipient)),
                                Val::Text(Some(message)),
                                Val::Text(Some(format!("{}: {} (fell back)", m.channel, error.reason()))),
                                Val::Int(Some(now)),
                                id,
                                owner,
                            ],
                        )
                        .await?;
                        Label::FellBack
                    }
                    None => {
                        tx.execute(
                            "UPDATE outbox SET status = 'failed', provider = $1, last_error = $2, lease_owner = NULL, lease_until = NULL, updated_at = $3 \
                             WHERE message_id = $4 AND lease_owner = $5 AND status = 'sending'",
                            &[Val::Text(provider), Val::Text(Some(error.reason().to_string())), Val::Int(Some(now)), id, owner],
                        )
                        .await?;
                        Label::Failed
                    }
                }
            }
        };
        Ok(label)
    }

    /// The next channel after a permanent failure: re-rendered for it, if the campaign and the
    /// customer allow. Returns (channel, remaining fallbacks JSON, recipient, message JSON).
    async fn fallback_for(
        &self,
        m: &Claimed,
        error: &SendError,
    ) -> Option<(String, String, String, String)> {
        let fb = self.fallback.as_ref()?;
        let rest: Vec<String> = serde_json::from_str(&m.fallback_channels).ok()?;
        let (next, rest) = rest.split_first()?;
        let channel = Channel::parse(next)?;
        self.providers.for_channel(channel)?;
        let set = fb.campaigns.current();
        let campaign = set.get(&m.campaign)?;
        let offer: Offer = serde_json::from_str(&m.offer).ok()?;
        let customer = match crate::selection::offer::load_customer(&self.db, &m.customer_id).await
        {
            Ok(Some((c, sup))) if crate::selection::offer::reachable_on(&c, sup, channel) => c,
            _ => return None,
        };
        let env = crate::selection::offer::MessageEnv {
            brand_name: &fb.settings.brand.name,
            currency: &fb.settings.brand.currency,
            settings: &fb.settings.campaigns,
            secrets: &fb.secrets,
            now: chrono::Utc::now().timestamp(),
        };
        match crate::selection::offer::render(campaign, &customer, channel, &offer, &env) {
            Ok(r) if !r.recipient().is_empty() => {
                tracing::info!(message_id = m.message_id, from = %m.channel, to = next, reason = %error.reason(), "falling back to the next channel");
                Some((
                    next.clone(),
                    serde_json::to_string(rest).ok()?,
                    r.recipient().to_string(),
                    serde_json::to_string(&r).ok()?,
                ))
            }
            _ => None,
        }
    }
}

/// Messages by status, for `status` and tests.
pub async fn queue_depth(db: &Db) -> anyhow::Result<i64> {
    Ok(
        crate::with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE status = 'queued'").fetch_one(p).await)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate_per_second: u32, concurrency: u32) -> super::super::providers::Limits {
        super::super::providers::Limits {
            rate_per_second,
            concurrency,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn claims_no_more_than_rate_limits_send_in_half_a_lease() {
        let s = DispatchSettings {
            lease_seconds: 120,
            claim_batch: 200,
            ..DispatchSettings::default()
        };
        // Unlimited anywhere: the configured batch.
        assert_eq!(
            claim_limit(&s, [limits(0, 8), limits(2, 4)].into_iter()),
            200
        );
        // 2/s for 60 s = 120, plus 1/s for 60 s = 60.
        assert_eq!(
            claim_limit(&s, [limits(2, 4), limits(1, 2)].into_iter()),
            180
        );
        let short = DispatchSettings {
            lease_seconds: 5,
            claim_batch: 50,
            ..DispatchSettings::default()
        };
        // 10/s for 2 s = 20; a slow provider still gets its concurrency.
        assert_eq!(claim_limit(&short, [limits(10, 8)].into_iter()), 20);
        assert_eq!(claim_limit(&short, [limits(1, 8)].into_iter()), 8);
        assert_eq!(claim_limit(&s, std::iter::empty()), 200);
    }
}
