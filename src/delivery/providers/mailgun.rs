//! Mailgun Messages API: `POST {base_url}/v3/{domain}/messages`, HTTP basic auth `api:KEY`,
//! `multipart/form-data` fields (`from`, `to`, `subject`, `text`, `html`, `h:` headers, `v:`
//! variables that come back in Mailgun's webhooks, `o:tag`).
//!
//! A 200 reply is `{"id": "<…@domain>", "message": "Queued. Thank you."}`; errors are
//! `{"message": …}`, an invalid recipient being a 400 whose message starts with
//! "'to' parameter is not a valid address". Mailgun has no idempotency key.

use std::time::Duration;

use serde_json::Value;

use super::config::MailgunSettings;
use super::http;
use super::{Accepted, Outgoing, Provider, SendError, traced, wrong_channel};
use crate::campaigns::Channel;
use crate::messages::RenderedEmail;
use crate::selection::offer::Rendered;

pub struct Mailgun {
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
    from: String,
}

impl std::fmt::Debug for Mailgun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailgun")
            .field("endpoint", &self.endpoint)
            .field("api_key", &"<redacted>")
            .field("from", &self.from)
            .finish()
    }
}

impl Mailgun {
    pub fn new(s: &MailgunSettings, api_key: String) -> Result<Mailgun, reqwest::Error> {
        Ok(Mailgun {
            client: http::client(Duration::from_millis(s.timeout_ms))?,
            endpoint: format!(
                "{}/v3/{}/messages",
                s.base_url.trim_end_matches('/'),
                s.domain
            ),
            api_key,
            from: s.from.clone(),
        })
    }

    /// The form fields for one email, in order.
    pub fn fields(
        &self,
        msg: &Outgoing<'_>,
        to: &str,
        email: &RenderedEmail,
    ) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("from", self.from.clone()),
            ("to", to.to_string()),
            ("subject", email.subject.clone()),
        ];
        if !email.text.is_empty() {
            f.push(("text", email.text.clone()));
        }
        if !email.html.is_empty() {
            f.push(("html", email.html.clone()));
        }
        if !email.list_unsubscribe.is_empty() {
            f.push(("h:List-Unsubscribe", email.list_unsubscribe.clone()));
        }
        if !email.list_unsubscribe_post.is_empty() {
            f.push((
                "h:List-Unsubscribe-Post",
                email.list_unsubscribe_post.clone(),
            ));
        }
        f.extend([
            ("o:tag", msg.tag().to_string()),
            ("v:message_id", msg.message_id.to_string()),
            ("v:campaign", msg.campaign.to_string()),
            ("v:customer_id", msg.customer_id.to_string()),
            ("v:idempotency_key", msg.idempotency_key.to_string()),
        ]);
        if msg.test {
            f.push(("v:test", "true".to_string()));
        }
        f
    }

    async fn send_email(
        &self,
        msg: &Outgoing<'_>,
        to: &str,
        email: &RenderedEmail,
    ) -> Result<Accepted, SendError> {
        let form = self
            .fields(msg, to, email)
            .into_iter()
            .fold(reqwest::multipart::Form::new(), |form, (k, v)| {
                form.text(k, v)
            });
        let req = self
            .client
            .post(&self.endpoint)
            .basic_auth("api", Some(&self.api_key))
            .multipart(form);
        let reply = http::execute(req, to).await?;
        let json = reply.json();
        let message = json
            .as_ref()
            .and_then(|v| v.get("message"))
            .and_then(Value::as_str);
        if reply.is_success() {
            let id = json
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(reply.accepted(id));
        }
        let mut err = reply.error(message, to);
        if let SendError::Permanent { bad_address, .. } = &mut err {
            let m = message.unwrap_or("").to_ascii_lowercase();
            *bad_address =
                reply.status == 400 && m.starts_with("'to' parameter is not a valid address");
        }
        Err(err)
    }
}

