//! SendGrid Event Webhook (Signed Event Webhook).
//!
//! Verification: ECDSA P-256 / SHA-256 over `timestamp + raw body`, where the timestamp is the
//! `X-Twilio-Email-Event-Webhook-Timestamp` header and the signature is the base64 DER in
//! `X-Twilio-Email-Event-Webhook-Signature`; the verification key is the base64 DER public key
//! shown in SendGrid's Mail Settings. The timestamp must be whole Unix seconds within the
//! tolerance of our clock ([`super::Window`]); otherwise 401, before any event is read.
//!
//! Payload: a JSON array of events. Our `custom_args` (`message_id`, `campaign`,
//! `customer_id`, `idempotency_key`) come back as top-level fields of each event.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde_json::Value;

use super::{
    Effect, Event, Incoming, Reason, Refs, Rejection, Window, digest_key, int_of, text_of, unix_of,
};

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The verification key from its base64 DER (SubjectPublicKeyInfo) form.
pub(crate) fn parse_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let compact: String = b64.split_whitespace().collect();
    let der = STANDARD
        .decode(compact)
        .map_err(|e| format!("base64: {e}"))?;
    VerifyingKey::from_public_key_der(&der).map_err(|e| format!("DER: {e}"))
}

fn verify(public_key: &str, req: &Incoming<'_>, window: Window) -> Result<(), Rejection> {
    let signature = req
        .header(SIGNATURE_HEADER)
        .ok_or(Rejection::Missing("signature"))?;
    let timestamp = req
        .header(TIMESTAMP_HEADER)
        .ok_or(Rejection::Missing("signature timestamp"))?;
    let key = parse_public_key(public_key).map_err(|_| {
        Rejection::Misconfigured("the SendGrid verification key is not a base64 P-256 public key")
    })?;
    let der = STANDARD
        .decode(signature)
        .map_err(|_| Rejection::Invalid("signature"))?;
    let signature = Signature::from_der(&der).map_err(|_| Rejection::Invalid("signature"))?;
    let mut signed = Vec::with_capacity(timestamp.len() + req.body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(req.body);
    key.verify(&signed, &signature)
        .map_err(|_| Rejection::Invalid("signature"))?;
    window.check(timestamp)
}

pub(crate) fn parse(
    public_key: &str,
    req: &Incoming<'_>,
    window: Window,
) -> Result<Vec<Event>, Rejection> {
    verify(public_key, req, window)?;
    let body: Value = serde_json::from_slice(req.body)
        .map_err(|e| Rejection::Malformed(format!("not JSON: {e}")))?;
    let Value::Array(items) = body else {
        return Err(Rejection::Malformed(
            "expected a JSON array of events".into(),
        ));
    };
    Ok(items.into_iter().filter_map(event).collect())
}

/// `sg_message_id` is the `X-Message-Id` returned at send time followed by `.filter…` /
/// `.recvd-…` parts: every prefix ending before a dot is a candidate, longest first.
fn provider_ids(sg_message_id: &str) -> Vec<String> {
    let mut out = vec![sg_message_id.to_string()];
    for (i, _) in sg_message_id.rmatch_indices('.') {
        if i > 0 {
            out.push(sg_message_id[..i].to_string());
        }
    }
    out
}

/// A custom arg: top-level (how SendGrid posts them), or nested for robustness.
fn custom_arg<'a>(e: &'a Value, name: &str) -> Option<&'a Value> {
    e.get(name)
        .or_else(|| e.get("custom_args").and_then(|c| c.get(name)))
        .or_else(|| e.get("unique_args").and_then(|c| c.get(name)))
}

