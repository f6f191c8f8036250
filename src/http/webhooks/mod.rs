//! Delivery providers' webhooks: verify the request the way the provider signs it, turn the
//! payload into provider-neutral [`Event`]s, and apply them in one transaction.
//!
//! Rejections: a request without its credentials or signature, or with wrong ones (a bad
//! signature, a forged or altered body, wrong Basic auth, a stale timestamp), answers
//! **401 Unauthorized**, changes nothing, and is logged at warn with the provider and what was
//! wrong (never the secret, the signature or the payload). An authentic but unreadable payload
//! answers 400, a provider without configured credentials 404, a body over
//! [`crate::http::MAX_BODY_BYTES`] 413.
//!
//! Signed timestamps: where the provider signs one (SendGrid, Mailgun, `retentiond`), it must be
//! whole Unix seconds within [`Window::tolerance_secs`] of our clock either way
//! (`http.webhooks.tolerance_seconds`, default 300), checked right after the signature and
//! before any replay record (a Mailgun token, an event key) is read: a captured request is
//! refused once the window has passed, however long ago its replay records were pruned.
//! Postmark (Basic auth), Twilio and Meta (WhatsApp) sign no timestamp: for them only the event
//! keys in `webhook_events` stop a replay, for as long as housekeeping keeps them.
//!
//! Matching an event to an outbox row: our `message_id` when the provider echoes it (SendGrid
//! `custom_args`, Postmark `Metadata`, Mailgun `user-variables`, a `message_id` query parameter
//! on Twilio's status callback URL, WhatsApp `biz_opaque_callback_data`, the `message_id` of a
//! [`retentiond`] event), else the provider's own id against `outbox.provider_message_id` where
//! `outbox.provider` is the provider's name as it appears in the URL (`sendgrid`, `postmark`,
//! `mailgun`, `twilio`, `whatsapp`).
//!
//! Effects: delivered → status `delivered` (only from sending/sent/unknown); permanent failure
//! → `failed` + last_error, and a channel suppression when the address is bad (hard_bounce) or
//! opted out; complaint → suppression on every channel; unsubscribe / STOP → channel
//! suppression. Each event is recorded once in `webhook_events` (`INSERT … ON CONFLICT DO
//! NOTHING` first, before anything else is read), so a replay changes nothing. Events we do not
//! act on (opens, clicks, deferrals, soft bounces, "sent", …) are accepted and ignored.

pub(crate) mod mailgun;
pub(crate) mod postmark;
pub(crate) mod retentiond;
pub(crate) mod sendgrid;
pub(crate) mod twilio;
pub(crate) mod whatsapp;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::store::{self, NewSuppression, OutboxRow};
use super::{Shared, plain};
use crate::db::{Db, Tx};

/// The providers with a webhook endpoint, as they appear in `/webhooks/{provider}` (and, but
/// for `whatsapp` = `whatsapp_cloud` and `retentiond` = `webhook`, in `outbox.provider`).
/// `retentiond` is for the receivers of our own signed-webhook provider.
pub const PROVIDERS: [&str; 6] = [
    "sendgrid",
    "postmark",
    "mailgun",
    "twilio",
    "whatsapp",
    "retentiond",
];

/// Default of `http.webhooks.tolerance_seconds`: how far a signed timestamp may be from our clock.
pub const DEFAULT_TOLERANCE_SECS: u32 = 300;

/// Largest `http.webhooks.tolerance_seconds` accepted: a wider window lets a captured request be
/// replayed longer and keeps replay records longer.
pub const MAX_TOLERANCE_SECS: u32 = 86_400;

/// Slack added to the replay window before housekeeping may prune a `webhook_events` row.
const REPLAY_MARGIN_SECS: i64 = 3_600;

/// How long a `webhook_events` row (an event key, a Mailgun token) must be kept for a signed
/// request to stay single-use: a request signed up to `tolerance` ahead of our clock is accepted
/// when it arrives and stays within the window until `tolerance` after its timestamp, so until
/// 2 × tolerance after it was recorded; plus a margin.
pub fn replay_window_secs(tolerance_secs: u32) -> i64 {
    2 * i64::from(tolerance_secs) + REPLAY_MARGIN_SECS
}

