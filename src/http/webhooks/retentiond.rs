//! Events posted back by the receivers of our own signed-webhook provider
//! ([`crate::delivery::providers::webhook`]): `POST /webhooks/retentiond`.
//!
//! Verification is the outbound scheme run backwards, with the same secret (the variable named
//! by `http.webhooks.retentiond_secret_env`, by default the `RETENTIOND_WEBHOOK_SECRET` that
//! `delivery.webhook.secret_env` names too):
//!
//! - `X-Retentiond-Timestamp`: Unix seconds when the request was signed;
//! - `X-Retentiond-Signature`: `v1=` + lower-case hex of HMAC-SHA256(secret, timestamp + "." +
//!   raw body), compared in constant time.
//!
//! A missing or wrong signature, a timestamp that is not Unix seconds, or one further from our
//! clock than `http.webhooks.tolerance_seconds` (default 5 minutes; in either direction: an old
//! request replayed, or one signed ahead of time) answers 401. Within the window, a replayed
//! request changes nothing because each event is recorded once, by its `event_id`.
//!
//! Body: one event object or an array of them:
//!
//! ```json
//! {"event_id": "evt-81", "message_id": 123, "event": "delivered",
//!  "customer_id": "C-1", "channel": "email", "reason": "550 5.1.1 user unknown", "timestamp": 1767000000}
//! ```
//!
//! - `event_id` (required, string or number, at most 200 characters): unique per event on the
//!   receiver's side; the key `retentiond/{event_id}` makes a retry or replay a no-op.
//! - `message_id` (required, integer or numeric string): the `message_id` we sent.
//! - `event` (required): `delivered` → status delivered; `bounced` (a permanent failure: the
//!   address is bad) → failed + a hard-bounce suppression on the message's channel;
//!   `complained` → a suppression on every channel; `unsubscribed` / `stop` → a suppression
//!   on the message's channel.
//! - `customer_id`, `channel` (optional): who to suppress when `message_id` names no message
//!   we know (only with a `channel`, except for `complained`, which covers every channel).
//! - `reason` (optional): kept as the message's `last_error` for `bounced`.
//! - `timestamp` (optional, Unix seconds): when it happened (`delivered_at`).
//!
//! The whole request is refused with 400 (nothing applied) when any event lacks a required
//! field or names an event we do not know: this is our own contract, so a typo should be
//! loud, not silently ignored.

use serde_json::Value;

use super::{Effect, Event, Incoming, Reason, Refs, Rejection, Window, int_of, text_of, unix_of};
use crate::delivery::providers::webhook::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, verify as verify_signature,
};

/// Longest `event_id` accepted.
const MAX_EVENT_ID_CHARS: usize = 200;

/// The events a receiver may report.
pub const EVENTS: [&str; 5] = ["delivered", "bounced", "complained", "unsubscribed", "stop"];

fn verify(secret: &str, req: &Incoming<'_>, window: Window) -> Result<(), Rejection> {
    let signature = req
        .header(SIGNATURE_HEADER)
        .ok_or(Rejection::Missing("signature"))?;
    let text = req
        .header(TIMESTAMP_HEADER)
        .ok_or(Rejection::Missing("signature timestamp"))?;
    let timestamp: u64 = text
        .parse()
        .map_err(|_| Rejection::Invalid("signature timestamp (not Unix seconds)"))?;
    if !verify_signature(secret.as_bytes(), timestamp, req.body, signature) {
        return Err(Rejection::Invalid("signature"));
    }
    window.check(text)
}

pub(crate) fn parse(
    secret: &str,
    req: &Incoming<'_>,
    window: Window,
) -> Result<Vec<Event>, Rejection> {
    verify(secret, req, window)?;
    let body: Value = serde_json::from_slice(req.body)
        .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
    let items = match body {
        Value::Array(items) => items,
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(Rejection::Malformed(
                "expected an event object or an array of them".into(),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, e)| event(e).map_err(|why| Rejection::Malformed(format!("event {i}: {why}"))))
        .collect()
}

fn channel_of(v: Option<&Value>) -> Result<Option<&'static str>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_str() {
            Some("email") => Ok(Some("email")),
            Some("sms") => Ok(Some("sms")),
            Some("whatsapp") => Ok(Some("whatsapp")),
            _ => Err("channel must be \"email\", \"sms\" or \"whatsapp\"".into()),
        },
    }
}