fn event(e: Value) -> Option<Event> {
    let kind = e.get("event")?.as_str()?;
    let error = || {
        let reason = text_of(e.get("reason")).unwrap_or_default();
        let status = text_of(e.get("status")).unwrap_or_default();
        format!("sendgrid {kind}: {} {}", status, reason)
            .trim()
            .to_string()
    };
    let effect = match kind {
        "delivered" => Effect::Delivered,
        // type "blocked" is a soft bounce (the receiver refused for now): ignored. A bounce
        // without a type comes from older payloads, where it meant a hard bounce.
        "bounce" => match e.get("type").and_then(Value::as_str).unwrap_or("bounce") {
            "bounce" => Effect::Failed {
                error: error(),
                suppress: Some(Reason::HardBounce),
            },
            _ => return None,
        },
        "dropped" => {
            let reason = e
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            let suppress = if reason.contains("unsubscribed") {
                Some(Reason::Unsubscribe)
            } else if reason.contains("spam") {
                Some(Reason::Complaint)
            } else if reason.contains("bounced") || reason == "invalid" {
                Some(Reason::HardBounce)
            } else {
                None
            };
            Effect::Failed {
                error: error(),
                suppress,
            }
        }
        "spamreport" => Effect::Suppress(Reason::Complaint),
        "unsubscribe" | "group_unsubscribe" => Effect::Suppress(Reason::Unsubscribe),
        _ => return None,
    };
    let key = match text_of(e.get("sg_event_id")) {
        Some(id) => format!("sendgrid/{id}"),
        None => digest_key("sendgrid", &e),
    };
    let refs = Refs {
        message_id: int_of(custom_arg(&e, "message_id")),
        provider_message_ids: text_of(e.get("sg_message_id"))
            .map(|s| provider_ids(&s))
            .unwrap_or_default(),
        customer_id: text_of(custom_arg(&e, "customer_id")),
        email: text_of(e.get("email")),
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
    fn message_id_candidates() {
        assert_eq!(
            provider_ids("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"),
            vec![
                "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
                "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88",
                "14c5d75ce93.dfd.64b469.filter0001.16648",
                "14c5d75ce93.dfd.64b469.filter0001",
                "14c5d75ce93.dfd.64b469",
                "14c5d75ce93.dfd",
                "14c5d75ce93",
            ]
        );
        assert_eq!(provider_ids("abc"), vec!["abc"]);
    }

    #[test]
    fn events_map_to_effects() {
        let ev = |v: Value| event(v).map(|e| e.effect);
        assert_eq!(ev(json!({"event": "delivered"})), Some(Effect::Delivered));
        assert!(matches!(
            ev(json!({"event": "bounce", "type": "bounce"})),
            Some(Effect::Failed {
                suppress: Some(Reason::HardBounce),
                ..
            })
        ));
        assert_eq!(ev(json!({"event": "bounce", "type": "blocked"})), None);
        assert!(matches!(
            ev(json!({"event": "dropped", "reason": "Unsubscribed Address"})),
            Some(Effect::Failed {
                suppress: Some(Reason::Unsubscribe),
                ..
            })
        ));
        assert!(matches!(
            ev(json!({"event": "dropped", "reason": "Bounced Address"})),
            Some(Effect::Failed {
                suppress: Some(Reason::HardBounce),
                ..
            })
        ));
        assert!(matches!(
            ev(json!({"event": "dropped", "reason": "Spam Reporting Address"})),
            Some(Effect::Failed {
                suppress: Some(Reason::Complaint),
                ..
            })
        ));
        assert!(matches!(
            ev(json!({"event": "dropped", "reason": "Recipient List over Package Quota"})),
            Some(Effect::Failed { suppress: None, .. })
        ));
        assert_eq!(
            ev(json!({"event": "spamreport"})),
            Some(Effect::Suppress(Reason::Complaint))
        );
        assert_eq!(
            ev(json!({"event": "group_unsubscribe"})),
            Some(Effect::Suppress(Reason::Unsubscribe))
        );
        for ignored in [
            "open",
            "click",
            "processed",
            "deferred",
            "group_resubscribe",
        ] {
            assert_eq!(ev(json!({"event": ignored})), None, "{ignored}");
        }
        assert_eq!(ev(json!({"no": "event"})), None);
    }

    #[test]
    fn refs_come_from_custom_args() {
        let e = event(json!({"event": "delivered", "sg_event_id": "E1", "sg_message_id": "X.filter1", "message_id": "17", "customer_id": "c-1", "email": "a@b.c", "timestamp": 1_700_000_000})).unwrap();
        assert_eq!(e.key, "sendgrid/E1");
        assert_eq!(e.refs.message_id, Some(17));
        assert_eq!(e.refs.customer_id.as_deref(), Some("c-1"));
        assert_eq!(e.refs.provider_message_ids, vec!["X.filter1", "X"]);
        assert_eq!(e.at, Some(1_700_000_000));
        let nested =
            event(json!({"event": "delivered", "custom_args": {"message_id": 5}})).unwrap();
        assert_eq!(nested.refs.message_id, Some(5));
        assert!(nested.key.starts_with("sendgrid/sha256:"));
    }
}

#[cfg(test)]
mod vector {
    use super::*;

    /// The signed sample in SendGrid's own SDK tests (@sendgrid/eventwebhook): a signature made
    /// by another implementation verifies here.
    #[test]
    fn sendgrid_sdk_sample_verifies() {
        const KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
        const SIG: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
        let check = |timestamp: &str, body: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(SIGNATURE_HEADER, SIG.parse().unwrap());
            headers.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
            // The sample was signed in 2020: checked with our clock at its timestamp.
            verify(
                KEY,
                &Incoming {
                    headers: &headers,
                    body: body.as_bytes(),
                    query: None,
                    public_base_url: "",
                },
                Window {
                    now: 1_588_788_367,
                    tolerance_secs: 300,
                },
            )
        };
        let payload =
            r#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
        assert_eq!(check("1588788367", payload), Ok(()));
        assert_eq!(
            check("1588788368", payload),
            Err(Rejection::Invalid("signature"))
        );
        assert_eq!(
            check("1588788367", &payload.replace("test_event", "delivered")),
            Err(Rejection::Invalid("signature"))
        );
    }
}