/// The clock a signed timestamp is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Unix seconds now.
    pub now: i64,
    pub tolerance_secs: u32,
}

impl Window {
    /// A signed timestamp as sent (whole Unix seconds, digits only), checked against the window.
    /// Non-numeric is an invalid signature; outside the window is [`Rejection::Stale`].
    pub fn check(&self, timestamp: &str) -> Result<(), Rejection> {
        // At most 12 digits: no overflow below, and nothing a real clock sends is longer.
        if timestamp.is_empty()
            || timestamp.len() > 12
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Rejection::Invalid("signature timestamp (not Unix seconds)"));
        }
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| Rejection::Invalid("signature timestamp (not Unix seconds)"))?;
        let age_secs = self.now - ts;
        if age_secs.abs() > i64::from(self.tolerance_secs) {
            return Err(Rejection::Stale {
                age_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

/// Inbound replies that opt out (trimmed, case-insensitive, the whole message).
pub const STOP_KEYWORDS: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];

pub(crate) fn is_stop(body: &str) -> bool {
    let body = body.trim();
    STOP_KEYWORDS.iter().any(|k| body.eq_ignore_ascii_case(k))
}

/// Why a suppression is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    HardBounce,
    Complaint,
    Unsubscribe,
    Stop,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Stop => "stop",
        }
    }
}

/// What an event does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    Delivered,
    /// The message will not arrive. `suppress` when the address must not be used again.
    Failed {
        error: String,
        suppress: Option<Reason>,
    },
    /// No status change: a complaint, an unsubscribe, a STOP reply.
    Suppress(Reason),
}

impl Effect {
    /// `webhook_events.kind`.
    fn kind(&self) -> &'static str {
        match self {
            Effect::Delivered => "delivered",
            Effect::Failed {
                suppress: Some(Reason::HardBounce),
                ..
            } => "bounced",
            Effect::Failed { .. } => "failed",
            Effect::Suppress(Reason::Complaint) => "complained",
            Effect::Suppress(Reason::Unsubscribe) => "unsubscribed",
            Effect::Suppress(Reason::Stop) => "stop",
            Effect::Suppress(Reason::HardBounce) => "bounced",
        }
    }
}

/// How to find the message and the customer an event is about, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Refs {
    /// Our `outbox.message_id`, echoed back by the provider.
    pub message_id: Option<i64>,
    /// Candidates for `outbox.provider_message_id`.
    pub provider_message_ids: Vec<String>,
    /// Our customer id, echoed back by the provider.
    pub customer_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// The channel when no message is found (email providers: email).
    pub channel: &'static str,
}

/// One provider event, normalised.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// `provider/…`: the provider's event id, or a digest of the event.
    pub key: String,
    pub effect: Effect,
    pub refs: Refs,
    /// When it happened (unix seconds), if the provider says.
    pub at: Option<i64>,
    /// The event as received, stored in `webhook_events.payload`.
    pub payload: Value,
}

