//! Twilio Programmable Messaging: `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! HTTP basic auth `AccountSid:AuthToken`, form fields.
//!
//! - SMS: `To`, `From` (or `MessagingServiceSid`), `Body`.
//! - WhatsApp: `To`/`From` as `whatsapp:+…`, an approved Content template `ContentSid` (from the
//!   config, per template name) and `ContentVariables` = `{"1": …, "2": …}` (JSON).
//!
//! A `201 Created` carries the message `sid`. Errors are `{"code", "message", "more_info",
//! "status"}`; codes 21211 (invalid `To`), 21614 (`To` is not a mobile number) and 21610 (the
//! recipient replied STOP) mean the recipient is bad; 20429 is Twilio's rate limit.
//!
//! Idempotency: the key is sent in `I-Twilio-Idempotency-Token`, but Twilio documents that
//! header only on the webhooks *it* sends (so receivers can drop retries), not as a guarantee
//! that the Messages API drops duplicate creates. So [`Provider::honours_idempotency_key`] is
//! false: a message left in an unknown state by a crash must not be resent blindly.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::config::TwilioSettings;
use super::http::{self, Reply};
use super::{Accepted, Outgoing, Provider, SendError, sanitize_reason, traced};
use crate::campaigns::Channel;
use crate::selection::offer::Rendered;

/// Twilio error codes meaning the recipient cannot (or must not) be messaged.
pub const BAD_RECIPIENT_CODES: &[i64] = &[
    21211, // invalid 'To' phone number
    21614, // 'To' number is not a valid mobile number
    21610, // attempt to send to an unsubscribed recipient (replied STOP)
];

pub struct Twilio {
    client: reqwest::Client,
    endpoint: String,
    account_sid: String,
    auth_token: String,
    from: String,
    messaging_service_sid: String,
    whatsapp_from: String,
    whatsapp_content_sid: String,
    whatsapp_content_sids: BTreeMap<String, String>,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twilio")
            .field("endpoint", &self.endpoint)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("from", &self.from)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .finish()
    }
}

fn whatsapp_address(number: &str) -> String {
    if number.starts_with("whatsapp:") {
        number.to_string()
    } else {
        format!("whatsapp:{number}")
    }
}

impl Twilio {
    pub fn new(s: &TwilioSettings, auth_token: String) -> Result<Twilio, reqwest::Error> {
        Ok(Twilio {
            client: http::client(Duration::from_millis(s.timeout_ms))?,
            endpoint: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                s.base_url.trim_end_matches('/'),
                s.account_sid
            ),
            account_sid: s.account_sid.clone(),
            auth_token,
            from: s.from.clone(),
            messaging_service_sid: s.messaging_service_sid.clone(),
            whatsapp_from: s.whatsapp_from.clone(),
            whatsapp_content_sid: s.whatsapp_content_sid.clone(),
            whatsapp_content_sids: s.whatsapp_content_sids.clone(),
        })
    }

    fn sender(&self, from: String) -> (&'static str, String) {
        if self.messaging_service_sid.is_empty() {
            ("From", from)
        } else {
            ("MessagingServiceSid", self.messaging_service_sid.clone())
        }
    }

    /// The form fields for one message, in order.
    pub fn fields(&self, msg: &Outgoing<'_>) -> Result<Vec<(&'static str, String)>, SendError> {
        match msg.rendered {
            Rendered::Sms { to, sms } => Ok(vec![
                ("To", to.clone()),
                self.sender(self.from.clone()),
                ("Body", sms.text.clone()),
            ]),
            Rendered::Whatsapp { to, whatsapp } => {
                let sid = self
                    .whatsapp_content_sids
                    .get(&whatsapp.name)
                    .unwrap_or(&self.whatsapp_content_sid);
                if sid.is_empty() {
                    return Err(SendError::permanent(format!(
                        "no Twilio Content SID for WhatsApp template {:?}: set delivery.twilio.whatsapp_content_sids.{} (or whatsapp_content_sid)",
                        whatsapp.name, whatsapp.name
                    )));
                }
                let vars: serde_json::Map<String, Value> = whatsapp
                    .params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| ((i + 1).to_string(), Value::String(p.clone())))
                    .collect();
                Ok(vec![
                    ("To", whatsapp_address(to)),
                    self.sender(whatsapp_address(&self.whatsapp_from)),
                    ("ContentSid", sid.clone()),
                    ("ContentVariables", Value::Object(vars).to_string()),
                ])
            }
            Rendered::Email { .. } => Err(super::wrong_channel("twilio", msg)),
        }
    }

    async fn send_message(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        let fields = self.fields(msg)?;
        let to = msg.recipient();
        let req = self
            .client
            .post(&self.endpoint)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .header("I-Twilio-Idempotency-Token", msg.idempotency_key)
            .form(&fields);
        let reply = http::execute(req, to).await?;
        let json = reply.json();
        if reply.is_success() {
            let sid = json
                .as_ref()
                .and_then(|v| v.get("sid"))
                .and_then(Value::as_str)
                .map(str::to_string);
            return Ok(reply.accepted(sid));
        }
        Err(error(&reply, json.as_ref(), to))
    }
}

