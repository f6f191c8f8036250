//! WhatsApp Business Cloud API: `POST {base_url}/{api_version}/{phone_number_id}/messages`
//! with a Bearer access token, sending an approved template:
//!
//! ```json
//! {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+919812345678",
//!  "type": "template",
//!  "template": {"name": "winback_offer", "language": {"code": "en"},
//!               "components": [{"type": "body", "parameters": [{"type": "text", "text": "Asha"}]}]}}
//! ```
//!
//! The reply's `messages[0].id` is the `wamid` that Meta's status webhooks report. Errors are
//! Graph API errors, `{"error": {"message", "type", "code", "error_data": {"details"}, …}}`,
//! classified by `code` (see [`classify_code`]). The Cloud API has no idempotency key.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::WhatsappCloudSettings;
use super::http::{self, Reply};
use super::{Accepted, Outgoing, Provider, SendError, sanitize_reason, traced, wrong_channel};
use crate::campaigns::Channel;
use crate::messages::RenderedWhatsapp;
use crate::selection::offer::Rendered;

pub struct WhatsappCloud {
    client: reqwest::Client,
    endpoint: String,
    access_token: String,
}

impl std::fmt::Debug for WhatsappCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhatsappCloud")
            .field("endpoint", &self.endpoint)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

/// What a Cloud API error code means for this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeClass {
    /// Try again later: rate limits, throttling, temporary outages.
    Transient,
    /// The recipient cannot get WhatsApp messages from us: suppress the number on this channel.
    BadRecipient,
    /// The request, template, token or account is wrong: retrying will not help.
    Permanent,
    /// Not a code we know: decide by the HTTP status.
    Unknown,
}

/// Cloud API error codes (Meta's "Error codes" reference).
pub fn classify_code(code: i64) -> CodeClass {
    match code {
        // 1 API unknown, 2 API service (downtime/overload), 4 app-level rate limit,
        // 80007 WhatsApp Business Account rate limit, 130429 throughput (messages/second) limit,
        // 131000 something went wrong, 131016 service unavailable, 131048 spam rate limit,
        // 131056 (business, consumer) pair rate limit, 131057 account in maintenance,
        // 133004 server temporarily unavailable.
        1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 131048 | 131056 | 131057 | 133004 => {
            CodeClass::Transient
        }
        // 131026 message undeliverable (not a WhatsApp number, old client, terms not accepted),
        // 131050 the user stopped marketing messages from the business.
        131026 | 131050 => CodeClass::BadRecipient,
        // 0/190 auth and expired token, 3/10/200-299 permissions, 100 invalid parameter,
        // 368 policy block, 131008/131009 missing/invalid parameter, 131021 recipient is the
        // sender, 131030 recipient not in the test allow-list, 131031 account locked,
        // 131042 payment, 131045 certificate, 131047 re-engagement window, 131049 Meta's
        // per-user marketing limit (not retried: the ecosystem limit would refuse it again),
        // 131051 unsupported type, 132000-132069 template problems, 135000 generic user error.
        0
        | 3
        | 10
        | 100
        | 190
        | 200..=299
        | 368
        | 131008
        | 131009
        | 131021
        | 131030
        | 131031
        | 131042
        | 131045
        | 131047
        | 131049
        | 131051
        | 132000..=132069
        | 135000 => CodeClass::Permanent,
        _ => CodeClass::Unknown,
    }
}

impl WhatsappCloud {
    pub fn new(
        s: &WhatsappCloudSettings,
        access_token: String,
    ) -> Result<WhatsappCloud, reqwest::Error> {
        Ok(WhatsappCloud {
            client: http::client(Duration::from_millis(s.timeout_ms))?,
            endpoint: format!(
                "{}/{}/{}/messages",
                s.base_url.trim_end_matches('/'),
                s.api_version,
                s.phone_number_id
            ),
            access_token,
        })
    }