/// Why a request is refused; nothing is changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejection {
    NotConfigured,
    /// Credentials or signature absent.
    Missing(&'static str),
    /// Credentials or signature wrong (a non-numeric signed timestamp included).
    Invalid(&'static str),
    /// Correctly signed, but the signed timestamp is further from our clock than the tolerance
    /// (`age_secs` < 0: signed ahead of our clock).
    Stale {
        age_secs: i64,
        tolerance_secs: u32,
    },
    /// Authentic but unreadable.
    Malformed(String),
    /// Our own configuration is unusable (e.g. a bad SendGrid key).
    Misconfigured(&'static str),
}

impl Rejection {
    fn label(&self) -> &'static str {
        match self {
            Rejection::NotConfigured => "not_configured",
            Rejection::Missing(_) => "unauthenticated",
            Rejection::Invalid(_) => "invalid_signature",
            Rejection::Stale { .. } => "stale_timestamp",
            Rejection::Malformed(_) => "malformed",
            Rejection::Misconfigured(_) => "misconfigured",
        }
    }

    /// What was wrong, for the log: static text or a parser's message, never a secret, a
    /// signature or the payload.
    fn detail(&self) -> String {
        match self {
            Rejection::NotConfigured => "no credentials configured".into(),
            Rejection::Missing(what) => format!("missing {what}"),
            Rejection::Invalid(what) => format!("invalid {what}"),
            Rejection::Stale {
                age_secs,
                tolerance_secs,
            } if *age_secs < 0 => {
                format!(
                    "stale signature timestamp: {} s ahead of our clock (tolerance {tolerance_secs} s)",
                    -age_secs
                )
            }
            Rejection::Stale {
                age_secs,
                tolerance_secs,
            } => format!(
                "stale signature timestamp: signed {age_secs} s ago (tolerance {tolerance_secs} s)"
            ),
            Rejection::Malformed(why) => format!("malformed payload: {why}"),
            Rejection::Misconfigured(why) => (*why).into(),
        }
    }

    fn into_response(self, provider: &str) -> Response {
        let unauthorized = |text: String| {
            let mut r = plain(StatusCode::UNAUTHORIZED, text);
            if provider == "postmark" {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"retentiond webhooks\""),
                );
            }
            r
        };
        match self {
            Rejection::NotConfigured => plain(
                StatusCode::NOT_FOUND,
                format!("{provider} webhook not configured"),
            ),
            // Missing and wrong credentials alike: 401, the request is not authenticated.
            Rejection::Missing(what) => unauthorized(format!("missing {what}")),
            Rejection::Invalid(what) => unauthorized(format!("invalid {what}")),
            Rejection::Stale { tolerance_secs, .. } => unauthorized(format!(
                "stale signature timestamp (more than {tolerance_secs} s from our clock)"
            )),
            Rejection::Malformed(why) => {
                plain(StatusCode::BAD_REQUEST, format!("malformed payload: {why}"))
            }
            Rejection::Misconfigured(why) => {
                tracing::error!(provider, "webhook misconfigured: {why}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "webhook misconfigured")
            }
        }
    }
}

/// What a provider parser returns.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub events: Vec<Event>,
    /// A single-use value of the request's signature (Mailgun's token): recorded like an event,
    /// so a captured signature cannot be replayed with other event data.
    pub nonce: Option<String>,
}

impl From<Vec<Event>> for Parsed {
    fn from(events: Vec<Event>) -> Self {
        Parsed {
            events,
            nonce: None,
        }
    }
}

/// What a provider parser gets.
pub(crate) struct Incoming<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub query: Option<&'a str>,
    pub public_base_url: &'a str,
}

