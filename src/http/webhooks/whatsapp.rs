//! WhatsApp Cloud API (Meta) webhooks.
//!
//! Verification: `X-Hub-Signature-256: sha256=` + hex(HMAC-SHA256(app secret, raw body)).
//! Subscription: `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` echoes the
//! challenge when the token matches.
//!
//! Payload: `entry[].changes[].value` with `statuses[]` (delivered / read → delivered; failed →
//! failed, suppressing whatsapp for error 131026 "undeliverable" as a hard bounce and 131050
//! "stopped marketing messages" as an unsubscribe), matched by `id` = provider_message_id or
//! by `biz_opaque_callback_data` = our message_id; and `messages[]`, where a STOP keyword
//! suppresses whatsapp for the customers with that number (WhatsApp numbers have no `+`:
//! numbers are compared on digits).

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use hmac::{Hmac, KeyInit, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::{
    Effect, Event, Incoming, Reason, Refs, Rejection, int_of, is_stop, text_of, unhex, unix_of,
};
use crate::http::plain;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Meta error codes that mean the number cannot receive WhatsApp messages.
pub const HARD_FAILURE_CODES: [i64; 1] = [131026];
/// Meta error codes that mean the recipient opted out of the business's marketing messages.
pub const OPTED_OUT_CODES: [i64; 1] = [131050];

fn verify(app_secret: &str, req: &Incoming<'_>) -> Result<(), Rejection> {
    let header = req
        .header(SIGNATURE_HEADER)
        .ok_or(Rejection::Missing("signature"))?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or(Rejection::Invalid("signature"))?;
    let given = unhex(hex).ok_or(Rejection::Invalid("signature"))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(req.body);
    mac.verify_slice(&given)
        .map_err(|_| Rejection::Invalid("signature"))
}

/// The subscription handshake; 404 when no verify token is configured.
pub(crate) fn handshake(verify_token: Option<&str>, q: &HashMap<String, String>) -> Response {
    let Some(expected) = verify_token else {
        return plain(StatusCode::NOT_FOUND, "whatsapp webhook not configured");
    };
    let mode = q.get("hub.mode").map(String::as_str);
    let token = q.get("hub.verify_token").map(String::as_str).unwrap_or("");
    let challenge = q.get("hub.challenge").map(String::as_str).unwrap_or("");
    let token_ok = bool::from(token.as_bytes().ct_eq(expected.as_bytes()));
    if mode == Some("subscribe") && token_ok && !challenge.is_empty() && challenge.len() <= 512 {
        tracing::info!("whatsapp webhook subscription verified");
        let mut r = plain(StatusCode::OK, challenge);
        r.headers_mut().insert(
            "x-content-type-options",
            axum::http::HeaderValue::from_static("nosniff"),
        );
        r
    } else {
        tracing::warn!("whatsapp webhook subscription refused");
        plain(StatusCode::FORBIDDEN, "verification failed")
    }
}

pub(crate) fn parse(app_secret: &str, req: &Incoming<'_>) -> Result<Vec<Event>, Rejection> {
    verify(app_secret, req)?;
    let body: Value = serde_json::from_slice(req.body)
        .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
    let mut events = Vec::new();
    let empty = Vec::new();
    let arr = |v: Option<&Value>| v.and_then(Value::as_array).unwrap_or(&empty).clone();
    for entry in arr(body.get("entry")) {
        for change in arr(entry.get("changes")) {
            let Some(value) = change.get("value") else {
                continue;
            };
            events.extend(
                arr(value.get("statuses"))
                    .into_iter()
                    .filter_map(status_event),
            );
            events.extend(
                arr(value.get("messages"))
                    .into_iter()
                    .filter_map(message_event),
            );
        }
    }
    Ok(events)
}

fn status_event(s: Value) -> Option<Event> {
    let id = text_of(s.get("id"))?;
    let status = s.get("status")?.as_str()?.to_string();
    let effect = match status.as_str() {
        "delivered" | "read" => Effect::Delivered,
        "failed" => {
            let err = s
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|a| a.first());
            let code = int_of(err.and_then(|e| e.get("code")));
            let title = text_of(err.and_then(|e| e.get("title")))
                .or_else(|| text_of(err.and_then(|e| e.get("message"))))
                .unwrap_or_default();
            let suppress = match code {
                Some(c) if HARD_FAILURE_CODES.contains(&c) => Some(Reason::HardBounce),
                Some(c) if OPTED_OUT_CODES.contains(&c) => Some(Reason::Unsubscribe),
                _ => None,
            };
            let code = code.map(|c| c.to_string()).unwrap_or_default();
            Effect::Failed {
                error: format!("whatsapp {code}: {title}")
                    .trim()
                    .trim_end_matches(':')
                    .to_string(),
                suppress,
            }
        }
        _ => return None, // sent, deleted, …
    };
    let refs = Refs {
        message_id: int_of(s.get("biz_opaque_callback_data")),
        provider_message_ids: vec![id.clone()],
        phone: text_of(s.get("recipient_id")),
        channel: "whatsapp",
        ..Refs::default()
    };
    Some(Event {
        key: format!("whatsapp/{id}/{status}"),
        effect,
        refs,
        at: unix_of(s.get("timestamp")),
        payload: s,
    })
}

