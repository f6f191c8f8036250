//! Delivery providers: one [`Provider`] per email/SMS/WhatsApp service, each calling the
//! service's documented public API, plus a local [`file`] sink and a signed [`webhook`].
//!
//! Every HTTP provider takes a `base_url` from the config, so tests (and staging) point it at a
//! local server. A send either returns [`Accepted`] (the provider took the message; delivery
//! reports come later) or a [`SendError`] that says whether to retry ([`SendError::Transient`],
//! with the server's `Retry-After` when it gave one) or not ([`SendError::Permanent`], with
//! `bad_address` when the recipient itself is invalid and should be suppressed).
//!
//! Secrets (API keys, tokens, passwords) are read from the environment variables the config
//! names, when the providers are built ([`config::DeliverySettings::build`]): a missing one is a
//! config error, not a failed send, and registered with [`crate::redact`]. They never appear in
//! `Debug` output, error reasons or logs: a provider that echoes a credential in its error reply
//! has it replaced with `[REDACTED]` ([`sanitize_reason`], and [`traced`] for every send), and
//! recipients appear in logs masked ([`mask_recipient`]).

use std::future::Future;

use tracing::Instrument as _;

use crate::campaigns::Channel;
use crate::selection::offer::Rendered;

pub mod config;
pub mod file;
pub mod http;
pub mod mailgun;
pub mod postmark;
pub mod sendgrid;
pub mod smtp;
pub mod twilio;
pub mod webhook;
pub mod whatsapp;

pub use config::{DeliverySettings, Limits, ProviderEntry, Providers};
pub use http::{classify_status, parse_retry_after};

/// One message to send.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    /// The outbox row's id.
    pub message_id: i64,
    /// `campaign/customer/day` (see [`crate::outbox::idempotency_key`]).
    pub idempotency_key: &'a str,
    pub campaign: &'a str,
    pub customer_id: &'a str,
    pub rendered: &'a Rendered,
    /// A test send (`campaigns preview --to`): not in the outbox; providers tag it `test`.
    pub test: bool,
}

// Logs may print it: mask the recipient and leave the content out.
impl std::fmt::Debug for Outgoing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("message_id", &self.message_id)
            .field("idempotency_key", &self.idempotency_key)
            .field("campaign", &self.campaign)
            .field("customer_id", &self.customer_id)
            .field("test", &self.test)
            .field("channel", &self.channel())
            .field("to", &mask_recipient(self.recipient()))
            .finish_non_exhaustive()
    }
}

impl Outgoing<'_> {
    pub fn channel(&self) -> Channel {
        channel_of(self.rendered)
    }

    pub fn recipient(&self) -> &str {
        self.rendered.recipient()
    }

    /// The message as JSON, as the webhook and file providers write it:
    /// `{message_id, idempotency_key, campaign, customer_id, channel, to, content}` where
    /// `content` is the rendered email (`subject`, `html`, `text`, `list_unsubscribe`,
    /// `list_unsubscribe_post`), SMS (`text`, `encoding`, `segments`, `units`) or WhatsApp
    /// template (`name`, `language`, `params`, `preview`). A test send adds `"test": true`.
    pub fn to_json(&self) -> serde_json::Value {
        let content = match self.rendered {
            Rendered::Email { email, .. } => serde_json::to_value(email),
            Rendered::Sms { sms, .. } => serde_json::to_value(sms),
            Rendered::Whatsapp { whatsapp, .. } => serde_json::to_value(whatsapp),
        }
        .unwrap_or(serde_json::Value::Null);
        let mut json = serde_json::json!({
            "message_id": self.message_id,
            "idempotency_key": self.idempotency_key,
            "campaign": self.campaign,
            "customer_id": self.customer_id,
            "channel": self.channel().as_str(),
            "to": self.recipient(),
            "content": content,
        });
        if self.test {
            json["test"] = serde_json::Value::Bool(true);
        }
        json
    }

    /// The tag providers file the message under: the campaign, or `test` for a test send (so
    /// it stays out of the campaign's figures in the provider's dashboard too).
    pub fn tag(&self) -> &str {
        if self.test { "test" } else { self.campaign }
    }
}

pub fn channel_of(rendered: &Rendered) -> Channel {
    match rendered {
        Rendered::Email { .. } => Channel::Email,
        Rendered::Sms { .. } => Channel::Sms,
        Rendered::Whatsapp { .. } => Channel::Whatsapp,
    }
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's id for the message (for matching its delivery reports), when it gives one.
    pub provider_message_id: Option<String>,
}