impl Incoming<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// `POST /webhooks/{provider}`.
pub(crate) async fn receive(
    State(s): State<Shared>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(provider) = PROVIDERS.iter().copied().find(|p| *p == provider) else {
        return plain(StatusCode::NOT_FOUND, "unknown provider");
    };
    let span = tracing::info_span!("webhook", provider);
    let _enter = span.enter();
    let incoming = Incoming {
        headers: &headers,
        body: &body,
        query: query.as_deref(),
        public_base_url: &s.public_base_url,
    };
    let w = &s.webhooks;
    let window = Window {
        now: super::now(),
        tolerance_secs: w.tolerance_secs,
    };
    let parsed = match provider {
        "sendgrid" => w
            .sendgrid_public_key
            .as_deref()
            .map(|k| sendgrid::parse(k, &incoming, window).map(Parsed::from)),
        "postmark" => w
            .postmark_basic_auth
            .as_deref()
            .map(|k| postmark::parse(k, &incoming).map(Parsed::from)),
        "mailgun" => w
            .mailgun_signing_key
            .as_deref()
            .map(|k| mailgun::parse(k, &incoming, window)),
        "twilio" => w
            .twilio_auth_token
            .as_deref()
            .map(|k| twilio::parse(k, &incoming).map(Parsed::from)),
        "whatsapp" => w
            .whatsapp_app_secret
            .as_deref()
            .map(|k| whatsapp::parse(k, &incoming).map(Parsed::from)),
        "retentiond" => w
            .retentiond_secret
            .as_deref()
            .map(|k| retentiond::parse(k, &incoming, window).map(Parsed::from)),
        _ => unreachable!("PROVIDERS lists the arms"),
    }
    .unwrap_or(Err(Rejection::NotConfigured));
    drop(_enter);
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(r) => {
            span.in_scope(
                || tracing::warn!(outcome = r.label(), reason = %r.detail(), "webhook rejected"),
            );
            ::metrics::counter!("retentiond_webhook_requests_total", "provider" => provider, "outcome" => r.label()).increment(1);
            return r.into_response(provider);
        }
    };
    match apply_all(&s.db, provider, &parsed).await {
        Ok(tally) => {
            span.in_scope(|| {
                tracing::info!(
                    events = parsed.events.len(),
                    applied = tally.applied,
                    unmatched = tally.unmatched,
                    duplicates = tally.duplicates,
                    "webhook processed"
                )
            });
            ::metrics::counter!("retentiond_webhook_requests_total", "provider" => provider, "outcome" => "ok").increment(1);
            for (kind, result, n) in tally.by_kind {
                ::metrics::counter!("retentiond_webhook_events_total", "provider" => provider, "kind" => kind, "result" => result).increment(n);
            }
            plain(StatusCode::OK, "ok")
        }
        Err(e) => {
            span.in_scope(|| tracing::error!(error = %e, "webhook not applied (rolled back)"));
            ::metrics::counter!("retentiond_webhook_requests_total", "provider" => provider, "outcome" => "error").increment(1);
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; retry later",
            )
        }
    }
}

/// `GET /webhooks/{provider}`: Meta's subscription handshake for WhatsApp.
pub(crate) async fn verify_subscription(
    State(s): State<Shared>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match provider.as_str() {
        "whatsapp" => whatsapp::handshake(s.webhooks.whatsapp_verify_token.as_deref(), &q),
        p if PROVIDERS.contains(&p) => plain(StatusCode::METHOD_NOT_ALLOWED, "POST only"),
        _ => plain(StatusCode::NOT_FOUND, "unknown provider"),
    }
}

#[derive(Debug, Default)]
struct Tally {
    applied: u64,
    unmatched: u64,
    duplicates: u64,
    by_kind: Vec<(&'static str, &'static str, u64)>,
}

impl Tally {
    fn add(&mut self, kind: &'static str, result: &'static str) {
        match result {
            "applied" => self.applied += 1,
            "unmatched" => self.unmatched += 1,
            _ => self.duplicates += 1,
        }
        match self
            .by_kind
            .iter_mut()
            .find(|(k, r, _)| *k == kind && *r == result)
        {
            Some(e) => e.2 += 1,
            None => self.by_kind.push((kind, result, 1)),
        }
    }
}

/// Applies every event of one request in one transaction.
async fn apply_all(db: &Db, provider: &'static str, parsed: &Parsed) -> sqlx::Result<Tally> {
    let mut tally = Tally::default();
    if parsed.events.is_empty() && parsed.nonce.is_none() {
        return Ok(tally);
    }
    let now = super::now();
    let mut tx = db.begin().await?;
    if let Some(nonce) = &parsed.nonce
        && !store::record_event(&mut tx, nonce, provider, "nonce", "{}", now).await?
    {
        tx.rollback().await?;
        for ev in &parsed.events {
            tally.add(ev.effect.kind(), "duplicate");
        }
        return Ok(tally);
    }
    for ev in &parsed.events {
        let result = apply(&mut tx, provider, ev, now).await?;
        tally.add(ev.effect.kind(), result);
    }
    tx.commit().await?;
    Ok(tally)
}