    /// The request body for one template message.
    pub fn body(to: &str, t: &RenderedWhatsapp) -> Value {
        let mut template = json!({ "name": t.name, "language": { "code": t.language } });
        if !t.params.is_empty() {
            let parameters: Vec<Value> = t
                .params
                .iter()
                .map(|p| json!({ "type": "text", "text": p }))
                .collect();
            template["components"] = json!([{ "type": "body", "parameters": parameters }]);
        }
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": template,
        })
    }

    async fn send_template(&self, to: &str, t: &RenderedWhatsapp) -> Result<Accepted, SendError> {
        let req = self
            .client
            .post(&self.endpoint)
            .bearer_auth(&self.access_token)
            .json(&Self::body(to, t));
        let reply = http::execute(req, to).await?;
        let json = reply.json();
        if reply.is_success() {
            let id = json
                .as_ref()
                .and_then(|v| v.pointer("/messages/0/id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(reply.accepted(id));
        }
        Err(error(&reply, json.as_ref(), to))
    }
}

fn error(reply: &Reply, json: Option<&Value>, to: &str) -> SendError {
    let Some(e) = json.and_then(|v| v.get("error")) else {
        return reply.error(None, to);
    };
    let code = e.get("code").and_then(Value::as_i64);
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    let details = e
        .pointer("/error_data/details")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut text = format!("HTTP {}", reply.status);
    if let Some(c) = code {
        text.push_str(&format!(" code {c}"));
    }
    text.push_str(&format!(": {message}"));
    if !details.is_empty() && details != message {
        text.push_str(&format!(" ({details})"));
    }
    let reason = sanitize_reason(&text, to);
    let status = Some(reply.status);
    match code.map(classify_code).unwrap_or(CodeClass::Unknown) {
        CodeClass::Transient => SendError::Transient {
            status,
            reason,
            retry_after: reply.retry_after(),
        },
        CodeClass::BadRecipient => SendError::Permanent {
            status,
            reason,
            bad_address: true,
        },
        CodeClass::Permanent => SendError::Permanent {
            status,
            reason,
            bad_address: false,
        },
        CodeClass::Unknown => http::classify_status(reply.status, reason, reply.retry_after()),
    }
}

#[async_trait::async_trait]
impl Provider for WhatsappCloud {
    fn name(&self) -> &str {
        "whatsapp_cloud"
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Whatsapp]
    }

    fn honours_idempotency_key(&self) -> bool {
        false
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        traced(self.name(), msg, async {
            match msg.rendered {
                Rendered::Whatsapp { to, whatsapp } => self.send_template(to, whatsapp).await,
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

    const PATH: &str = "/v21.0/106540352242922/messages";

    fn provider(server: &MockServer) -> WhatsappCloud {
        provider_at(server.uri())
    }

    fn provider_at(base_url: String) -> WhatsappCloud {
        let s = WhatsappCloudSettings {
            base_url,
            phone_number_id: "106540352242922".into(),
            timeout_ms: 300,
            ..Default::default()
        };
        WhatsappCloud::new(&s, "EAAJB-test-token".into()).unwrap()
    }

    async fn reply_with(template: ResponseTemplate) -> Result<Accepted, SendError> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(template)
            .mount(&server)
            .await;
        let r = testutil::whatsapp();
        provider(&server).send(&testutil::outgoing(&r)).await
    }

    fn graph_error(code: i64, message: &str, details: &str) -> Value {
        json!({ "error": { "message": message, "type": "OAuthException", "code": code, "error_data": { "messaging_product": "whatsapp", "details": details }, "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam" } })
    }

    #[tokio::test]
    async fn sends_the_documented_request() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .and(header("authorization", "Bearer EAAJB-test-token"))
            .and(header("content-type", "application/json"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{ "input": "+919812345678", "wa_id": "919812345678" }],
                "messages": [{ "id": "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA", "message_status": "accepted" }]
            })))
            .expect(1)
            .mount(&server)
            .await;
        let r = testutil::whatsapp();
        let accepted = provider(&server)
            .send(&testutil::outgoing(&r))
            .await
            .unwrap();
        assert_eq!(
            accepted.provider_message_id.as_deref(),
            Some("wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA")
        );

        let body: Value =
            serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "+919812345678",
                "type": "template",
                "template": {
                    "name": "winback_offer",
                    "language": { "code": "en" },
                    "components": [{ "type": "body", "parameters": [
                        { "type": "text", "text": "Asha" },
                        { "type": "text", "text": "skincare" },
                        { "type": "text", "text": "VEDA-7K2M9QXA" },
                    ] }],
                },
            })
        );
    }

    #[tokio::test]
    async fn undeliverable_number_is_a_bad_address() {
        let body = graph_error(
            131026,
            "(#131026) Message undeliverable",
            "Message Undeliverable. +919812345678 is not a WhatsApp user",
        );
        let err = reply_with(ResponseTemplate::new(400).set_body_json(body))
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
        assert!(
            err.reason().contains("131026") && !err.reason().contains("9812345678"),
            "{err:?}"
        );
        for code in [131047, 131049, 132001, 190] {
            let err =
                reply_with(ResponseTemplate::new(400).set_body_json(graph_error(code, "no", "no")))
                    .await
                    .unwrap_err();
            assert!(
                err.is_permanent() && !err.is_bad_address(),
                "{code}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn rate_limits_and_outages_are_transient() {
        let err = reply_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "7")
                .set_body_json(graph_error(
                    130429,
                    "(#130429) Rate limit hit",
                    "Cloud API message throughput has been reached.",
                )),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(7)),
            "{err:?}"
        );
        // Graph rate limits also come as 400s: the code decides.
        for code in [4, 80007, 131056] {
            let err = reply_with(
                ResponseTemplate::new(400).set_body_json(graph_error(code, "rate", "rate")),
            )
            .await
            .unwrap_err();
            assert!(!err.is_permanent(), "{code}: {err:?}");
        }
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

    #[test]
    fn template_without_parameters_has_no_components() {
        let t = RenderedWhatsapp {
            name: "hello_world".into(),
            language: "en_US".into(),
            params: vec![],
            preview: String::new(),
        };
        assert!(
            WhatsappCloud::body("+14155550123", &t)["template"]
                .get("components")
                .is_none()
        );
    }

    testutil::failure_class_tests! {
        reply_with: reply_with,
        provider_at: provider_at,
        message: testutil::whatsapp,
        accepted: ResponseTemplate::new(200).set_body_json(json!({ "messaging_product": "whatsapp", "messages": [{ "id": "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBI1RjQyNUE3NEYxMzAzMzQ5MkEA" }] })),
        rate_limited: ResponseTemplate::new(429).set_body_json(graph_error(130429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached.")),
        malformed_success: ResponseTemplate::new(200).set_body_raw(testutil::TRUNCATED_JSON, "application/json")
            => Ok(Accepted { provider_message_id: None }),
        invalid_recipient: ResponseTemplate::new(400).set_body_json(graph_error(131026, "(#131026) Message undeliverable", "Message Undeliverable. +919812345678 is not a WhatsApp user")),
    }
}
