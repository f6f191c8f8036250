//! Mailgun webhooks. The signature travels in the JSON body:
//! `{"signature": {"timestamp", "token", "signature"}, "event-data": {…}}`, where `signature`
//! is hex HMAC-SHA256(webhook signing key, timestamp + token). The signature does not cover the
//! event data, so each token is accepted once, and only while its timestamp is within the
//! tolerance of our clock ([`super::Window`]): a captured triple is refused as stale once the
//! window has passed, even after housekeeping has pruned its token record.
//!
//! Events: delivered, failed (`severity` permanent = will not be retried), complained,
//! unsubscribed. Our `message_id` / `customer_id` come back in `user-variables` (sent as
//! `v:message_id`); Mailgun's own id is `message.headers.message-id`.

use hmac::{Hmac, KeyInit, Mac as _};
use serde_json::Value;
use sha2::Sha256;

use super::{
    Effect, Event, Incoming, Parsed, Reason, Refs, Rejection, Window, digest_key, int_of, text_of,
    unhex, unix_of,
};

/// Verifies the signature and its timestamp, and returns the token (single use: Mailgun signs
/// only timestamp + token, not the event data).
fn verify(signing_key: &str, body: &Value, window: Window) -> Result<String, Rejection> {
    let sig = body
        .get("signature")
        .filter(|s| s.is_object())
        .ok_or(Rejection::Missing("signature"))?;
    let timestamp =
        text_of(sig.get("timestamp")).ok_or(Rejection::Missing("signature timestamp"))?;
    let token = text_of(sig.get("token")).ok_or(Rejection::Missing("signature token"))?;
    let given = text_of(sig.get("signature")).ok_or(Rejection::Missing("signature"))?;
    let given = unhex(&given).ok_or(Rejection::Invalid("signature"))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(signing_key.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| Rejection::Invalid("signature"))?;
    // Before the token is returned to be checked against (and recorded in) webhook_events.
    window.check(&timestamp)?;
    Ok(token)
}

pub(crate) fn parse(
    signing_key: &str,
    req: &Incoming<'_>,
    window: Window,
) -> Result<Parsed, Rejection> {
    // The signature is inside the body, so the body is parsed (not acted on) first.
    let body: Value =
        serde_json::from_slice(req.body).map_err(|_| Rejection::Missing("signature"))?;
    let token = verify(signing_key, &body, window)?;
    let Some(data) = body.get("event-data").filter(|d| d.is_object()) else {
        return Err(Rejection::Malformed("no event-data".into()));
    };
    Ok(Parsed {
        events: event(data.clone()).into_iter().collect(),
        nonce: Some(format!("mailgun/token/{token}")),
    })
}