/// Why a send failed. Reasons never contain credentials, and recipients in them are masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Do not retry: most 4xx, invalid address/number. `bad_address` = the recipient itself is
    /// invalid (to be suppressed).
    #[error("permanent failure{}: {reason}{}", status_suffix(*status), if *bad_address { " (bad address)" } else { "" })]
    Permanent {
        status: Option<u16>,
        reason: String,
        bad_address: bool,
    },
    /// Retry later: 429, 5xx, timeouts, connection errors. `retry_after` from the Retry-After
    /// header (seconds or HTTP date) when present.
    #[error("transient failure{}: {reason}{}", status_suffix(*status), retry_suffix(*retry_after))]
    Transient {
        status: Option<u16>,
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (status {s})")).unwrap_or_default()
}

fn retry_suffix(retry_after: Option<std::time::Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {}s)", d.as_secs()))
        .unwrap_or_default()
}

impl SendError {
    pub fn permanent(reason: impl Into<String>) -> SendError {
        SendError::Permanent {
            status: None,
            reason: reason.into(),
            bad_address: false,
        }
        .redacted()
    }

    pub fn transient(reason: impl Into<String>) -> SendError {
        SendError::Transient {
            status: None,
            reason: reason.into(),
            retry_after: None,
        }
        .redacted()
    }

    /// The same error with every known secret in its reason replaced ([`crate::redact`]).
    pub fn redacted(mut self) -> SendError {
        let (SendError::Permanent { reason, .. } | SendError::Transient { reason, .. }) = &mut self;
        if let std::borrow::Cow::Owned(clean) = crate::redact::redact(reason) {
            *reason = clean;
        }
        self
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent { .. })
    }

    pub fn is_bad_address(&self) -> bool {
        matches!(
            self,
            SendError::Permanent {
                bad_address: true,
                ..
            }
        )
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Permanent { status, .. } | SendError::Transient { status, .. } => *status,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            SendError::Permanent { reason, .. } | SendError::Transient { reason, .. } => reason,
        }
    }

    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SendError::Transient { retry_after, .. } => *retry_after,
            SendError::Permanent { .. } => None,
        }
    }
}

/// A delivery service. Object-safe: the daemon holds `Arc<dyn Provider>`.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name as the config spells it: "sendgrid", "postmark", …
    fn name(&self) -> &str;
    /// The channels it can send.
    fn channels(&self) -> &'static [Channel];
    /// Whether resending with the same idempotency key cannot produce a duplicate (used after a
    /// crash left a message in an unknown state).
    fn honours_idempotency_key(&self) -> bool;
    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError>;
}

/// Installs rustls' `ring` crypto provider as the process default (the one sqlx uses), once.
/// Harmless when a provider is already installed. reqwest (built with `rustls-no-provider`)
/// panics when it builds a client without one, so every client here is built after this.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A recipient for logs: `alice@example.com` → `a***@example.com`, `+919812345678` →
/// `+91*******678`.
pub fn mask_recipient(to: &str) -> String {
    if let Some((local, domain)) = to.rsplit_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = to.chars().collect();
    if chars.len() <= 6 {
        return "***".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 6))
}