#[cfg(test)]
mod window {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    use super::*;

    const NOW: i64 = 1_767_000_000;

    /// Verifies `body` signed at `timestamp` with a fixed key, our clock at [`NOW`].
    fn check(timestamp: &str, tolerance_secs: u32) -> Result<(), Rejection> {
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let public = STANDARD.encode(sk.verifying_key().to_public_key_der().unwrap().as_bytes());
        let body = r#"[{"event":"spamreport","sg_event_id":"x","email":"a@example.com"}]"#;
        let sig: Signature = sk.sign(format!("{timestamp}{body}").as_bytes());
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            STANDARD.encode(sig.to_der().as_bytes()).parse().unwrap(),
        );
        headers.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
        let req = Incoming {
            headers: &headers,
            body: body.as_bytes(),
            query: None,
            public_base_url: "",
        };
        parse(
            &public,
            &req,
            Window {
                now: NOW,
                tolerance_secs,
            },
        )
        .map(|events| assert_eq!(events.len(), 1))
    }

    #[test]
    fn signed_timestamp_must_be_recent_and_numeric() {
        assert_eq!(check("1767000000", 300), Ok(()));
        assert_eq!(check("1766999700", 300), Ok(()), "the tolerance ago");
        assert_eq!(check("1767000300", 300), Ok(()), "the tolerance ahead");
        assert!(
            matches!(check("1420070400", 300), Err(Rejection::Stale { .. })),
            "2015"
        );
        assert!(matches!(
            check("1766999699", 300),
            Err(Rejection::Stale { age_secs: 301, .. })
        ));
        assert!(matches!(
            check("1767000301", 300),
            Err(Rejection::Stale { age_secs: -301, .. })
        ));
        // Correctly signed over a non-numeric timestamp.
        for bad in ["soon", "1767000000.0", "1.767e9"] {
            assert!(
                matches!(check(bad, 300), Err(Rejection::Invalid(_))),
                "{bad}"
            );
        }
        assert!(
            matches!(check("1766999939", 60), Err(Rejection::Stale { .. })),
            "the configured tolerance"
        );
        assert_eq!(check("1766999940", 60), Ok(()));
    }
}