fn event(e: Value) -> Result<Event, String> {
    if !e.is_object() {
        return Err("not a JSON object".into());
    }
    let event_id = text_of(e.get("event_id")).ok_or("missing event_id")?;
    if event_id.chars().count() > MAX_EVENT_ID_CHARS {
        return Err(format!(
            "event_id longer than {MAX_EVENT_ID_CHARS} characters"
        ));
    }
    let message_id = int_of(e.get("message_id")).ok_or("missing or non-integer message_id")?;
    let kind = e
        .get("event")
        .and_then(Value::as_str)
        .ok_or("missing event")?;
    let channel = channel_of(e.get("channel"))?;
    let effect = match kind {
        "delivered" => Effect::Delivered,
        "bounced" => {
            let error = match text_of(e.get("reason")) {
                Some(r) => format!(
                    "webhook receiver: bounced: {}",
                    r.chars().take(300).collect::<String>()
                ),
                None => "webhook receiver: bounced".into(),
            };
            Effect::Failed {
                error,
                suppress: Some(Reason::HardBounce),
            }
        }
        "complained" => Effect::Suppress(Reason::Complaint),
        "unsubscribed" => Effect::Suppress(Reason::Unsubscribe),
        "stop" => Effect::Suppress(Reason::Stop),
        _ => {
            return Err(format!(
                "unknown event (expected one of {})",
                EVENTS.join(", ")
            ));
        }
    };
    // The customer is a fallback for a message we do not know; a channel-specific effect needs
    // the channel to go with it.
    let customer_id = text_of(e.get("customer_id"))
        .filter(|_| channel.is_some() || effect == Effect::Suppress(Reason::Complaint));
    let refs = Refs {
        message_id: Some(message_id),
        customer_id,
        channel: channel.unwrap_or("email"),
        ..Refs::default()
    };
    Ok(Event {
        key: format!("retentiond/{event_id}"),
        effect,
        refs,
        at: unix_of(e.get("timestamp")),
        payload: e,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use serde_json::json;

    use super::*;
    use crate::delivery::providers::webhook::signature;

    const SECRET: &str = "whsec-test";
    const NOW: i64 = 1_767_000_000;

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        h.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        h
    }

    const WINDOW: Window = Window {
        now: NOW,
        tolerance_secs: 300,
    };

    fn parse_signed_in(ts: u64, body: &str, window: Window) -> Result<Vec<Event>, Rejection> {
        let h = headers(
            &ts.to_string(),
            &signature(SECRET.as_bytes(), ts, body.as_bytes()),
        );
        parse(
            SECRET,
            &Incoming {
                headers: &h,
                body: body.as_bytes(),
                query: None,
                public_base_url: "",
            },
            window,
        )
    }

    fn parse_signed(ts: u64, body: &str) -> Result<Vec<Event>, Rejection> {
        parse_signed_in(ts, body, WINDOW)
    }

    #[test]
    fn verifies_signature_and_window() {
        let body = r#"{"event_id": "e1", "message_id": 7, "event": "delivered"}"#;
        let now = NOW as u64;
        assert_eq!(parse_signed(now, body).unwrap().len(), 1);
        assert_eq!(
            parse_signed(now - 300, body).unwrap().len(),
            1,
            "exactly 5 minutes old"
        );
        assert_eq!(
            parse_signed(now + 300, body).unwrap().len(),
            1,
            "exactly 5 minutes ahead"
        );
        assert_eq!(
            parse_signed(now - 301, body).unwrap_err(),
            Rejection::Stale {
                age_secs: 301,
                tolerance_secs: 300
            }
        );
        assert_eq!(
            parse_signed(now + 301, body).unwrap_err(),
            Rejection::Stale {
                age_secs: -301,
                tolerance_secs: 300
            }
        );
        assert!(
            matches!(
                parse_signed(1_420_070_400, body),
                Err(Rejection::Stale { .. })
            ),
            "2015"
        );
        // The configured tolerance, not a constant.
        let narrow = Window {
            tolerance_secs: 30,
            ..WINDOW
        };
        assert!(matches!(
            parse_signed_in(now - 31, body, narrow),
            Err(Rejection::Stale { .. })
        ));
        assert_eq!(parse_signed_in(now - 30, body, narrow).unwrap().len(), 1);

        let check = |h: &HeaderMap| {
            parse(
                SECRET,
                &Incoming {
                    headers: h,
                    body: body.as_bytes(),
                    query: None,
                    public_base_url: "",
                },
                WINDOW,
            )
        };
        let good = signature(SECRET.as_bytes(), now, body.as_bytes());
        assert_eq!(
            check(&HeaderMap::new()).unwrap_err(),
            Rejection::Missing("signature")
        );
        let mut only_sig = HeaderMap::new();
        only_sig.insert(SIGNATURE_HEADER, good.parse().unwrap());
        assert_eq!(
            check(&only_sig).unwrap_err(),
            Rejection::Missing("signature timestamp")
        );
        assert_eq!(
            check(&headers("soon", &good)).unwrap_err(),
            Rejection::Invalid("signature timestamp (not Unix seconds)")
        );
        // `+` parses as u64 but is not how a timestamp is signed: refused as non-numeric.
        let plus = signature(SECRET.as_bytes(), now, body.as_bytes());
        assert!(matches!(
            check(&headers(&format!("+{now}"), &plus)),
            Err(Rejection::Invalid(_))
        ));
        assert_eq!(
            check(&headers(&(now + 1).to_string(), &good)).unwrap_err(),
            Rejection::Invalid("signature")
        );
        let other = signature(b"another secret", now, body.as_bytes());
        assert_eq!(
            check(&headers(&now.to_string(), &other)).unwrap_err(),
            Rejection::Invalid("signature")
        );
        assert_eq!(
            check(&headers(&now.to_string(), good.trim_start_matches("v1="))).unwrap_err(),
            Rejection::Invalid("signature")
        );
    }

    #[test]
    fn events_and_effects() {
        let body = json!([
            {"event_id": "e1", "message_id": 7, "event": "delivered", "timestamp": 1_766_999_990},
            {"event_id": 2, "message_id": "8", "event": "bounced", "reason": "550 5.1.1 unknown user"},
            {"event_id": "e3", "message_id": 9, "event": "complained", "customer_id": "C-9"},
            {"event_id": "e4", "message_id": 10, "event": "unsubscribed", "customer_id": "C-10"},
            {"event_id": "e5", "message_id": 11, "event": "stop", "customer_id": "C-11", "channel": "sms"},
        ])
        .to_string();
        let evs = parse_signed(NOW as u64, &body).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            [
                "retentiond/e1",
                "retentiond/2",
                "retentiond/e3",
                "retentiond/e4",
                "retentiond/e5"
            ]
        );
        assert_eq!(evs[0].effect, Effect::Delivered);
        assert_eq!(evs[0].at, Some(1_766_999_990));
        assert_eq!(
            evs[1].effect,
            Effect::Failed {
                error: "webhook receiver: bounced: 550 5.1.1 unknown user".into(),
                suppress: Some(Reason::HardBounce)
            }
        );
        assert_eq!(evs[1].refs.message_id, Some(8));
        assert_eq!(
            evs[2].refs.customer_id.as_deref(),
            Some("C-9"),
            "a complaint covers every channel"
        );
        assert_eq!(
            evs[3].refs.customer_id, None,
            "an unsubscribe without a channel cannot fall back to the customer"
        );
        assert_eq!(
            (evs[4].refs.customer_id.as_deref(), evs[4].refs.channel),
            (Some("C-11"), "sms")
        );
        assert_eq!(evs[4].effect, Effect::Suppress(Reason::Stop));

        let single = parse_signed(
            NOW as u64,
            r#"{"event_id": "x", "message_id": 1, "event": "stop"}"#,
        )
        .unwrap();
        assert_eq!(single.len(), 1);
    }

    #[test]
    fn malformed_requests_are_refused_whole() {
        for body in [
            "not json",
            "42",
            r#"[{"event_id": "a", "message_id": 1, "event": "delivered"}, {"event_id": "b", "message_id": 2, "event": "deliverd"}]"#,
            r#"{"message_id": 1, "event": "delivered"}"#,
            r#"{"event_id": "a", "event": "delivered"}"#,
            r#"{"event_id": "a", "message_id": "x", "event": "delivered"}"#,
            r#"{"event_id": "a", "message_id": 1}"#,
            r#"{"event_id": "a", "message_id": 1, "event": "stop", "channel": "pigeon"}"#,
            r#"["not an object"]"#,
        ] {
            assert!(
                matches!(parse_signed(NOW as u64, body), Err(Rejection::Malformed(_))),
                "{body}"
            );
        }
        let long =
            json!({"event_id": "x".repeat(201), "message_id": 1, "event": "stop"}).to_string();
        assert!(matches!(
            parse_signed(NOW as u64, &long),
            Err(Rejection::Malformed(_))
        ));
        assert_eq!(parse_signed(NOW as u64, "[]").unwrap(), vec![]);
    }
}
