//! Postmark webhooks. Postmark does not sign requests: the webhook URL carries HTTP Basic auth
//! credentials (`https://user:pass@host/webhooks/postmark`), compared here in constant time.
//!
//! Payload: one JSON object per request, by `RecordType`: Delivery, Bounce (`Type`
//! HardBounce / BadEmailAddress are permanent), SpamComplaint, SubscriptionChange
//! (`SuppressSending` true = the address was suppressed). Our `message_id` / `customer_id` come
//! back in `Metadata`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Effect, Event, Incoming, Reason, Refs, Rejection, digest_key, int_of, text_of};

fn verify(expected: &str, req: &Incoming<'_>) -> Result<(), Rejection> {
    let auth = req
        .header("authorization")
        .ok_or(Rejection::Missing("credentials"))?;
    let (scheme, encoded) = auth
        .split_once(' ')
        .ok_or(Rejection::Invalid("credentials"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Rejection::Invalid("credentials"));
    }
    let given = STANDARD
        .decode(encoded.trim())
        .map_err(|_| Rejection::Invalid("credentials"))?;
    // Digests first: equal lengths, so the comparison leaks nothing about the length either.
    let (a, b) = (Sha256::digest(&given), Sha256::digest(expected.as_bytes()));
    if bool::from(a.as_slice().ct_eq(b.as_slice())) {
        Ok(())
    } else {
        Err(Rejection::Invalid("credentials"))
    }
}

pub(crate) fn parse(credentials: &str, req: &Incoming<'_>) -> Result<Vec<Event>, Rejection> {
    verify(credentials, req)?;
    let body: Value = serde_json::from_slice(req.body)
        .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
    if !body.is_object() {
        return Err(Rejection::Malformed("expected a JSON object".into()));
    }
    Ok(event(body).into_iter().collect())
}

fn event(e: Value) -> Option<Event> {
    let record_type = e.get("RecordType")?.as_str()?.to_string();
    let effect = match record_type.as_str() {
        "Delivery" => Effect::Delivered,
        "Bounce" => match e.get("Type").and_then(Value::as_str) {
            Some("HardBounce" | "BadEmailAddress") => {
                let what = text_of(e.get("Description"))
                    .or_else(|| text_of(e.get("Details")))
                    .unwrap_or_default();
                let ty = text_of(e.get("Type")).unwrap_or_default();
                Effect::Failed {
                    error: format!("postmark {ty}: {what}").trim().to_string(),
                    suppress: Some(Reason::HardBounce),
                }
            }
            _ => return None, // soft bounces, transient failures, auto-responders…
        },
        "SpamComplaint" => Effect::Suppress(Reason::Complaint),
        "SubscriptionChange" => {
            if e.get("SuppressSending").and_then(Value::as_bool) != Some(true) {
                return None; // a reactivation: suppressions are lifted by hand only
            }
            match e.get("SuppressionReason").and_then(Value::as_str) {
                Some("HardBounce") => Effect::Suppress(Reason::HardBounce),
                Some("SpamComplaint") => Effect::Suppress(Reason::Complaint),
                _ => Effect::Suppress(Reason::Unsubscribe), // ManualSuppression: the recipient unsubscribed
            }
        }
        _ => return None, // Open, Click, …
    };
    let key = match (record_type.as_str(), int_of(e.get("ID"))) {
        ("Bounce" | "SpamComplaint", Some(id)) => format!("postmark/{record_type}/{id}"),
        _ => digest_key("postmark", &e),
    };
    let metadata = e.get("Metadata");
    let refs = Refs {
        message_id: int_of(metadata.and_then(|m| m.get("message_id"))),
        provider_message_ids: text_of(e.get("MessageID")).into_iter().collect(),
        customer_id: text_of(metadata.and_then(|m| m.get("customer_id"))),
        email: text_of(e.get("Email")).or_else(|| text_of(e.get("Recipient"))),
        phone: None,
        channel: "email",
    };
    let at = ["DeliveredAt", "BouncedAt", "ChangedAt"]
        .iter()
        .find_map(|k| e.get(*k).and_then(Value::as_str))
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp());
    Some(Event {
        key,
        effect,
        refs,
        at,
        payload: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_types() {
        let ev = |v: Value| event(v).map(|e| e.effect);
        assert_eq!(
            ev(json!({"RecordType": "Delivery"})),
            Some(Effect::Delivered)
        );
        assert!(matches!(
            ev(json!({"RecordType": "Bounce", "Type": "HardBounce"})),
            Some(Effect::Failed {
                suppress: Some(Reason::HardBounce),
                ..
            })
        ));
        assert_eq!(
            ev(json!({"RecordType": "Bounce", "Type": "SoftBounce"})),
            None
        );
        assert_eq!(
            ev(json!({"RecordType": "SpamComplaint"})),
            Some(Effect::Suppress(Reason::Complaint))
        );
        assert_eq!(
            ev(
                json!({"RecordType": "SubscriptionChange", "SuppressSending": true, "SuppressionReason": "ManualSuppression"})
            ),
            Some(Effect::Suppress(Reason::Unsubscribe))
        );
        assert_eq!(
            ev(json!({"RecordType": "SubscriptionChange", "SuppressSending": false})),
            None
        );
        assert_eq!(ev(json!({"RecordType": "Open"})), None);
    }

    #[test]
    fn keys_and_refs() {
        let e = event(json!({"RecordType": "Bounce", "Type": "HardBounce", "ID": 42, "MessageID": "pm-1", "Email": "x@y.z", "Metadata": {"message_id": "7"}, "BouncedAt": "2026-01-02T03:04:05Z"})).unwrap();
        assert_eq!(e.key, "postmark/Bounce/42");
        assert_eq!(e.refs.message_id, Some(7));
        assert_eq!(e.refs.provider_message_ids, vec!["pm-1"]);
        assert_eq!(e.at, Some(1_767_323_045));
        let d = event(json!({"RecordType": "Delivery", "MessageID": "pm-1", "Recipient": "x@y.z"}))
            .unwrap();
        assert!(d.key.starts_with("postmark/sha256:"));
        assert_eq!(d.refs.email.as_deref(), Some("x@y.z"));
    }
}