/// Applies one event; "duplicate" when it was seen before (nothing changes), "unmatched"
/// when it names no known message or customer (recorded, nothing else changes).
async fn apply(
    tx: &mut Tx,
    provider: &'static str,
    ev: &Event,
    now: i64,
) -> sqlx::Result<&'static str> {
    let payload = serde_json::to_string(&ev.payload).unwrap_or_default();
    if !store::record_event(tx, &ev.key, provider, ev.effect.kind(), &payload, now).await? {
        return Ok("duplicate");
    }
    let msg = find_message(tx, provider, &ev.refs).await?;
    let channel = msg
        .as_ref()
        .and_then(|m| m.channel.clone())
        .unwrap_or_else(|| ev.refs.channel.to_string());
    let customers = match &msg {
        Some(m) => vec![m.customer_id.clone()],
        None => find_customers(tx, &ev.refs, &channel).await?,
    };
    let address = ev
        .refs
        .email
        .as_deref()
        .or(ev.refs.phone.as_deref())
        .or(msg.as_ref().and_then(|m| m.recipient.as_deref()));
    let suppress = |reason: Reason| NewSuppression {
        customer_id: "",
        channel: if reason == Reason::Complaint {
            None
        } else {
            Some(channel.as_str())
        },
        address,
        reason: reason.as_str(),
        source: provider,
    };
    match &ev.effect {
        Effect::Delivered => {
            if let Some(m) = &msg {
                store::mark_delivered(tx, m.message_id, ev.at.unwrap_or(now), now).await?;
            }
        }
        Effect::Failed {
            error,
            suppress: reason,
        } => {
            if let Some(m) = &msg {
                store::mark_failed(tx, m.message_id, error, reason.is_some(), now).await?;
            }
            if let Some(reason) = reason {
                for c in &customers {
                    store::add_suppression(
                        tx,
                        &NewSuppression {
                            customer_id: c,
                            ..suppress(*reason)
                        },
                        now,
                    )
                    .await?;
                }
            }
        }
        Effect::Suppress(reason) => {
            for c in &customers {
                store::add_suppression(
                    tx,
                    &NewSuppression {
                        customer_id: c,
                        ..suppress(*reason)
                    },
                    now,
                )
                .await?;
            }
        }
    }
    store::link_event(
        tx,
        &ev.key,
        msg.as_ref().map(|m| m.message_id),
        customers.first().map(String::as_str),
    )
    .await?;
    Ok(if msg.is_some() || !customers.is_empty() {
        "applied"
    } else {
        "unmatched"
    })
}

