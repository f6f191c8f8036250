//! A generic signed JSON webhook, for brands whose sending runs elsewhere (their own ESP
//! integration, a CDP, a queue).
//!
//! ## The receiver's contract
//!
//! retentiond sends `POST {url}` with `Content-Type: application/json` and the body
//! `{"message_id", "idempotency_key", "campaign", "customer_id", "channel", "to", "content"}`
//! (see [`super::Outgoing::to_json`]), and these headers:
//!
//! - `Idempotency-Key`: `campaign/customer/day`. The same message always carries the same key,
//!   and it may arrive more than once (after a timeout or a crash): **a receiver must treat a
//!   key it has already accepted as a success and not send again.** That is why this provider
//!   reports [`Provider::honours_idempotency_key`] = true.
//! - `X-Retentiond-Timestamp`: Unix seconds when the request was signed.
//! - `X-Retentiond-Signature`: `v1=` + lower-case hex of
//!   HMAC-SHA256(secret, timestamp + "." + raw body). Receivers should recompute it over the raw
//!   bytes, compare in constant time, and reject timestamps more than 5 minutes old.
//!
//! Replies: any 2xx accepts (an optional JSON `{"id": "…"}` is kept as the provider's message
//! id); 408, 429 (with `Retry-After`) and 5xx are retried; other 4xx fail the message, and a 4xx
//! with JSON `{"bad_address": true}` also marks the recipient as invalid.
//!
//! ## Reporting back
//!
//! A receiver reports what became of a message by posting JSON events
//! (`{"event_id", "message_id", "event": "delivered" | "bounced" | "complained" | "unsubscribed"
//! | "stop", "customer_id"?}`, one object or an array) to `POST /webhooks/retentiond` on the
//! daemon's HTTP server, signed the same way with the same secret. Unsigned, badly signed or
//! stale (further from our clock than `http.webhooks.tolerance_seconds`, default 5 minutes)
//! requests get 401; see `crate::http` (`webhooks::retentiond`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::config::WebhookSettings;
use super::http;
use super::{Accepted, Outgoing, Provider, SendError, traced};
use crate::campaigns::Channel;

