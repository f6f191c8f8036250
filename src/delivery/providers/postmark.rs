//! Postmark Email API: `POST {base_url}/email` with the `X-Postmark-Server-Token` header.
//!
//! The reply is JSON with `ErrorCode` (0 = accepted) and `MessageID`. Errors are mostly HTTP 422
//! with an `ErrorCode`: 406 (inactive recipient: it bounced hard, complained or was suppressed)
//! and 300 (invalid email request) about the `To` address mean the recipient is bad; other codes
//! are permanent failures of the request or the account; 429 and 5xx are transient.
//! Postmark has no idempotency key.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::PostmarkSettings;
use super::http::{self, Reply};
use super::{Accepted, Outgoing, Provider, SendError, sanitize_reason, traced, wrong_channel};
use crate::campaigns::Channel;
use crate::messages::RenderedEmail;
use crate::selection::offer::Rendered;

/// Postmark's limit on a metadata value's length.
const METADATA_VALUE_MAX: usize = 80;

pub struct Postmark {
    client: reqwest::Client,
    endpoint: String,
    server_token: String,
    from: String,
    message_stream: String,
}

impl std::fmt::Debug for Postmark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postmark")
            .field("endpoint", &self.endpoint)
            .field("server_token", &"<redacted>")
            .field("from", &self.from)
            .field("message_stream", &self.message_stream)
            .finish()
    }
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl Postmark {
    pub fn new(s: &PostmarkSettings, server_token: String) -> Result<Postmark, reqwest::Error> {
        Ok(Postmark {
            client: http::client(Duration::from_millis(s.timeout_ms))?,
            endpoint: format!("{}/email", s.base_url.trim_end_matches('/')),
            server_token,
            from: s.from.clone(),
            message_stream: s.message_stream.clone(),
        })
    }

    /// The request body for one email.
    pub fn body(&self, msg: &Outgoing<'_>, to: &str, email: &RenderedEmail) -> Value {
        let headers: Vec<Value> = [
            ("List-Unsubscribe", &email.list_unsubscribe),
            ("List-Unsubscribe-Post", &email.list_unsubscribe_post),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| json!({ "Name": n, "Value": v }))
        .collect();
        let mut body = json!({
            "From": self.from,
            "To": to,
            "Subject": email.subject,
            "HtmlBody": email.html,
            "TextBody": email.text,
            "Tag": msg.tag(),
            "Headers": headers,
            "MessageStream": self.message_stream,
            "Metadata": {
                "message_id": msg.message_id.to_string(),
                "campaign": cut(msg.campaign, METADATA_VALUE_MAX),
                "customer_id": cut(msg.customer_id, METADATA_VALUE_MAX),
                "idempotency_key": cut(msg.idempotency_key, METADATA_VALUE_MAX),
            },
        });
        if msg.test {
            body["Metadata"]["test"] = json!("true");
        }
        body
    }

    async fn send_email(
        &self,
        msg: &Outgoing<'_>,
        to: &str,
        email: &RenderedEmail,
    ) -> Result<Accepted, SendError> {
        let req = self
            .client
            .post(&self.endpoint)
            .header("X-Postmark-Server-Token", &self.server_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&self.body(msg, to, email));
        let reply = http::execute(req, to).await?;
        let json = reply.json();
        let code = json
            .as_ref()
            .and_then(|v| v.get("ErrorCode"))
            .and_then(Value::as_i64);
        let message = json
            .as_ref()
            .and_then(|v| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if reply.is_success() && code.unwrap_or(0) == 0 {
            // A 2xx body that is not JSON has no ErrorCode: accepted (see `http`).
            let id = json
                .as_ref()
                .and_then(|v| v.get("MessageID"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(reply.accepted(id));
        }
        Err(error(&reply, code, message, to))
    }
}

fn error(reply: &Reply, code: Option<i64>, message: &str, to: &str) -> SendError {
    let Some(code) = code.filter(|c| *c != 0) else {
        return reply.error(Some(message), to);
    };
    let reason = sanitize_reason(
        &format!("HTTP {} ErrorCode {code}: {message}", reply.status),
        to,
    );
    let status = Some(reply.status);
    match code {
        // Inactive recipient: hard bounce, spam complaint or manual suppression.
        406 => SendError::Permanent {
            status,
            reason,
            bad_address: true,
        },
        // Invalid email request: the recipient's fault only when it is about the To address.
        300 => SendError::Permanent {
            status,
            reason,
            bad_address: message.contains("'To'") || message.contains("recipient"),
        },
        429 => SendError::Transient {
            status,
            reason,
            retry_after: reply.retry_after(),
        },
        // Maintenance.
        100 => SendError::Transient {
            status,
            reason,
            retry_after: reply.retry_after(),
        },
        _ if reply.status >= 500 || reply.status == 429 => SendError::Transient {
            status,
            reason,
            retry_after: reply.retry_after(),
        },
        _ => SendError::Permanent {
            status,
            reason,
            bad_address: false,
        },
    }
}

#[async_trait::async_trait]
impl Provider for Postmark {
    fn name(&self) -> &str {
        "postmark"
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email]
    }

    fn honours_idempotency_key(&self) -> bool {
        false
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        traced(self.name(), msg, async {
            match msg.rendered {
                Rendered::Email { to, email } => self.send_email(msg, to, email).await,
                _ => Err(wrong_channel(self.name(), msg)),
            }
        })
        .await
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

    fn provider(server: &MockServer) -> Postmark {
        provider_at(server.uri())
    }

    fn provider_at(base_url: String) -> Postmark {
        let s = PostmarkSettings {
            base_url,
            from: "Veda Roots <hello@vedaroots.example>".into(),
            timeout_ms: 300,
            ..Default::default()
        };
        Postmark::new(&s, "pm-server-token".into()).unwrap()
    }

    async fn reply_with(template: ResponseTemplate) -> Result<Accepted, SendError> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/email"))
            .respond_with(template)
            .mount(&server)
            .await;
        let r = testutil::email();
        provider(&server).send(&testutil::outgoing(&r)).await
    }

    #[tokio::test]
    async fn sends_the_documented_request() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/email"))
            .and(header("x-postmark-server-token", "pm-server-token"))
            .and(header("accept", "application/json"))
            .and(header("content-type", "application/json"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "To": "asha.rao@example.com",
                "SubmittedAt": "2026-11-03T10:00:00.0000000-05:00",
                "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
                "ErrorCode": 0,
                "Message": "OK"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let r = testutil::email();
        let accepted = provider(&server)
            .send(&testutil::outgoing(&r))
            .await
            .unwrap();
        assert_eq!(
            accepted.provider_message_id.as_deref(),
            Some("b7bc2f4a-e38e-4336-af7d-e6c392c2f817")
        );

        let body: Value =
            serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
        let Rendered::Email { email, .. } = &r else {
            unreachable!()
        };
        assert_eq!(
            body,
            json!({
                "From": "Veda Roots <hello@vedaroots.example>",
                "To": "asha.rao@example.com",
                "Subject": email.subject,
                "HtmlBody": email.html,
                "TextBody": email.text,
                "Tag": "spring-winback",
                "Headers": [
                    { "Name": "List-Unsubscribe", "Value": "<https://crm.example.com/u/abc>, <mailto:unsubscribe@vedaroots.example>" },
                    { "Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click" },
                ],
                "MessageStream": "broadcast",
                "Metadata": {
                    "message_id": "4711",
                    "campaign": "spring-winback",
                    "customer_id": "C-10042",
                    "idempotency_key": testutil::KEY,
                },
            })
        );
    }

    #[tokio::test]
    async fn inactive_or_invalid_recipient_is_a_bad_address() {
        let inactive = json!({ "ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: asha.rao@example.com. Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression." });
        let err = reply_with(ResponseTemplate::new(422).set_body_json(inactive))
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
        assert!(
            !err.reason().contains("asha.rao@"),
            "recipient masked: {err:?}"
        );

        let invalid = json!({ "ErrorCode": 300, "Message": "Error parsing 'To': Illegal email address 'asha.rao@example'. It must contain the '@' symbol." });
        let err = reply_with(ResponseTemplate::new(400).set_body_json(invalid))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Permanent {
                    status: Some(400),
                    bad_address: true,
                    ..
                }
            ),
            "{err:?}"
        );

        let ours = json!({ "ErrorCode": 300, "Message": "Provide either email TextBody or HtmlBody or both." });
        let err = reply_with(ResponseTemplate::new(422).set_body_json(ours))
            .await
            .unwrap_err();
        assert!(err.is_permanent() && !err.is_bad_address(), "{err:?}");

        let token = json!({ "ErrorCode": 10, "Message": "The Server Token you provided in the X-Postmark-Server-Token request header was invalid." });
        let err = reply_with(ResponseTemplate::new(401).set_body_json(token))
            .await
            .unwrap_err();
        assert!(
            err.is_permanent()
                && !err.is_bad_address()
                && !err.reason().contains("pm-server-token"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn rate_limits_and_outages_are_transient() {
        let err = reply_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "7")
                .set_body_json(json!({"ErrorCode": 429, "Message": "Rate limit exceeded"})),
        )
        .await
        .unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err:?}");
        assert!(!err.is_permanent());
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
        let err = reply_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: None, .. }),
            "{err:?}"
        );
    }

    testutil::failure_class_tests! {
        reply_with: reply_with,
        provider_at: provider_at,
        message: testutil::email,
        accepted: ResponseTemplate::new(200).set_body_json(json!({ "To": "asha.rao@example.com", "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0, "Message": "OK" })),
        rate_limited: ResponseTemplate::new(429).set_body_json(json!({ "ErrorCode": 429, "Message": "Rate limit exceeded" })),
        // Without a readable body there is no ErrorCode to contradict the 200: accepted.
        malformed_success: ResponseTemplate::new(200).set_body_raw(testutil::TRUNCATED_JSON, "application/json")
            => Ok(Accepted { provider_message_id: None }),
        invalid_recipient: ResponseTemplate::new(422).set_body_json(json!({ "ErrorCode": 300, "Message": "Error parsing 'To': Illegal email address 'asha.rao@example.com'. It must contain the '@' symbol." })),
    }
}
