//! SendGrid v3 Mail Send: `POST {base_url}/v3/mail/send` with a Bearer API key.
//!
//! A `202 Accepted` carries the message id in the `X-Message-Id` header (SendGrid's event
//! webhook reports it as `sg_message_id`, prefixed by it). Errors come as
//! `{"errors": [{"message", "field", "help"}]}`; an invalid recipient is a 400 whose error field
//! is `personalizations.N.to.N.email`. SendGrid has no idempotency key, so a resend after a crash
//! may duplicate the message; `custom_args` carry our ids into its event webhook.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::SendgridSettings;
use super::http::{self, Reply};
use super::{Accepted, Outgoing, Provider, SendError, traced, wrong_channel};
use crate::campaigns::Channel;
use crate::messages::RenderedEmail;
use crate::selection::offer::Rendered;

pub struct SendGrid {
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
    from_email: String,
    from_name: String,
}

impl std::fmt::Debug for SendGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGrid")
            .field("endpoint", &self.endpoint)
            .field("api_key", &"<redacted>")
            .field("from_email", &self.from_email)
            .finish()
    }
}

impl SendGrid {
    pub fn new(s: &SendgridSettings, api_key: String) -> Result<SendGrid, reqwest::Error> {
        Ok(SendGrid {
            client: http::client(Duration::from_millis(s.timeout_ms))?,
            endpoint: format!("{}/v3/mail/send", s.base_url.trim_end_matches('/')),
            api_key,
            from_email: s.from_email.clone(),
            from_name: s.from_name.clone(),
        })
    }