pub const TIMESTAMP_HEADER: &str = "X-Retentiond-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Retentiond-Signature";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a token in its query: show scheme, host and path only.
        let shown = self.url.split(['?', '#']).next().unwrap_or("");
        f.debug_struct("Webhook")
            .field("url", &crate::config::redact_url(shown))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `v1=` + hex(HMAC-SHA256(secret, timestamp + "." + body)).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 2 * tag.len());
    out.push_str("v1=");
    for b in tag.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks a signature header as a receiver would (constant-time comparison).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("v1=") else {
        return false;
    };
    let Some(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

impl Webhook {
    pub fn new(s: &WebhookSettings, secret: Vec<u8>) -> Result<Webhook, reqwest::Error> {
        Ok(Webhook {
            client: http::client(Duration::from_millis(s.timeout_ms))?,
            url: s.url.clone(),
            secret,
        })
    }

    async fn post(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        let to = msg.recipient();
        let body = serde_json::to_vec(&msg.to_json())
            .map_err(|e| SendError::permanent(format!("cannot encode the message: {e}")))?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let req = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_HEADER, msg.idempotency_key)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(&self.secret, timestamp, &body))
            .body(body);
        let reply = http::execute(req, to).await?;
        let json = reply.json();
        if reply.is_success() {
            // The id is optional in the receiver's contract (a bare 204 is normal), and a 2xx
            // body that is not JSON is still an acceptance: no warning here.
            let id = json
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(Accepted {
                provider_message_id: id,
            });
        }
        let detail = json
            .as_ref()
            .and_then(|v| v.get("error").or_else(|| v.get("message")))
            .and_then(Value::as_str);
        let mut err = reply.error(detail, to);
        if let SendError::Permanent { bad_address, .. } = &mut err {
            *bad_address = json
                .as_ref()
                .and_then(|v| v.get("bad_address"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        Err(err)
    }
}

#[async_trait::async_trait]
impl Provider for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email, Channel::Sms, Channel::Whatsapp]
    }

    /// Receivers must deduplicate on `Idempotency-Key` (the documented contract).
    fn honours_idempotency_key(&self) -> bool {
        true
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        traced(self.name(), msg, self.post(msg)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::delivery::providers::testutil;
    use crate::selection::offer::Rendered;

    const SECRET: &[u8] = b"whsec-0123456789abcdef";

    fn provider(server: &MockServer) -> Webhook {
        provider_at(server.uri())
    }

    fn provider_at(base_url: String) -> Webhook {
        let s = WebhookSettings {
            url: format!("{base_url}/hooks/retentiond?token=abc"),
            timeout_ms: 300,
            ..Default::default()
        };
        Webhook::new(&s, SECRET.to_vec()).unwrap()
    }

    async fn reply_with(template: ResponseTemplate) -> Result<Accepted, SendError> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/hooks/retentiond"))
            .respond_with(template)
            .mount(&server)
            .await;
        let r = testutil::sms();
        provider(&server).send(&testutil::outgoing(&r)).await
    }

    #[tokio::test]
    async fn posts_a_signed_message() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/hooks/retentiond"))
            .and(header("content-type", "application/json"))
            .and(header("idempotency-key", testutil::KEY))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "rcv-981" })))
            .expect(1)
            .mount(&server)
            .await;
        let r = testutil::email();
        let p = provider(&server);
        let accepted = p.send(&testutil::outgoing(&r)).await.unwrap();
        assert_eq!(accepted.provider_message_id.as_deref(), Some("rcv-981"));
        assert!(p.honours_idempotency_key());

        let req = &server.received_requests().await.unwrap()[0];
        let ts: u64 = req
            .headers
            .get(TIMESTAMP_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = req.headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(ts) < 60);
        // The documented formula, computed independently of `signature`.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&req.body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("v1={expected}"));
        assert!(verify(SECRET, ts, &req.body, sig));
        assert!(!verify(b"other-secret", ts, &req.body, sig));
        assert!(!verify(SECRET, ts + 1, &req.body, sig));

        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let Rendered::Email { email, .. } = &r else {
            unreachable!()
        };
        assert_eq!(
            body,
            json!({
                "message_id": 4711,
                "idempotency_key": testutil::KEY,
                "campaign": "spring-winback",
                "customer_id": "C-10042",
                "channel": "email",
                "to": "asha.rao@example.com",
                "content": serde_json::to_value(email).unwrap(),
            })
        );
        assert!(!format!("{p:?}").contains("token=abc") && !format!("{p:?}").contains("whsec"));
    }

    #[tokio::test]
    async fn replies_map_to_outcomes() {
        let err = reply_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({ "error": "unknown number", "bad_address": true })),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Permanent {
                    status: Some(422),
                    bad_address: true,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = reply_with(ResponseTemplate::new(400).set_body_string("nope"))
            .await
            .unwrap_err();
        assert!(err.is_permanent() && !err.is_bad_address(), "{err:?}");
        let err = reply_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(7)),
            "{err:?}"
        );
        let err = reply_with(ResponseTemplate::new(503)).await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Transient {
                    status: Some(503),
                    ..
                }
            ),
            "{err:?}"
        );
        let err = reply_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: None, .. }),
            "{err:?}"
        );
        assert!(!err.reason().contains("token=abc"), "{err:?}");
        assert_eq!(
            reply_with(ResponseTemplate::new(204)).await.unwrap(),
            Accepted {
                provider_message_id: None
            }
        );
    }

    testutil::failure_class_tests! {
        reply_with: reply_with,
        provider_at: provider_at,
        message: testutil::sms,
        accepted: ResponseTemplate::new(200).set_body_json(json!({ "id": "rcv-981" })),
        rate_limited: ResponseTemplate::new(429).set_body_json(json!({ "error": "slow down" })),
        // The receiver's `{"id"}` is optional: a 2xx is an acceptance whatever its body.
        malformed_success: ResponseTemplate::new(200).set_body_raw(testutil::TRUNCATED_JSON, "application/json")
            => Ok(Accepted { provider_message_id: None }),
        invalid_recipient: ResponseTemplate::new(422).set_body_json(json!({ "error": "+919812345678 is not a number we can reach", "bad_address": true })),
    }
}