fn event(e: Value) -> Option<Event> {
    let kind = e.get("event")?.as_str()?;
    let effect = match kind {
        "delivered" => Effect::Delivered,
        "failed" => {
            if e.get("severity").and_then(Value::as_str) != Some("permanent") {
                return None; // temporary: Mailgun retries
            }
            let reason = text_of(e.get("reason")).unwrap_or_default();
            let status = e.get("delivery-status");
            let detail = text_of(status.and_then(|s| s.get("message")))
                .or_else(|| text_of(status.and_then(|s| s.get("description"))))
                .unwrap_or_default();
            let code = text_of(status.and_then(|s| s.get("code"))).unwrap_or_default();
            // Already on Mailgun's own suppression lists: keep the reason it was put there for.
            let suppress = match reason.as_str() {
                "suppress-unsubscribe" => Reason::Unsubscribe,
                "suppress-complaint" => Reason::Complaint,
                _ => Reason::HardBounce,
            };
            Effect::Failed {
                error: format!("mailgun {reason} {code}: {detail}")
                    .trim()
                    .to_string(),
                suppress: Some(suppress),
            }
        }
        "complained" => Effect::Suppress(Reason::Complaint),
        "unsubscribed" => Effect::Suppress(Reason::Unsubscribe),
        _ => return None, // accepted, opened, clicked, stored, …
    };
    // Event ids are unique within a day only: the timestamp makes the key unique.
    let key = match (text_of(e.get("id")), e.get("timestamp")) {
        (Some(id), Some(ts)) => format!("mailgun/{id}/{ts}"),
        _ => digest_key("mailgun", &e),
    };
    let vars = e.get("user-variables");
    let header_id = text_of(
        e.get("message")
            .and_then(|m| m.get("headers"))
            .and_then(|h| h.get("message-id")),
    );
    let provider_message_ids = header_id
        .map(|id| {
            let bare = id.trim_start_matches('<').trim_end_matches('>').to_string();
            vec![bare.clone(), format!("<{bare}>")]
        })
        .unwrap_or_default();
    let refs = Refs {
        message_id: int_of(vars.and_then(|v| v.get("message_id"))),
        provider_message_ids,
        customer_id: text_of(vars.and_then(|v| v.get("customer_id"))),
        email: text_of(e.get("recipient")),
        phone: None,
        channel: "email",
    };
    Some(Event {
        key,
        effect,
        refs,
        at: unix_of(e.get("timestamp")),
        payload: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events() {
        let ev = |v: Value| event(v).map(|e| e.effect);
        assert_eq!(ev(json!({"event": "delivered"})), Some(Effect::Delivered));
        assert!(matches!(
            ev(json!({"event": "failed", "severity": "permanent"})),
            Some(Effect::Failed {
                suppress: Some(Reason::HardBounce),
                ..
            })
        ));
        assert_eq!(
            ev(json!({"event": "failed", "severity": "temporary"})),
            None
        );
        assert!(matches!(
            ev(json!({"event": "failed", "severity": "permanent", "reason": "suppress-complaint"})),
            Some(Effect::Failed {
                suppress: Some(Reason::Complaint),
                ..
            })
        ));
        assert_eq!(
            ev(json!({"event": "complained"})),
            Some(Effect::Suppress(Reason::Complaint))
        );
        assert_eq!(
            ev(json!({"event": "unsubscribed"})),
            Some(Effect::Suppress(Reason::Unsubscribe))
        );
        assert_eq!(ev(json!({"event": "opened"})), None);
    }

    const KEY: &str = "mg-key";
    const NOW: i64 = 1_767_000_000;

    fn signed(timestamp: &str, token: &str) -> Value {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
        let sig = super::super::hex(&mac.finalize().into_bytes());
        json!({"signature": {"timestamp": timestamp, "token": token, "signature": sig}, "event-data": {"event": "complained", "id": "e1"}})
    }

    #[test]
    fn signature_timestamp_must_be_recent() {
        let window = Window {
            now: NOW,
            tolerance_secs: 300,
        };
        let check = |ts: &str| verify(KEY, &signed(ts, "tok-1"), window);
        assert_eq!(check("1767000000"), Ok("tok-1".to_string()), "now");
        assert_eq!(
            check("1766999700"),
            Ok("tok-1".to_string()),
            "the tolerance ago"
        );
        assert_eq!(
            check("1767000300"),
            Ok("tok-1".to_string()),
            "the tolerance ahead"
        );
        // Correctly signed, but stale: a 2015 timestamp, 301 s old, 301 s ahead.
        assert!(matches!(check("1420070400"), Err(Rejection::Stale { .. })));
        assert!(matches!(
            check("1766999699"),
            Err(Rejection::Stale { age_secs: 301, .. })
        ));
        assert!(matches!(
            check("1767000301"),
            Err(Rejection::Stale { age_secs: -301, .. })
        ));
        // Correctly signed over a timestamp that is not Unix seconds.
        for bad in ["soon", "1767000000.5", "-1767000000"] {
            assert!(matches!(check(bad), Err(Rejection::Invalid(_))), "{bad}");
        }
        // A wrong signature is reported as such even with a stale timestamp.
        let mut forged = signed("1420070400", "tok-1");
        forged["signature"]["token"] = json!("tok-2");
        assert_eq!(
            verify(KEY, &forged, window),
            Err(Rejection::Invalid("signature"))
        );
        // The tolerance is the configured one.
        let narrow = Window {
            now: NOW,
            tolerance_secs: 10,
        };
        assert!(matches!(
            verify(KEY, &signed("1766999989", "t"), narrow),
            Err(Rejection::Stale { .. })
        ));
        assert!(verify(KEY, &signed("1766999990", "t"), narrow).is_ok());
        // Through parse: nothing (no event, no nonce) comes out of a stale request.
        let body = signed("1420070400", "tok-1").to_string();
        let headers = axum::http::HeaderMap::new();
        let req = Incoming {
            headers: &headers,
            body: body.as_bytes(),
            query: None,
            public_base_url: "",
        };
        assert!(matches!(
            parse(KEY, &req, window),
            Err(Rejection::Stale { .. })
        ));
    }

    #[test]
    fn refs() {
        let e = event(json!({"event": "delivered", "id": "abc", "timestamp": 1_700_000_000.5, "user-variables": {"message_id": "9"}, "message": {"headers": {"message-id": "2026.1@mg.example.com"}}})).unwrap();
        assert_eq!(e.key, "mailgun/abc/1700000000.5");
        assert_eq!(e.refs.message_id, Some(9));
        assert_eq!(
            e.refs.provider_message_ids,
            vec!["2026.1@mg.example.com", "<2026.1@mg.example.com>"]
        );
        assert_eq!(e.at, Some(1_700_000_000));
    }
}
