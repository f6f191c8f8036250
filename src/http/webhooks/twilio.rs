//! Twilio Messaging webhooks (status callbacks and inbound messages, SMS and WhatsApp).
//!
//! Verification: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + each POST parameter's
//! name and value, sorted by name)), where URL is the public URL Twilio called:
//! `{public_base_url}/webhooks/twilio`, with the query string if there was one.
//!
//! Status callbacks (`MessageStatus`): delivered / read → delivered; undelivered / failed →
//! failed, suppressing the channel for ErrorCode 21211 (invalid number), 21614 (not a mobile
//! number) and 21610 (the recipient had replied STOP). Matched by `MessageSid`, or by a
//! `message_id` query parameter the dispatcher may put on the StatusCallback URL (which avoids
//! the race between the callback and the dispatcher recording the sid).
//!
//! Inbound messages (`Body`): STOP keywords suppress the sender's channel (whatsapp when
//! `From` starts with `whatsapp:`, else sms) for the customers with that phone number.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac as _};
use serde_json::Value;
use sha1::Sha1;

use super::{Effect, Event, Incoming, Reason, Refs, Rejection, is_stop};

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The string Twilio signs.
pub(crate) fn signed_data(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    data
}

/// base64(HMAC-SHA1(token, data)) (what Twilio sends; verification compares in constant time).
#[cfg(test)]
pub(crate) fn signature(auth_token: &str, data: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn public_url(req: &Incoming<'_>) -> String {
    match req.query {
        Some(q) if !q.is_empty() => format!("{}/webhooks/twilio?{q}", req.public_base_url),
        _ => format!("{}/webhooks/twilio", req.public_base_url),
    }
}

fn verify(
    auth_token: &str,
    req: &Incoming<'_>,
    params: &[(String, String)],
) -> Result<(), Rejection> {
    let given = req
        .header(SIGNATURE_HEADER)
        .ok_or(Rejection::Missing("signature"))?;
    let given = STANDARD
        .decode(given)
        .map_err(|_| Rejection::Invalid("signature"))?;
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(signed_data(&public_url(req), params).as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| Rejection::Invalid("signature"))
}

pub(crate) fn parse(auth_token: &str, req: &Incoming<'_>) -> Result<Vec<Event>, Rejection> {
    let params: Vec<(String, String)> = form_urlencoded::parse(req.body).into_owned().collect();
    verify(auth_token, req, &params)?;
    let query_message_id = req.query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "message_id")
            .and_then(|(_, v)| v.trim().parse().ok())
    });
    let map: BTreeMap<String, String> = params.into_iter().rev().collect(); // first value wins
    Ok(event(&map, query_message_id).into_iter().collect())
}

fn channel_of(address: &str) -> &'static str {
    if address.starts_with("whatsapp:") {
        "whatsapp"
    } else {
        "sms"
    }
}

fn event(p: &BTreeMap<String, String>, query_message_id: Option<i64>) -> Option<Event> {
    let get = |k: &str| p.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let sid = get("MessageSid").or_else(|| get("SmsSid"))?;
    let payload = Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    let status = get("MessageStatus").or_else(|| get("SmsStatus"));
    let inbound = get("Body").is_some() && matches!(status, None | Some("received"));
    if inbound {
        let body = get("Body")?;
        if !is_stop(body) {
            return None;
        }
        let from = get("From")?;
        let refs = Refs {
            phone: Some(from.trim_start_matches("whatsapp:").to_string()),
            channel: channel_of(from),
            ..Refs::default()
        };
        return Some(Event {
            key: format!("twilio/{sid}"),
            effect: Effect::Suppress(Reason::Stop),
            refs,
            at: None,
            payload,
        });
    }
    let status = status?;
    let effect = match status {
        "delivered" | "read" => Effect::Delivered,
        "undelivered" | "failed" => {
            let code = get("ErrorCode").unwrap_or("");
            let suppress = match code {
                "21211" | "21614" => Some(Reason::HardBounce),
                "21610" => Some(Reason::Stop),
                _ => None,
            };
            let message = get("ErrorMessage").unwrap_or("");
            Effect::Failed {
                error: format!("twilio {status} {code}: {message}")
                    .trim()
                    .trim_end_matches(':')
                    .to_string(),
                suppress,
            }
        }
        _ => return None, // queued, sending, sent, accepted, scheduled, …
    };
    let to = get("To").unwrap_or("");
    let refs = Refs {
        message_id: query_message_id,
        provider_message_ids: vec![sid.to_string()],
        phone: Some(to.trim_start_matches("whatsapp:").to_string()).filter(|s| !s.is_empty()),
        channel: channel_of(to),
        ..Refs::default()
    };
    Some(Event {
        key: format!("twilio/{sid}/{status}"),
        effect,
        refs,
        at: None,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in Twilio's security documentation.
    #[test]
    fn documented_example_signature() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            signature("12345", &signed_data(url, &params)),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn status_callbacks() {
        let e = event(
            &params(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "delivered"),
                ("To", "+15550001111"),
            ]),
            Some(3),
        )
        .unwrap();
        assert_eq!(e.effect, Effect::Delivered);
        assert_eq!(e.key, "twilio/SM1/delivered");
        assert_eq!(e.refs.message_id, Some(3));
        assert_eq!(e.refs.channel, "sms");
        let f = event(
            &params(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "21610"),
                ("To", "whatsapp:+1555"),
            ]),
            None,
        )
        .unwrap();
        assert!(matches!(
            f.effect,
            Effect::Failed {
                suppress: Some(Reason::Stop),
                ..
            }
        ));
        assert_eq!(f.refs.channel, "whatsapp");
        let soft = event(
            &params(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "failed"),
                ("ErrorCode", "30003"),
            ]),
            None,
        )
        .unwrap();
        assert!(matches!(soft.effect, Effect::Failed { suppress: None, .. }));
        assert!(
            event(
                &params(&[("MessageSid", "SM1"), ("MessageStatus", "sent")]),
                None
            )
            .is_none()
        );
    }

    #[test]
    fn inbound_stop() {
        let e = event(
            &params(&[
                ("MessageSid", "SM9"),
                ("SmsStatus", "received"),
                ("Body", " Stop "),
                ("From", "whatsapp:+919876543210"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(e.effect, Effect::Suppress(Reason::Stop));
        assert_eq!(e.refs.channel, "whatsapp");
        assert_eq!(e.refs.phone.as_deref(), Some("+919876543210"));
        assert!(
            event(
                &params(&[("MessageSid", "SM9"), ("Body", "hello"), ("From", "+1555")]),
                None
            )
            .is_none()
        );
    }
}