fn message_event(m: Value) -> Option<Event> {
    let text = m
        .get("text")
        .and_then(|t| t.get("body"))
        .or_else(|| m.get("button").and_then(|b| b.get("text")))
        .and_then(Value::as_str)?;
    if !is_stop(text) {
        return None;
    }
    let id = text_of(m.get("id"))?;
    let refs = Refs {
        phone: Some(text_of(m.get("from"))?),
        channel: "whatsapp",
        ..Refs::default()
    };
    Some(Event {
        key: format!("whatsapp/{id}"),
        effect: Effect::Suppress(Reason::Stop),
        refs,
        at: unix_of(m.get("timestamp")),
        payload: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// HMAC-SHA256("secret", "test"), a published example of Meta's scheme.
    #[test]
    fn known_signature_verifies() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
                .parse()
                .unwrap(),
        );
        let req = |body: &'static [u8]| Incoming {
            headers: &headers,
            body,
            query: None,
            public_base_url: "",
        };
        assert_eq!(verify("secret", &req(b"test")), Ok(()));
        assert_eq!(
            verify("secret", &req(b"test ")),
            Err(Rejection::Invalid("signature"))
        );
        assert_eq!(
            verify("Secret", &req(b"test")),
            Err(Rejection::Invalid("signature"))
        );
    }

    #[test]
    fn statuses() {
        let d = status_event(json!({"id": "wamid.1", "status": "delivered", "timestamp": "1700000000", "recipient_id": "919876543210"})).unwrap();
        assert_eq!(d.effect, Effect::Delivered);
        assert_eq!(d.key, "whatsapp/wamid.1/delivered");
        assert_eq!(d.at, Some(1_700_000_000));
        let hard = status_event(json!({"id": "wamid.1", "status": "failed", "errors": [{"code": 131026, "title": "Message undeliverable"}]})).unwrap();
        assert_eq!(
            hard.effect,
            Effect::Failed {
                error: "whatsapp 131026: Message undeliverable".into(),
                suppress: Some(Reason::HardBounce)
            }
        );
        let soft = status_event(
            json!({"id": "wamid.1", "status": "failed", "errors": [{"code": 131047}]}),
        )
        .unwrap();
        assert!(matches!(soft.effect, Effect::Failed { suppress: None, .. }));
        assert!(status_event(json!({"id": "wamid.1", "status": "sent"})).is_none());
        let opaque = status_event(
            json!({"id": "wamid.1", "status": "read", "biz_opaque_callback_data": "12"}),
        )
        .unwrap();
        assert_eq!(opaque.refs.message_id, Some(12));
    }

    #[test]
    fn messages() {
        let m = message_event(json!({"id": "wamid.9", "from": "919876543210", "type": "text", "text": {"body": "STOP"}})).unwrap();
        assert_eq!(m.effect, Effect::Suppress(Reason::Stop));
        assert_eq!(m.refs.phone.as_deref(), Some("919876543210"));
        assert!(
            message_event(
                json!({"id": "wamid.9", "from": "91", "type": "text", "text": {"body": "hi"}})
            )
            .is_none()
        );
        assert!(
            message_event(
                json!({"id": "wamid.9", "from": "91", "type": "button", "button": {"text": "Stop"}})
            )
            .is_some()
        );
    }

    #[test]
    fn handshake_echoes_only_for_the_right_token() {
        let q = |mode: &str, token: &str| -> HashMap<String, String> {
            [
                ("hub.mode", mode),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        assert_eq!(
            handshake(Some("tok"), &q("subscribe", "tok")).status(),
            StatusCode::OK
        );
        assert_eq!(
            handshake(Some("tok"), &q("subscribe", "bad")).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            handshake(Some("tok"), &q("unsubscribe", "tok")).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            handshake(None, &q("subscribe", "tok")).status(),
            StatusCode::NOT_FOUND
        );
    }
}