/// Error text from a provider, made safe for logs and the outbox: known secrets are redacted
/// (before the cut, so none is left half-shown), the recipient is masked wherever it appears,
/// control characters become spaces, and the text is cut to 300 characters.
pub fn sanitize_reason(text: &str, recipient: &str) -> String {
    let mut s = crate::redact::redact(text.trim()).into_owned();
    if !recipient.is_empty() {
        s = s.replace(recipient, &mask_recipient(recipient));
        // Providers often echo numbers without the leading `+`, or with a channel prefix.
        if let Some(bare) = recipient.strip_prefix('+')
            && bare.len() >= 6
        {
            s = s.replace(bare, &mask_recipient(bare));
        }
    }
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The error for a message of a channel the provider cannot send (a wiring mistake, not the
/// recipient's fault).
pub(crate) fn wrong_channel(provider: &str, msg: &Outgoing<'_>) -> SendError {
    SendError::permanent(format!(
        "provider {provider} cannot send {} messages",
        msg.channel().as_str()
    ))
}

/// Runs one send inside a span (provider, message id, campaign, masked recipient) and logs the
/// outcome. An error's reason is redacted here whatever built it, before it is logged or
/// returned to the dispatcher (which stores it).
pub(crate) async fn traced<F>(
    provider: &str,
    msg: &Outgoing<'_>,
    send: F,
) -> Result<Accepted, SendError>
where
    F: Future<Output = Result<Accepted, SendError>>,
{
    let span = tracing::info_span!(
        "provider_send",
        provider,
        message_id = msg.message_id,
        campaign = msg.campaign,
        channel = msg.channel().as_str(),
        to = %mask_recipient(msg.recipient()),
    );
    async move {
        let result = send.await.map_err(SendError::redacted);
        match &result {
            Ok(a) => tracing::debug!(
                provider_message_id = a.provider_message_id.as_deref().unwrap_or(""),
                "accepted"
            ),
            Err(e) => tracing::warn!(error = %e, "send failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// Shared fixtures for the providers' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::messages::{
        LIST_UNSUBSCRIBE_POST, RenderedEmail, RenderedSms, RenderedWhatsapp, SmsEncoding,
    };

    pub const KEY: &str = "spring-winback/C-10042/2026-11-03";

    pub fn email() -> Rendered {
        Rendered::Email {
            to: "asha.rao@example.com".into(),
            email: RenderedEmail {
                subject: "Asha, your skincare picks are back in stock".into(),
                html: "<!doctype html><html><body><h1>We miss you, Asha</h1><p>Use <b>VEDA-7K2M9QXA</b> for 15% off.</p>\
                       <a href=\"https://crm.example.com/u/abc\">Unsubscribe</a></body></html>"
                    .into(),
                text: "We miss you, Asha\n\nUse VEDA-7K2M9QXA for 15% off.\n\nUnsubscribe: https://crm.example.com/u/abc".into(),
                list_unsubscribe: "<https://crm.example.com/u/abc>, <mailto:unsubscribe@vedaroots.example>".into(),
                list_unsubscribe_post: LIST_UNSUBSCRIBE_POST.into(),
            },
        }
    }

    pub fn sms() -> Rendered {
        Rendered::Sms {
            to: "+919812345678".into(),
            sms: RenderedSms {
                text: "Veda Roots: Asha, 15% off skincare with VEDA-7K2M9QXA. Stop: https://crm.example.com/u/abc".into(),
                encoding: SmsEncoding::Gsm7,
                segments: 1,
                units: 92,
            },
        }
    }

    pub fn whatsapp() -> Rendered {
        Rendered::Whatsapp {
            to: "+919812345678".into(),
            whatsapp: RenderedWhatsapp {
                name: "winback_offer".into(),
                language: "en".into(),
                params: vec!["Asha".into(), "skincare".into(), "VEDA-7K2M9QXA".into()],
                preview: "Hi Asha, 15% off skincare with VEDA-7K2M9QXA".into(),
            },
        }
    }

    pub fn outgoing(rendered: &Rendered) -> Outgoing<'_> {
        Outgoing {
            message_id: 4711,
            idempotency_key: KEY,
            campaign: "spring-winback",
            customer_id: "C-10042",
            rendered,
            test: false,
        }
    }

    /// A base URL where nothing listens: a port that was free a moment ago (bound to
    /// 127.0.0.1:0, then released), so a connection to it is refused.
    pub fn closed_port_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    /// `Retry-After` as an HTTP date `secs` from now.
    pub fn http_date_in(secs: u64) -> String {
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(secs))
    }

    /// One test per failure class for an HTTP provider, in a `failure_classes` module:
    /// 429 with `Retry-After` (seconds and HTTP date), 500, a timeout, a refused connection,
    /// malformed JSON in a 2xx reply, and an invalid recipient.
    ///
    /// - `reply_with`: `async fn(ResponseTemplate) -> Result<Accepted, SendError>` that sends
    ///   `message()` through a provider whose request timeout is below 2 s, against a mock
    ///   server answering with the template;
    /// - `provider_at`: builds the provider for a base URL (`fn(String) -> impl Provider`);
    /// - `accepted`: the provider's normal 2xx reply (delayed 2 s for the timeout case);
    /// - `rate_limited`: its 429 reply (the macro adds `Retry-After`);
    /// - `malformed_success => outcome`: a 2xx reply with a body that is not valid JSON, and
    ///   what the send must return (see the [`super::http`] module docs for why: accepted);
    /// - `invalid_recipient`: its reply for an invalid recipient (must be a bad address).
    macro_rules! failure_class_tests {
        (
            reply_with: $reply_with:path,
            provider_at: $provider_at:path,
            message: $message:path,
            accepted: $accepted:expr,
            rate_limited: $rate_limited:expr,
            malformed_success: $malformed:expr => $malformed_outcome:expr,
            invalid_recipient: $invalid:expr $(,)?
        ) => {
            mod failure_classes {
                #[allow(unused_imports)]
                use super::*;
                use std::time::Duration;

                use wiremock::ResponseTemplate;

                // `Provider` (for `send`) comes with `super::*`: every provider module imports it.
                use $crate::delivery::providers::{SendError, testutil};

                #[tokio::test]
                async fn rate_limited_429_with_retry_after_is_transient() {
                    let err = $reply_with($rate_limited.insert_header("Retry-After", "7")).await.unwrap_err();
                    assert!(matches!(err, SendError::Transient { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(7)), "{err:?}");
                    let err = $reply_with($rate_limited.insert_header("Retry-After", testutil::http_date_in(60).as_str())).await.unwrap_err();
                    let after = err.retry_after().expect("Retry-After as an HTTP date");
                    assert!(err.status() == Some(429) && after <= Duration::from_secs(60) && after >= Duration::from_secs(55), "{err:?}");
                    let err = $reply_with($rate_limited).await.unwrap_err();
                    assert!(matches!(err, SendError::Transient { status: Some(429), retry_after: None, .. }), "{err:?}");
                }

                #[tokio::test]
                async fn server_error_500_is_transient() {
                    let page = ResponseTemplate::new(500).set_body_raw("<html><body><h1>500 Internal Server Error</h1></body></html>", "text/html");
                    let err = $reply_with(page).await.unwrap_err();
                    assert!(matches!(err, SendError::Transient { status: Some(500), retry_after: None, .. }), "{err:?}");
                    assert!(err.reason().contains("HTTP 500"), "{err:?}");
                }

                #[tokio::test]
                async fn timeout_is_transient() {
                    let err = $reply_with($accepted.set_delay(Duration::from_secs(2))).await.unwrap_err();
                    assert!(matches!(err, SendError::Transient { status: None, retry_after: None, .. }), "{err:?}");
                    assert!(err.reason().contains("timed out"), "{err:?}");
                }

                #[tokio::test]
                async fn refused_connection_is_transient() {
                    let provider = $provider_at(testutil::closed_port_url());
                    let rendered = $message();
                    let err = provider.send(&testutil::outgoing(&rendered)).await.unwrap_err();
                    assert!(matches!(err, SendError::Transient { status: None, retry_after: None, .. }), "{err:?}");
                    assert!(err.reason().contains("connection failed"), "{err:?}");
                }

                #[tokio::test]
                async fn malformed_json_in_a_success_reply_is_accepted_without_panicking() {
                    let outcome = $reply_with($malformed).await;
                    assert_eq!(outcome, $malformed_outcome);
                }

                #[tokio::test]
                async fn invalid_recipient_is_a_permanent_bad_address() {
                    let err = $reply_with($invalid).await.unwrap_err();
                    assert!(matches!(err, SendError::Permanent { bad_address: true, .. }), "{err:?}");
                    assert!(!err.reason().contains("asha.rao@") && !err.reason().contains("9812345678"), "recipient masked: {err:?}");
                }
            }
        };
    }
    pub(crate) use failure_class_tests;

    /// A 2xx body cut off mid-JSON.
    pub const TRUNCATED_JSON: &str = "{\"id\": \"abc";

    /// A form-urlencoded body as (name, value) pairs, in order.
    pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .expect("utf-8")
                .into_owned()
        };
        std::str::from_utf8(body)
            .expect("utf-8 body")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    /// A multipart/form-data body's text fields as (name, value) pairs, in order.
    pub fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<(String, String)> {
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .expect("boundary")
            .trim_matches('"');
        let body = std::str::from_utf8(body).expect("utf-8 body");
        let mut out = Vec::new();
        for part in body.split(&format!("--{boundary}")) {
            let part = part.strip_prefix("\r\n").unwrap_or(part);
            let Some((head, value)) = part.split_once("\r\n\r\n") else {
                continue;
            };
            let Some(name) = head
                .split("name=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
            else {
                continue;
            };
            out.push((
                name.to_string(),
                value.strip_suffix("\r\n").unwrap_or(value).to_string(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_recipients() {
        let r = testutil::email();
        let debug = format!("{:?}", testutil::outgoing(&r));
        assert!(
            debug.contains("a***@example.com") && !debug.contains("asha.rao"),
            "{debug}"
        );
        assert_eq!(mask_recipient("asha.rao@example.com"), "a***@example.com");
        assert_eq!(mask_recipient("+919812345678"), "+91*******678");
        assert_eq!(mask_recipient("12345"), "***");
    }

    #[test]
    fn sanitizes_reasons() {
        let r = sanitize_reason(
            "The 'To' number +919812345678 is not valid\n(919812345678)",
            "+919812345678",
        );
        assert!(!r.contains("9812345678"), "{r}");
        assert!(!r.contains('\n'));
        let long = "x".repeat(1000);
        assert_eq!(sanitize_reason(&long, "").chars().count(), 301);
    }

    #[test]
    fn provider_is_object_safe() {
        use std::sync::Arc;
        fn takes(_: Option<Arc<dyn Provider>>) {}
        takes(None);
    }

    #[test]
    fn errors_display_without_secrets() {
        let e = SendError::Transient {
            status: Some(429),
            reason: "rate limited".into(),
            retry_after: Some(std::time::Duration::from_secs(7)),
        };
        assert_eq!(
            e.to_string(),
            "transient failure (status 429): rate limited (retry after 7s)"
        );
        assert!(!e.is_permanent());
        let e = SendError::Permanent {
            status: Some(400),
            reason: "invalid".into(),
            bad_address: true,
        };
        assert!(e.is_bad_address());
    }
}