fn error(reply: &Reply, json: Option<&Value>, to: &str) -> SendError {
    let code = json.and_then(|v| v.get("code")).and_then(Value::as_i64);
    let message = json
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(code) = code else {
        return reply.error(Some(message), to);
    };
    let reason = sanitize_reason(&format!("HTTP {} code {code}: {message}", reply.status), to);
    let status = Some(reply.status);
    if BAD_RECIPIENT_CODES.contains(&code) {
        SendError::Permanent {
            status,
            reason,
            bad_address: true,
        }
    } else if code == 20429 {
        SendError::Transient {
            status,
            reason,
            retry_after: reply.retry_after(),
        }
    } else {
        http::classify_status(reply.status, reason, reply.retry_after())
    }
}

#[async_trait::async_trait]
impl Provider for Twilio {
    fn name(&self) -> &str {
        "twilio"
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Sms, Channel::Whatsapp]
    }

    fn honours_idempotency_key(&self) -> bool {
        false
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        traced(self.name(), msg, self.send_message(msg)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::delivery::providers::testutil::{self, parse_form};

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
    const CONTENT_SID: &str = "HXb5b62575e6e4ff6129ad7c8efe1f983e";

    fn settings(server: &MockServer) -> TwilioSettings {
        settings_at(server.uri())
    }

    fn settings_at(base_url: String) -> TwilioSettings {
        TwilioSettings {
            base_url,
            account_sid: SID.into(),
            from: "+14155550100".into(),
            whatsapp_from: "+14155238886".into(),
            whatsapp_content_sids: BTreeMap::from([("winback_offer".into(), CONTENT_SID.into())]),
            timeout_ms: 300,
            ..Default::default()
        }
    }

    fn provider(server: &MockServer) -> Twilio {
        provider_at(server.uri())
    }

    fn provider_at(base_url: String) -> Twilio {
        Twilio::new(&settings_at(base_url), "twilio-auth-token".into()).unwrap()
    }

    fn created() -> ResponseTemplate {
        ResponseTemplate::new(201).set_body_json(json!({
            "account_sid": SID, "sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued",
            "to": "+919812345678", "from": "+14155550100", "num_segments": "1", "error_code": null
        }))
    }

    async fn reply_with(template: ResponseTemplate) -> Result<Accepted, SendError> {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(template)
            .mount(&server)
            .await;
        let r = testutil::sms();
        provider(&server).send(&testutil::outgoing(&r)).await
    }

    fn twilio_error(code: i64, message: &str, status: u16) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({ "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status }))
    }

    #[tokio::test]
    async fn sends_sms_as_documented() {
        let server = MockServer::start().await;
        // base64("AC0123456789abcdef0123456789abcdef:twilio-auth-token")
        let auth = "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0d2lsaW8tYXV0aC10b2tlbg==";
        Mock::given(method("POST"))
            .and(path(PATH))
            .and(header("authorization", auth))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(header("i-twilio-idempotency-token", testutil::KEY))
            .respond_with(created())
            .expect(1)
            .mount(&server)
            .await;
        let r = testutil::sms();
        let accepted = provider(&server)
            .send(&testutil::outgoing(&r))
            .await
            .unwrap();
        assert_eq!(
            accepted.provider_message_id.as_deref(),
            Some("SM1f0e8ae6ade43cb3c0ce4525424e404f")
        );
        let form = parse_form(&server.received_requests().await.unwrap()[0].body);
        let Rendered::Sms { sms, .. } = &r else {
            unreachable!()
        };
        let expected: Vec<(String, String)> = [
            ("To", "+919812345678"),
            ("From", "+14155550100"),
            ("Body", sms.text.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        assert_eq!(form, expected);
    }

    #[tokio::test]
    async fn sends_whatsapp_templates_with_content_variables() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(PATH))
            .respond_with(created())
            .expect(2)
            .mount(&server)
            .await;
        let r = testutil::whatsapp();
        provider(&server)
            .send(&testutil::outgoing(&r))
            .await
            .unwrap();
        let form = parse_form(&server.received_requests().await.unwrap()[0].body);
        let expected: Vec<(String, String)> = [
            ("To", "whatsapp:+919812345678"),
            ("From", "whatsapp:+14155238886"),
            ("ContentSid", CONTENT_SID),
            (
                "ContentVariables",
                r#"{"1":"Asha","2":"skincare","3":"VEDA-7K2M9QXA"}"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        assert_eq!(form, expected);

        // With a Messaging Service, it replaces From.
        let s = TwilioSettings {
            messaging_service_sid: "MG9752274e9e519418a7406176694466fa".into(),
            ..settings(&server)
        };
        Twilio::new(&s, "t".into())
            .unwrap()
            .send(&testutil::outgoing(&r))
            .await
            .unwrap();
        let form = parse_form(&server.received_requests().await.unwrap()[1].body);
        assert_eq!(
            form[1],
            (
                "MessagingServiceSid".to_string(),
                "MG9752274e9e519418a7406176694466fa".to_string()
            )
        );

        // A template without a Content SID fails before any request.
        let s = TwilioSettings {
            whatsapp_content_sids: BTreeMap::new(),
            ..settings(&server)
        };
        let err = Twilio::new(&s, "t".into())
            .unwrap()
            .send(&testutil::outgoing(&r))
            .await
            .unwrap_err();
        assert!(
            err.is_permanent() && err.reason().contains("whatsapp_content_sids.winback_offer"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn invalid_or_unsubscribed_numbers_are_bad_addresses() {
        for code in [21211, 21614, 21610] {
            let err = reply_with(twilio_error(
                code,
                "The 'To' number +919812345678 is not a valid phone number.",
                400,
            ))
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
                "{code}: {err:?}"
            );
            assert!(!err.reason().contains("9812345678"), "{err:?}");
        }
        let err = reply_with(twilio_error(
            21606,
            "The From phone number is not a valid, SMS-capable inbound phone number",
            400,
        ))
        .await
        .unwrap_err();
        assert!(err.is_permanent() && !err.is_bad_address(), "{err:?}");
        let err = reply_with(twilio_error(20003, "Authenticate", 401))
            .await
            .unwrap_err();
        assert!(
            err.is_permanent() && !err.reason().contains("twilio-auth-token"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn rate_limits_and_outages_are_transient() {
        let err = reply_with(
            twilio_error(20429, "Too Many Requests", 429).insert_header("Retry-After", "7"),
        )
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
        let err = reply_with(created().set_delay(Duration::from_secs(2)))
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
        message: testutil::sms,
        accepted: created(),
        rate_limited: twilio_error(20429, "Too Many Requests", 429),
        malformed_success: ResponseTemplate::new(201).set_body_raw(testutil::TRUNCATED_JSON, "application/json")
            => Ok(Accepted { provider_message_id: None }),
        invalid_recipient: twilio_error(21211, "The 'To' number +919812345678 is not a valid phone number.", 400),
    }
}