#[async_trait::async_trait]
impl Provider for Mailgun {
    fn name(&self) -> &str {
        "mailgun"
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
    use crate::delivery::providers::testutil::{self, parse_multipart};

    fn provider(server: &MockServer) -> Mailgun {
        provider_at(server.uri())
    }

    fn provider_at(base_url: String) -> Mailgun {
        let s = MailgunSettings {
            base_url,
            domain: "mg.vedaroots.example".into(),
            from: "Veda Roots <hello@mg.vedaroots.example>".into(),
            timeout_ms: 300,
            ..Default::default()
        };
        Mailgun::new(&s, "key-3ax6xnjp29jd6fds4gc373sgvjxteol0".into()).unwrap()
    }

    async fn reply_with(template: ResponseTemplate) -> Result<Accepted, SendError> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/mg.vedaroots.example/messages"))
            .respond_with(template)
            .mount(&server)
            .await;
        let r = testutil::email();
        provider(&server).send(&testutil::outgoing(&r)).await
    }

    #[tokio::test]
    async fn sends_the_documented_request() {
        let server = MockServer::start().await;
        // base64("api:key-3ax6xnjp29jd6fds4gc373sgvjxteol0")
        let auth = "Basic YXBpOmtleS0zYXg2eG5qcDI5amQ2ZmRzNGdjMzczc2d2anh0ZW9sMA==";
        Mock::given(method("POST"))
            .and(path("/v3/mg.vedaroots.example/messages"))
            .and(header("authorization", auth))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "<20261103100000.1.ABCDEF@mg.vedaroots.example>", "message": "Queued. Thank you." })))
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
            Some("<20261103100000.1.ABCDEF@mg.vedaroots.example>")
        );

        let req = &server.received_requests().await.unwrap()[0];
        let ct = req.headers.get("content-type").unwrap().to_str().unwrap();
        assert!(ct.starts_with("multipart/form-data; boundary="), "{ct}");
        let fields = parse_multipart(ct, &req.body);
        let Rendered::Email { email, .. } = &r else {
            unreachable!()
        };
        let expected: Vec<(String, String)> = [
            ("from", "Veda Roots <hello@mg.vedaroots.example>"),
            ("to", "asha.rao@example.com"),
            ("subject", email.subject.as_str()),
            ("text", email.text.as_str()),
            ("html", email.html.as_str()),
            (
                "h:List-Unsubscribe",
                "<https://crm.example.com/u/abc>, <mailto:unsubscribe@vedaroots.example>",
            ),
            ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("o:tag", "spring-winback"),
            ("v:message_id", "4711"),
            ("v:campaign", "spring-winback"),
            ("v:customer_id", "C-10042"),
            ("v:idempotency_key", testutil::KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(fields, expected);
    }

    #[tokio::test]
    async fn invalid_recipient_is_a_bad_address() {
        let err = reply_with(ResponseTemplate::new(400).set_body_json(json!({ "message": "'to' parameter is not a valid address. please check documentation" }))).await.unwrap_err();
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
        let err = reply_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({ "message": "'from' parameter is missing" })),
        )
        .await
        .unwrap_err();
        assert!(err.is_permanent() && !err.is_bad_address(), "{err:?}");
        let err = reply_with(ResponseTemplate::new(401).set_body_string("Forbidden"))
            .await
            .unwrap_err();
        assert!(
            err.is_permanent() && !err.reason().contains("key-3ax6"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn rate_limits_and_outages_are_transient() {
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
        accepted: ResponseTemplate::new(200).set_body_json(json!({ "id": "<20261103100000.1.ABCDEF@mg.vedaroots.example>", "message": "Queued. Thank you." })),
        rate_limited: ResponseTemplate::new(429).set_body_json(json!({ "message": "Too many requests" })),
        malformed_success: ResponseTemplate::new(200).set_body_raw(testutil::TRUNCATED_JSON, "application/json")
            => Ok(Accepted { provider_message_id: None }),
        invalid_recipient: ResponseTemplate::new(400).set_body_json(json!({ "message": "'to' parameter is not a valid address. please check documentation" })),
    }
}