async fn find_message(tx: &mut Tx, provider: &str, refs: &Refs) -> sqlx::Result<Option<OutboxRow>> {
    if let Some(id) = refs.message_id
        && let Some(row) = store::message_by_id(tx, id).await?
    {
        return Ok(Some(row));
    }
    // The webhook routes are /webhooks/whatsapp and /webhooks/retentiond; the sending
    // providers are named whatsapp_cloud and webhook.
    let provider = match provider {
        "whatsapp" => "whatsapp_cloud",
        "retentiond" => "webhook",
        p => p,
    };
    for pmid in &refs.provider_message_ids {
        if let Some(row) = store::message_by_provider_id(tx, provider, pmid).await? {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// For events that match no message: the customer id the provider echoed, else customers with
/// the event's email address or phone number.
async fn find_customers(tx: &mut Tx, refs: &Refs, channel: &str) -> sqlx::Result<Vec<String>> {
    if let Some(c) = &refs.customer_id {
        return Ok(vec![c.clone()]);
    }
    if let Some(email) = &refs.email {
        return store::customers_by_email(tx, email).await;
    }
    if let Some(phone) = &refs.phone {
        return store::customers_by_phone(tx, phone, channel).await;
    }
    Ok(Vec::new())
}

// ---- helpers shared by the provider parsers ----

/// `provider/sha256:…` of the canonical JSON of `value`, for events without an id.
pub(crate) fn digest_key(provider: &str, value: &Value) -> String {
    let canonical = serde_json::to_string(value).unwrap_or_default();
    format!(
        "{provider}/sha256:{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

/// A JSON string or number as text (providers are loose about which they send).
pub(crate) fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON string or number as an integer id.
pub(crate) fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Unix seconds from a JSON number (possibly fractional) or numeric string.
pub(crate) fn unix_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_keywords() {
        for yes in [
            "STOP",
            " stop ",
            "Stop\n",
            "stopall",
            "UNSUBSCRIBE",
            "cancel",
            "End",
            "quit",
        ] {
            assert!(is_stop(yes), "{yes:?}");
        }
        for no in ["", "stop please", "STOPP", "start", "don't stop", "S T O P"] {
            assert!(!is_stop(no), "{no:?}");
        }
    }

    #[test]
    fn signed_timestamps_must_be_unix_seconds_within_the_window() {
        let w = Window {
            now: 1_767_000_000,
            tolerance_secs: 300,
        };
        assert_eq!(w.check("1767000000"), Ok(()));
        assert_eq!(w.check("1766999700"), Ok(()), "exactly the tolerance old");
        assert_eq!(w.check("1767000300"), Ok(()), "exactly the tolerance ahead");
        assert_eq!(
            w.check("1766999699"),
            Err(Rejection::Stale {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            w.check("1767000301"),
            Err(Rejection::Stale {
                age_secs: -301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            w.check("1420070400"),
            Err(Rejection::Stale {
                age_secs: 346_929_600,
                tolerance_secs: 300
            }),
            "2015"
        );
        assert_eq!(
            w.check("0"),
            Err(Rejection::Stale {
                age_secs: 1_767_000_000,
                tolerance_secs: 300
            })
        );
        for bad in [
            "",
            "soon",
            "1767000000.5",
            "+1767000000",
            "-5",
            " 1767000000",
            "1e9",
            "0x69",
            "１７６７０００００００",
            "9999999999999",
        ] {
            assert!(
                matches!(w.check(bad), Err(Rejection::Invalid(_))),
                "{bad:?}"
            );
        }
        let narrow = Window {
            tolerance_secs: 60,
            ..w
        };
        assert!(matches!(
            narrow.check("1766999939"),
            Err(Rejection::Stale { .. })
        ));
        assert_eq!(narrow.check("1766999940"), Ok(()));
        // Logged and answered as stale, with a 401.
        let stale = w.check("1420070400").unwrap_err();
        assert_eq!(stale.label(), "stale_timestamp");
        assert!(
            stale.detail().contains("346929600 s ago (tolerance 300 s)"),
            "{}",
            stale.detail()
        );
        assert!(
            w.check("1767003600")
                .unwrap_err()
                .detail()
                .contains("3600 s ahead")
        );
        assert_eq!(
            stale.into_response("mailgun").status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn replay_records_outlive_the_window() {
        assert_eq!(replay_window_secs(300), 600 + 3_600);
        assert_eq!(replay_window_secs(MAX_TOLERANCE_SECS), 2 * 86_400 + 3_600);
    }

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff, 0x10];
        assert_eq!(hex(&bytes), "0001abff10");
        assert_eq!(unhex("0001ABff10").unwrap(), bytes);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn loose_json_values() {
        use serde_json::json;
        assert_eq!(int_of(Some(&json!("42"))), Some(42));
        assert_eq!(int_of(Some(&json!(42))), Some(42));
        assert_eq!(int_of(Some(&json!("x"))), None);
        assert_eq!(unix_of(Some(&json!(1_700_000_000.25))), Some(1_700_000_000));
        assert_eq!(unix_of(Some(&json!("1700000000"))), Some(1_700_000_000));
        assert_eq!(text_of(Some(&json!(" a "))), Some("a".into()));
        assert_eq!(text_of(Some(&json!(""))), None);
    }

    #[test]
    fn digest_keys_are_stable_and_distinct() {
        use serde_json::json;
        let a = digest_key("postmark", &json!({"a": 1, "b": 2}));
        assert_eq!(a, digest_key("postmark", &json!({"b": 2, "a": 1})));
        assert_ne!(a, digest_key("postmark", &json!({"a": 1, "b": 3})));
        assert!(a.starts_with("postmark/sha256:"));
    }
}