    /// The request body for one email.
    pub fn body(&self, msg: &Outgoing<'_>, to: &str, email: &RenderedEmail) -> Value {
        let mut from = json!({ "email": self.from_email });
        if !self.from_name.is_empty() {
            from["name"] = json!(self.from_name);
        }
        // text/plain must come before text/html; empty parts are not allowed.
        let content: Vec<Value> = [("text/plain", &email.text), ("text/html", &email.html)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(t, v)| json!({ "type": t, "value": v }))
            .collect();
        let mut headers = serde_json::Map::new();
        if !email.list_unsubscribe.is_empty() {
            headers.insert("List-Unsubscribe".into(), json!(email.list_unsubscribe));
        }
        if !email.list_unsubscribe_post.is_empty() {
            headers.insert(
                "List-Unsubscribe-Post".into(),
                json!(email.list_unsubscribe_post),
            );
        }
        let mut body = json!({
            "personalizations": [{ "to": [{ "email": to }] }],
            "from": from,
            "subject": email.subject,
            "content": content,
            "categories": [msg.tag()],
            "custom_args": {
                "message_id": msg.message_id.to_string(),
                "campaign": msg.campaign,
                "customer_id": msg.customer_id,
                "idempotency_key": msg.idempotency_key,
            },
        });
        if !headers.is_empty() {
            body["headers"] = Value::Object(headers);
        }
        if msg.test {
            body["custom_args"]["test"] = json!("true");
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
            .bearer_auth(&self.api_key)
            .json(&self.body(msg, to, email));
        let reply = http::execute(req, to).await?;
        if reply.is_success() {
            // The id is a header: the body (normally empty) is not read.
            let id = reply
                .headers
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Ok(reply.accepted(id));
        }
        Err(error(&reply, to))
    }
}

fn error(reply: &Reply, to: &str) -> SendError {
    let errors: Vec<(String, String)> = reply
        .json()
        .and_then(|v| v.get("errors").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e.get("field")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let detail = errors
        .iter()
        .map(|(f, m)| {
            if f.is_empty() {
                m.clone()
            } else {
                format!("{m} (field {f})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut err = reply.error(Some(&detail), to);
    let recipient_field =
        |f: &str| f.starts_with("personalizations.") && f.contains(".to.") && f.ends_with(".email");
    if let SendError::Permanent { bad_address, .. } = &mut err {
        *bad_address = reply.status == 400 && errors.iter().any(|(f, _)| recipient_field(f));
    }
    err
}

#[async_trait::async_trait]
impl Provider for SendGrid {
    fn name(&self) -> &str {
        "sendgrid"
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

    fn provider(server: &MockServer) -> SendGrid {
        provider_at(server.uri())
    }

    fn provider_at(base_url: String) -> SendGrid {
        let s = SendgridSettings {
            base_url,
            from_email: "hello@vedaroots.example".into(),
            from_name: "Veda Roots".into(),
            timeout_ms: 300,
            ..Default::default()
        };
        SendGrid::new(&s, "SG.test-key".into()).unwrap()
    }

    async fn reply_with(template: ResponseTemplate) -> Result<Accepted, SendError> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mail/send"))
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
            .and(path("/v3/mail/send"))
            .and(header("authorization", "Bearer SG.test-key"))
            .and(header("content-type", "application/json"))
            .respond_with(ResponseTemplate::new(202).insert_header(
                "X-Message-Id",
                "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            ))
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
            Some("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0")
        );

        let req = &server.received_requests().await.unwrap()[0];
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let Rendered::Email { email, .. } = &r else {
            unreachable!()
        };
        assert_eq!(
            body,
            json!({
                "personalizations": [{ "to": [{ "email": "asha.rao@example.com" }] }],
                "from": { "email": "hello@vedaroots.example", "name": "Veda Roots" },
                "subject": email.subject,
                "content": [
                    { "type": "text/plain", "value": email.text },
                    { "type": "text/html", "value": email.html },
                ],
                "headers": {
                    "List-Unsubscribe": "<https://crm.example.com/u/abc>, <mailto:unsubscribe@vedaroots.example>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
                "categories": ["spring-winback"],
                "custom_args": {
                    "message_id": "4711",
                    "campaign": "spring-winback",
                    "customer_id": "C-10042",
                    "idempotency_key": testutil::KEY,
                },
            })
        );
    }

    #[tokio::test]
    async fn invalid_recipient_is_a_bad_address() {
        let body = json!({ "errors": [{ "message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email", "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.personalizations.to" }] });
        let err = reply_with(ResponseTemplate::new(400).set_body_json(body))
            .await
            .unwrap_err();
        match err {
            SendError::Permanent {
                status: Some(400),
                bad_address: true,
                ref reason,
            } => assert!(reason.contains("valid address"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Other validation errors are permanent but say nothing about the recipient.
        let body = json!({ "errors": [{ "message": "The from email does not contain a valid address.", "field": "from.email" }] });
        let err = reply_with(ResponseTemplate::new(400).set_body_json(body))
            .await
            .unwrap_err();
        assert!(err.is_permanent() && !err.is_bad_address(), "{err:?}");
        let err = reply_with(ResponseTemplate::new(401).set_body_json(json!({"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked"}]}))).await.unwrap_err();
        assert!(
            err.is_permanent() && !err.reason().contains("SG.test-key"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn rate_limits_and_outages_are_transient() {
        let err = reply_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            SendError::Transient {
                status: Some(429),
                reason: err.reason().to_string(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let err = reply_with(ResponseTemplate::new(503)).await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Transient {
                    status: Some(503),
                    retry_after: None,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = reply_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: None, .. }),
            "{err:?}"
        );
        assert!(err.reason().contains("timed out"), "{err:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let p = provider_at(testutil::closed_port_url());
        let r = testutil::email();
        let err = p.send(&testutil::outgoing(&r)).await.unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: None, .. }),
            "{err:?}"
        );
        assert!(!format!("{p:?}").contains("SG.test-key") && !err.reason().contains("SG.test-key"));
    }

    testutil::failure_class_tests! {
        reply_with: reply_with,
        provider_at: provider_at,
        message: testutil::email,
        accepted: ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-accepted-1"),
        rate_limited: ResponseTemplate::new(429).set_body_json(json!({ "errors": [{ "field": null, "message": "too many requests" }] })),
        // SendGrid's id is the X-Message-Id header; the (normally empty) body is never parsed.
        malformed_success: ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-accepted-1").set_body_raw(testutil::TRUNCATED_JSON, "application/json")
            => Ok(Accepted { provider_message_id: Some("sg-accepted-1".into()) }),
        invalid_recipient: ResponseTemplate::new(400).set_body_json(json!({ "errors": [{ "message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email", "help": null }] })),
    }

    #[tokio::test]
    async fn refuses_other_channels() {
        let server = MockServer::start().await;
        let r = testutil::sms();
        let err = provider(&server)
            .send(&testutil::outgoing(&r))
            .await
            .unwrap_err();
        assert!(err.is_permanent() && !err.is_bad_address());
        assert!(server.received_requests().await.unwrap().is_empty());
    }
}
