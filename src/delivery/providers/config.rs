//! The `[delivery]` section: which provider sends each channel, and each provider's settings.
//!
//! ```toml
//! [delivery]
//! email = "file"        # provider for each channel, or "" for none
//! sms = "file"
//! whatsapp = "file"
//! [delivery.sendgrid]
//! api_key_env = "SENDGRID_API_KEY"
//! from_email = "hello@vedaroots.example"
//! ```
//!
//! Every key has a default, and every channel defaults to the `file` provider, so a fresh machine
//! runs the demo without credentials. Secrets never live here: `*_env` keys name the environment
//! variables that hold them, read by [`DeliverySettings::build`]. Each provider table also has
//! `rate_per_second` (0 = unlimited), `concurrency` and `timeout_ms`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Provider;
use crate::campaigns::Channel;
use crate::config::{ConfigIssue, IssueSink, closest};

/// Provider names and the channels each can send.
pub const PROVIDERS: &[(&str, &[Channel])] = &[
    ("file", &[Channel::Email, Channel::Sms, Channel::Whatsapp]),
    ("sendgrid", &[Channel::Email]),
    ("postmark", &[Channel::Email]),
    ("mailgun", &[Channel::Email]),
    ("smtp", &[Channel::Email]),
    ("whatsapp_cloud", &[Channel::Whatsapp]),
    ("twilio", &[Channel::Sms, Channel::Whatsapp]),
    (
        "webhook",
        &[Channel::Email, Channel::Sms, Channel::Whatsapp],
    ),
];

/// The channels a provider can send, or `None` for an unknown name.
pub fn provider_channels(name: &str) -> Option<&'static [Channel]> {
    PROVIDERS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// File name used for issues found while reading the environment (no config file involved).
pub const ENV_ISSUE_FILE: &str = "(environment)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliverySettings {
    /// Provider for email: file, sendgrid, postmark, mailgun, smtp, webhook, or "" for none.
    /// Default "file".
    pub email: String,
    /// Provider for SMS: file, twilio, webhook, or "". Default "file".
    pub sms: String,
    /// Provider for WhatsApp: file, whatsapp_cloud, twilio, webhook, or "". Default "file".
    pub whatsapp: String,
    pub file: FileSettings,
    pub sendgrid: SendgridSettings,
    pub postmark: PostmarkSettings,
    pub mailgun: MailgunSettings,
    pub smtp: SmtpSettings,
    pub whatsapp_cloud: WhatsappCloudSettings,
    pub twilio: TwilioSettings,
    pub webhook: WebhookSettings,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            email: "file".into(),
            sms: "file".into(),
            whatsapp: "file".into(),
            file: FileSettings::default(),
            sendgrid: SendgridSettings::default(),
            postmark: PostmarkSettings::default(),
            mailgun: MailgunSettings::default(),
            smtp: SmtpSettings::default(),
            whatsapp_cloud: WhatsappCloudSettings::default(),
            twilio: TwilioSettings::default(),
            webhook: WebhookSettings::default(),
        }
    }
}

/// Local sink: one JSON file per message. For demos and dry runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FileSettings {
    /// Folder for `{message_id}.json` files (created on first send). Default "data/outbox-files".
    pub dir: PathBuf,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/outbox-files"),
            rate_per_second: 0,
            concurrency: 4,
            timeout_ms: 10_000,
        }
    }
}

/// SendGrid v3 Mail Send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SendgridSettings {
    /// Default "https://api.sendgrid.com" (EU subusers: "https://api.eu.sendgrid.com").
    pub base_url: String,
    /// Environment variable holding the API key. Default "SENDGRID_API_KEY".
    pub api_key_env: String,
    /// Verified sender address.
    pub from_email: String,
    /// Sender name shown to recipients (optional).
    pub from_name: String,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for SendgridSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.sendgrid.com".into(),
            api_key_env: "SENDGRID_API_KEY".into(),
            from_email: String::new(),
            from_name: String::new(),
            rate_per_second: 0,
            concurrency: 8,
            timeout_ms: 10_000,
        }
    }
}

/// Postmark Email API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PostmarkSettings {
    /// Default "https://api.postmarkapp.com".
    pub base_url: String,
    /// Environment variable holding the server token. Default "POSTMARK_SERVER_TOKEN".
    pub server_token_env: String,
    /// Sender: "hello@brand.example" or "Brand <hello@brand.example>" (a confirmed sender signature).
    pub from: String,
    /// Message stream; marketing mail must go through a broadcast stream. Default "broadcast".
    pub message_stream: String,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for PostmarkSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.postmarkapp.com".into(),
            server_token_env: "POSTMARK_SERVER_TOKEN".into(),
            from: String::new(),
            message_stream: "broadcast".into(),
            rate_per_second: 0,
            concurrency: 8,
            timeout_ms: 10_000,
        }
    }
}

/// Mailgun Messages API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MailgunSettings {
    /// Default "https://api.mailgun.net" (EU region: "https://api.eu.mailgun.net").
    pub base_url: String,
    /// Sending domain, e.g. "mg.brand.example".
    pub domain: String,
    /// Environment variable holding the API key. Default "MAILGUN_API_KEY".
    pub api_key_env: String,
    /// Sender: "hello@mg.brand.example" or "Brand <hello@mg.brand.example>".
    pub from: String,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for MailgunSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.mailgun.net".into(),
            domain: String::new(),
            api_key_env: "MAILGUN_API_KEY".into(),
            from: String::new(),
            rate_per_second: 0,
            concurrency: 8,
            timeout_ms: 10_000,
        }
    }
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic); usually port 587.
    Starttls,
    /// TLS from the first byte ("SMTPS"); usually port 465.
    Tls,
    /// No encryption: only for a relay on the same machine or a test server.
    None,
}

/// SMTP relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpSettings {
    pub host: String,
    /// Default 587.
    pub port: u16,
    /// "starttls" (default), "tls" or "none".
    pub security: SmtpSecurity,
    /// Environment variable holding the user name; "" for no authentication.
    pub username_env: String,
    /// Environment variable holding the password. Default "SMTP_PASSWORD".
    pub password_env: String,
    /// Sender: "hello@brand.example" or "Brand <hello@brand.example>".
    pub from: String,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username_env: "SMTP_USERNAME".into(),
            password_env: "SMTP_PASSWORD".into(),
            from: String::new(),
            rate_per_second: 0,
            concurrency: 2,
            timeout_ms: 30_000,
        }
    }
}

/// WhatsApp Business Cloud API (Meta Graph API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WhatsappCloudSettings {
    /// Default "https://graph.facebook.com".
    pub base_url: String,
    /// Graph API version. Default "v21.0".
    pub api_version: String,
    /// The business phone number's id (digits), from the WhatsApp Manager.
    pub phone_number_id: String,
    /// Environment variable holding the access token. Default "WHATSAPP_ACCESS_TOKEN".
    pub access_token_env: String,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for WhatsappCloudSettings {
    fn default() -> Self {
        Self {
            base_url: "https://graph.facebook.com".into(),
            api_version: "v21.0".into(),
            phone_number_id: String::new(),
            access_token_env: "WHATSAPP_ACCESS_TOKEN".into(),
            // Cloud API's default throughput is 80 messages/second per number.
            rate_per_second: 50,
            concurrency: 8,
            timeout_ms: 10_000,
        }
    }
}

/// Twilio Programmable Messaging (SMS, and WhatsApp through Content templates).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TwilioSettings {
    /// Default "https://api.twilio.com".
    pub base_url: String,
    /// Account SID ("AC" + 32 hex digits).
    pub account_sid: String,
    /// Environment variable holding the auth token. Default "TWILIO_AUTH_TOKEN".
    pub auth_token_env: String,
    /// SMS sender number (E.164), unless `messaging_service_sid` is set.
    pub from: String,
    /// Messaging Service SID ("MG…"); when set it is used instead of `from`/`whatsapp_from`.
    pub messaging_service_sid: String,
    /// WhatsApp sender number (E.164, with or without the `whatsapp:` prefix).
    pub whatsapp_from: String,
    /// Content template SID ("HX…") used for WhatsApp when the template's name is not in
    /// `whatsapp_content_sids`.
    pub whatsapp_content_sid: String,
    /// Content template SID per WhatsApp template name (the campaign's `[whatsapp] template`).
    pub whatsapp_content_sids: BTreeMap<String, String>,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for TwilioSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.twilio.com".into(),
            account_sid: String::new(),
            auth_token_env: "TWILIO_AUTH_TOKEN".into(),
            from: String::new(),
            messaging_service_sid: String::new(),
            whatsapp_from: String::new(),
            whatsapp_content_sid: String::new(),
            whatsapp_content_sids: BTreeMap::new(),
            rate_per_second: 10,
            concurrency: 4,
            timeout_ms: 10_000,
        }
    }
}

/// Generic signed JSON webhook (see [`super::webhook`] for the receiver's contract).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Absolute http(s) URL messages are POSTed to.
    pub url: String,
    /// Environment variable holding the signing secret. Default "RETENTIOND_WEBHOOK_SECRET".
    pub secret_env: String,
    pub rate_per_second: u32,
    pub concurrency: u32,
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret_env: "RETENTIOND_WEBHOOK_SECRET".into(),
            rate_per_second: 0,
            concurrency: 4,
            timeout_ms: 10_000,
        }
    }
}

/// Pacing for one provider, shared by every channel it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sends per second; 0 = unlimited.
    pub rate_per_second: u32,
    /// Sends in flight at once.
    pub concurrency: u32,
    /// Timeout of one send (request and reply).
    pub timeout: Duration,
}

trait HasLimits {
    fn limits(&self) -> Limits;
}

macro_rules! has_limits {
    ($($t:ty),*) => {$(
        impl HasLimits for $t {
            fn limits(&self) -> Limits {
                Limits { rate_per_second: self.rate_per_second, concurrency: self.concurrency, timeout: Duration::from_millis(self.timeout_ms) }
            }
        }
    )*};
}
has_limits!(
    FileSettings,
    SendgridSettings,
    PostmarkSettings,
    MailgunSettings,
    SmtpSettings,
    WhatsappCloudSettings,
    TwilioSettings,
    WebhookSettings
);

/// A built provider and its pacing.
#[derive(Clone)]
pub struct ProviderEntry {
    pub provider: Arc<dyn Provider>,
    pub limits: Limits,
}

impl ProviderEntry {
    pub fn name(&self) -> &str {
        self.provider.name()
    }
    pub fn rate_per_second(&self) -> u32 {
        self.limits.rate_per_second
    }
    pub fn concurrency(&self) -> u32 {
        self.limits.concurrency
    }
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }
}

impl std::fmt::Debug for ProviderEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderEntry")
            .field("provider", &self.provider.name())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The providers selected for the channels. A provider chosen for two channels is built once
/// (one client, one set of limits).
#[derive(Clone, Default, Debug)]
pub struct Providers {
    entries: Vec<ProviderEntry>,
    email: Option<usize>,
    sms: Option<usize>,
    whatsapp: Option<usize>,
}

impl Providers {
    pub fn for_channel(&self, ch: Channel) -> Option<Arc<dyn Provider>> {
        self.entry(ch).map(|e| Arc::clone(&e.provider))
    }

    pub fn entry(&self, ch: Channel) -> Option<&ProviderEntry> {
        self.slot(ch).map(|i| &self.entries[i])
    }

    pub fn limits(&self, ch: Channel) -> Option<Limits> {
        self.entry(ch).map(|e| e.limits)
    }

    /// Every built provider once, e.g. to give each its own rate limiter.
    pub fn entries(&self) -> &[ProviderEntry] {
        &self.entries
    }

    /// Sends `ch` through `provider` (tests and embedders; a provider already present under the
    /// same name is reused).
    pub fn with_channel(
        mut self,
        ch: Channel,
        provider: Arc<dyn Provider>,
        limits: Limits,
    ) -> Providers {
        let i = match self
            .entries
            .iter()
            .position(|e| e.provider.name() == provider.name())
        {
            Some(i) => i,
            None => {
                self.entries.push(ProviderEntry { provider, limits });
                self.entries.len() - 1
            }
        };
        *self.slot_mut(ch) = Some(i);
        self
    }

    fn slot(&self, ch: Channel) -> Option<usize> {
        match ch {
            Channel::Email => self.email,
            Channel::Sms => self.sms,
            Channel::Whatsapp => self.whatsapp,
        }
    }

    fn slot_mut(&mut self, ch: Channel) -> &mut Option<usize> {
        match ch {
            Channel::Email => &mut self.email,
            Channel::Sms => &mut self.sms,
            Channel::Whatsapp => &mut self.whatsapp,
        }
    }
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// `hello@brand.example` or `Brand <hello@brand.example>`.
fn looks_like_sender(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b && s.trim_end().ends_with('>') => &s[a + 1..b],
        (None, None) => s.trim(),
        _ => return false,
    };
    matches!(addr.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.') && !d.starts_with('.') && !addr.contains(char::is_whitespace))
}

/// The provider tables of `[delivery]`.
const TABLES: &[&str] = &[
    "file",
    "sendgrid",
    "postmark",
    "mailgun",
    "smtp",
    "whatsapp_cloud",
    "twilio",
    "webhook",
];

impl DeliverySettings {
    /// Reads the `[delivery]` table, recording unknown keys and type errors. Prefer this to
    /// `IssueSink::section::<DeliverySettings>`: each provider table is read on its own, so a
    /// wrong value sets aside only that key, not the whole provider table (whose other keys
    /// would then fall back to defaults and raise misleading issues).
    pub fn from_toml(value: Option<&toml::Value>, sink: &mut IssueSink<'_>) -> DeliverySettings {
        let Some(toml::Value::Table(table)) = value else {
            // Absent, or not a table (the sink reports the type error).
            return sink.section("delivery", value);
        };
        // Top-level keys (channels, unknown keys, tables of the wrong type) with the provider
        // tables emptied.
        let mut top = table.clone();
        for name in TABLES {
            if matches!(top.get(*name), Some(toml::Value::Table(_))) {
                top.insert((*name).to_string(), toml::Value::Table(toml::Table::new()));
            }
        }
        let mut d: DeliverySettings = sink.section("delivery", Some(&toml::Value::Table(top)));
        let sub = |name: &str| table.get(name).filter(|v| v.is_table());
        d.file = sink.section("delivery.file", sub("file"));
        d.sendgrid = sink.section("delivery.sendgrid", sub("sendgrid"));
        d.postmark = sink.section("delivery.postmark", sub("postmark"));
        d.mailgun = sink.section("delivery.mailgun", sub("mailgun"));
        d.smtp = sink.section("delivery.smtp", sub("smtp"));
        d.whatsapp_cloud = sink.section("delivery.whatsapp_cloud", sub("whatsapp_cloud"));
        d.twilio = sink.section("delivery.twilio", sub("twilio"));
        d.webhook = sink.section("delivery.webhook", sub("webhook"));
        d
    }

    pub fn channel_provider(&self, ch: Channel) -> &str {
        match ch {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
            Channel::Whatsapp => &self.whatsapp,
        }
    }

    /// The channels each selected provider serves, in provider order.
    fn selected(&self) -> Vec<(&'static str, Vec<Channel>)> {
        let mut out: Vec<(&'static str, Vec<Channel>)> = Vec::new();
        for ch in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
            let name = self.channel_provider(ch);
            let Some((known, channels)) = PROVIDERS.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            if !channels.contains(&ch) {
                continue;
            }
            match out.iter_mut().find(|(n, _)| n == known) {
                Some((_, chs)) => chs.push(ch),
                None => out.push((known, vec![ch])),
            }
        }
        out
    }

    fn limits_of(&self, name: &str) -> Limits {
        match name {
            "file" => self.file.limits(),
            "sendgrid" => self.sendgrid.limits(),
            "postmark" => self.postmark.limits(),
            "mailgun" => self.mailgun.limits(),
            "smtp" => self.smtp.limits(),
            "whatsapp_cloud" => self.whatsapp_cloud.limits(),
            "twilio" => self.twilio.limits(),
            _ => self.webhook.limits(),
        }
    }

    /// Range and format checks: unknown provider names, a provider chosen for a channel it
    /// cannot send, limits, URLs, environment variable names, and the keys a selected provider
    /// needs. Credentials themselves are checked by [`DeliverySettings::build`].
    pub fn validate(&self, file: &str, issues: &mut Vec<ConfigIssue>) {
        let mut sink = IssueSink {
            file: file.to_string(),
            issues,
        };
        let names: Vec<String> = PROVIDERS.iter().map(|(n, _)| n.to_string()).collect();
        for ch in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
            let name = self.channel_provider(ch);
            if name.is_empty() {
                continue;
            }
            let able: Vec<&str> = PROVIDERS
                .iter()
                .filter(|(_, c)| c.contains(&ch))
                .map(|(n, _)| *n)
                .collect();
            let key = format!("delivery.{}", ch.as_str());
            match provider_channels(name) {
                None => {
                    let fix = match closest(name, &names) {
                        Some(k) => format!(
                            "did you mean \"{k}\"? Providers for {}: {}, or \"\" for none",
                            ch.as_str(),
                            able.join(", ")
                        ),
                        None => format!("use one of: {}, or \"\" for none", able.join(", ")),
                    };
                    sink.push(key, format!("unknown provider {name:?}"), fix);
                }
                Some(chs) if !chs.contains(&ch) => {
                    sink.push(
                        key,
                        format!("provider {name:?} cannot send {}", ch.as_str()),
                        format!("use one of: {}, or \"\" for none", able.join(", ")),
                    );
                }
                Some(_) => {}
            }
        }

        for (name, _) in PROVIDERS {
            let l = self.limits_of(name);
            let p = format!("delivery.{name}");
            if !(1..=1000).contains(&l.concurrency) {
                sink.push(
                    format!("{p}.concurrency"),
                    format!("{} is out of range", l.concurrency),
                    "use 1..=1000",
                );
            }
            if !(100..=300_000).contains(&(l.timeout.as_millis() as u64)) {
                sink.push(
                    format!("{p}.timeout_ms"),
                    format!("{} is out of range", l.timeout.as_millis()),
                    "use 100..=300000 milliseconds (default 10000)",
                );
            }
            if l.rate_per_second > 100_000 {
                sink.push(
                    format!("{p}.rate_per_second"),
                    format!("{} is out of range", l.rate_per_second),
                    "use 0 (unlimited) ..= 100000",
                );
            }
        }

        let env_vars = [
            (
                "delivery.sendgrid.api_key_env",
                &self.sendgrid.api_key_env,
                "SENDGRID_API_KEY",
            ),
            (
                "delivery.postmark.server_token_env",
                &self.postmark.server_token_env,
                "POSTMARK_SERVER_TOKEN",
            ),
            (
                "delivery.mailgun.api_key_env",
                &self.mailgun.api_key_env,
                "MAILGUN_API_KEY",
            ),
            (
                "delivery.smtp.password_env",
                &self.smtp.password_env,
                "SMTP_PASSWORD",
            ),
            (
                "delivery.whatsapp_cloud.access_token_env",
                &self.whatsapp_cloud.access_token_env,
                "WHATSAPP_ACCESS_TOKEN",
            ),
            (
                "delivery.twilio.auth_token_env",
                &self.twilio.auth_token_env,
                "TWILIO_AUTH_TOKEN",
            ),
            (
                "delivery.webhook.secret_env",
                &self.webhook.secret_env,
                "RETENTIOND_WEBHOOK_SECRET",
            ),
        ];
        for (key, value, example) in env_vars {
            if !is_env_name(value) {
                sink.push(
                    key,
                    format!("{value:?} is not an environment variable name"),
                    format!("name the variable that holds the secret, e.g. {example}"),
                );
            }
        }
        if !self.smtp.username_env.is_empty() && !is_env_name(&self.smtp.username_env) {
            sink.push(
                "delivery.smtp.username_env",
                format!(
                    "{:?} is not an environment variable name",
                    self.smtp.username_env
                ),
                "use e.g. SMTP_USERNAME, or \"\" for no authentication",
            );
        }

        let urls = [
            ("delivery.sendgrid.base_url", &self.sendgrid.base_url),
            ("delivery.postmark.base_url", &self.postmark.base_url),
            ("delivery.mailgun.base_url", &self.mailgun.base_url),
            (
                "delivery.whatsapp_cloud.base_url",
                &self.whatsapp_cloud.base_url,
            ),
            ("delivery.twilio.base_url", &self.twilio.base_url),
        ];
        for (key, url) in urls {
            if !is_http_url(url) {
                sink.push(
                    key,
                    format!("{url:?} is not an http(s) base URL"),
                    "use an absolute URL such as the default (see `retentiond default-config`)",
                );
            }
        }

        for (name, channels) in self.selected() {
            self.validate_selected(name, &channels, &mut sink);
        }
    }

    fn validate_selected(&self, name: &str, channels: &[Channel], sink: &mut IssueSink<'_>) {
        let sender_fix = "use \"hello@brand.example\" or \"Brand <hello@brand.example>\"";
        let sender = |sink: &mut IssueSink<'_>, key: &str, value: &str| {
            if value.trim().is_empty() {
                sink.push(
                    key,
                    "is empty",
                    format!("set the sender address: {sender_fix}"),
                );
            } else if !looks_like_sender(value) {
                sink.push(
                    key,
                    format!("{value:?} is not an email address"),
                    sender_fix,
                );
            }
        };
        match name {
            "file" => {
                if self.file.dir.as_os_str().is_empty() {
                    sink.push(
                        "delivery.file.dir",
                        "is empty",
                        "set a folder, e.g. \"data/outbox-files\"",
                    );
                }
            }
            "sendgrid" => {
                let v = &self.sendgrid.from_email;
                if v.contains('<') || !looks_like_sender(v) {
                    sink.push("delivery.sendgrid.from_email", format!("{v:?} is not an email address"), "set the verified sender address, e.g. \"hello@brand.example\" (the name goes in from_name)");
                }
            }
            "postmark" => {
                sender(sink, "delivery.postmark.from", &self.postmark.from);
                if self.postmark.message_stream.trim().is_empty() {
                    sink.push(
                        "delivery.postmark.message_stream",
                        "is empty",
                        "use the stream's id, e.g. \"broadcast\"",
                    );
                }
            }
            "mailgun" => {
                sender(sink, "delivery.mailgun.from", &self.mailgun.from);
                let d = &self.mailgun.domain;
                if d.is_empty() || !d.contains('.') || d.contains(['/', ' ', '@']) {
                    sink.push(
                        "delivery.mailgun.domain",
                        format!("{d:?} is not a sending domain"),
                        "set the Mailgun sending domain, e.g. \"mg.brand.example\"",
                    );
                }
            }
            "smtp" => {
                let s = &self.smtp;
                if s.host.trim().is_empty() || s.host.contains(['/', ' ', ':']) {
                    sink.push(
                        "delivery.smtp.host",
                        format!("{:?} is not a host name", s.host),
                        "set the relay's host name, e.g. \"smtp.brand.example\"",
                    );
                }
                if s.port == 0 {
                    sink.push(
                        "delivery.smtp.port",
                        "must not be 0",
                        "use 587 (starttls), 465 (tls) or 25",
                    );
                }
                if s.from.trim().is_empty() {
                    sink.push(
                        "delivery.smtp.from",
                        "is empty",
                        format!("set the sender address: {sender_fix}"),
                    );
                } else if s.from.parse::<lettre::message::Mailbox>().is_err() {
                    sink.push(
                        "delivery.smtp.from",
                        format!("{:?} is not an email address", s.from),
                        sender_fix,
                    );
                }
            }
            "whatsapp_cloud" => {
                let w = &self.whatsapp_cloud;
                if w.phone_number_id.is_empty()
                    || !w.phone_number_id.chars().all(|c| c.is_ascii_digit())
                {
                    sink.push(
                        "delivery.whatsapp_cloud.phone_number_id",
                        format!("{:?} is not a phone number id", w.phone_number_id),
                        "set the id (digits) of the business phone number from WhatsApp Manager",
                    );
                }
                let v = w.api_version.strip_prefix('v').unwrap_or("");
                if v.is_empty()
                    || !v
                        .split('.')
                        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                {
                    sink.push(
                        "delivery.whatsapp_cloud.api_version",
                        format!("{:?} is not a Graph API version", w.api_version),
                        "use e.g. \"v21.0\"",
                    );
                }
            }
            "twilio" => {
                let t = &self.twilio;
                let sid = &t.account_sid;
                if !(sid.len() == 34
                    && sid.starts_with("AC")
                    && sid[2..].chars().all(|c| c.is_ascii_hexdigit()))
                {
                    sink.push(
                        "delivery.twilio.account_sid",
                        format!("{sid:?} is not an account SID"),
                        "set the Account SID from the Twilio console (\"AC\" + 32 hex digits)",
                    );
                }
                let service = !t.messaging_service_sid.is_empty();
                if service
                    && !(t.messaging_service_sid.starts_with("MG")
                        && t.messaging_service_sid.len() == 34)
                {
                    sink.push(
                        "delivery.twilio.messaging_service_sid",
                        format!(
                            "{:?} is not a Messaging Service SID",
                            t.messaging_service_sid
                        ),
                        "use \"MG\" + 32 hex digits, or \"\"",
                    );
                }
                if channels.contains(&Channel::Sms) && !service && !is_e164(&t.from) {
                    sink.push("delivery.twilio.from", format!("{:?} is not an E.164 number", t.from), "set the sender number, e.g. \"+14155550123\", or set messaging_service_sid");
                }
                if channels.contains(&Channel::Whatsapp) {
                    let wa = t
                        .whatsapp_from
                        .strip_prefix("whatsapp:")
                        .unwrap_or(&t.whatsapp_from);
                    if !service && !is_e164(wa) {
                        sink.push("delivery.twilio.whatsapp_from", format!("{:?} is not an E.164 number", t.whatsapp_from), "set the WhatsApp sender, e.g. \"+14155550123\", or set messaging_service_sid");
                    }
                    if t.whatsapp_content_sid.is_empty() && t.whatsapp_content_sids.is_empty() {
                        sink.push("delivery.twilio.whatsapp_content_sid", "is empty", "WhatsApp through Twilio sends approved Content templates: set whatsapp_content_sid (\"HX…\") or whatsapp_content_sids");
                    }
                    let sids = std::iter::once((
                        "whatsapp_content_sid".to_string(),
                        &t.whatsapp_content_sid,
                    ))
                    .chain(
                        t.whatsapp_content_sids
                            .iter()
                            .map(|(k, v)| (format!("whatsapp_content_sids.{k}"), v)),
                    );
                    for (k, v) in sids {
                        let valid = v.is_empty() || (v.starts_with("HX") && v.len() == 34);
                        if !valid {
                            sink.push(
                                format!("delivery.twilio.{k}"),
                                format!("{v:?} is not a Content SID"),
                                "use the template's Content SID (\"HX\" + 32 hex digits)",
                            );
                        }
                    }
                }
            }
            _ => {
                if !is_http_url(&self.webhook.url) {
                    sink.push(
                        "delivery.webhook.url",
                        format!("{:?} is not an http(s) URL", self.webhook.url),
                        "set the receiver's URL, e.g. \"https://hooks.brand.example/retentiond\"",
                    );
                }
            }
        }
    }

    /// Builds the providers selected for a channel (only those), reading their credentials
    /// through `env` (use `&|k| std::env::var(k).ok()`). A missing or empty credential variable is
    /// a config error naming the variable. Run [`DeliverySettings::validate`] first: this only
    /// reports what it cannot build.
    pub fn build(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Providers, Vec<ConfigIssue>> {
        super::install_crypto_provider();
        let mut issues = Vec::new();
        let mut sink = IssueSink {
            file: ENV_ISSUE_FILE.to_string(),
            issues: &mut issues,
        };
        let mut providers = Providers::default();
        for ch in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
            let name = self.channel_provider(ch);
            if name.is_empty() {
                continue;
            }
            match provider_channels(name) {
                Some(chs) if chs.contains(&ch) => {}
                _ => {
                    sink.push(
                        format!("delivery.{}", ch.as_str()),
                        format!("cannot send {} with provider {name:?}", ch.as_str()),
                        "run `retentiond check-config` and fix the [delivery] section",
                    );
                    continue;
                }
            }
            if let Some(i) = providers
                .entries
                .iter()
                .position(|e| e.provider.name() == name)
            {
                *providers.slot_mut(ch) = Some(i);
                continue;
            }
            if let Some(provider) = self.build_one(name, ch, env, &mut sink) {
                providers.entries.push(ProviderEntry {
                    provider,
                    limits: self.limits_of(name),
                });
                *providers.slot_mut(ch) = Some(providers.entries.len() - 1);
            }
        }
        if issues.is_empty() {
            Ok(providers)
        } else {
            Err(issues)
        }
    }

    fn build_one(
        &self,
        name: &str,
        ch: Channel,
        env: &dyn Fn(&str) -> Option<String>,
        sink: &mut IssueSink<'_>,
    ) -> Option<Arc<dyn Provider>> {
        let mut secret = |key: &str, var: &str, what: &str| -> Option<String> {
            match env(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => {
                    crate::redact::register(&v);
                    Some(v.trim().to_string())
                }
                None => {
                    sink.push(
                        key,
                        format!("environment variable {var} is not set: it holds the {what} that delivery.{} = \"{name}\" needs", ch.as_str()),
                        format!("set {var}, or choose another provider for delivery.{}", ch.as_str()),
                    );
                    None
                }
            }
        };
        let built: Result<Arc<dyn Provider>, String> = match name {
            "file" => Ok(Arc::new(super::file::FileSink::new(&self.file))),
            "sendgrid" => {
                let key = secret(
                    "delivery.sendgrid.api_key_env",
                    &self.sendgrid.api_key_env,
                    "SendGrid API key",
                )?;
                super::sendgrid::SendGrid::new(&self.sendgrid, key)
                    .map(|p| Arc::new(p) as _)
                    .map_err(|e| e.to_string())
            }
            "postmark" => {
                let token = secret(
                    "delivery.postmark.server_token_env",
                    &self.postmark.server_token_env,
                    "Postmark server token",
                )?;
                super::postmark::Postmark::new(&self.postmark, token)
                    .map(|p| Arc::new(p) as _)
                    .map_err(|e| e.to_string())
            }
            "mailgun" => {
                let key = secret(
                    "delivery.mailgun.api_key_env",
                    &self.mailgun.api_key_env,
                    "Mailgun API key",
                )?;
                crate::redact::register_basic_auth("api", &key);
                super::mailgun::Mailgun::new(&self.mailgun, key)
                    .map(|p| Arc::new(p) as _)
                    .map_err(|e| e.to_string())
            }
            "smtp" => {
                let credentials = if self.smtp.username_env.is_empty() {
                    None
                } else {
                    let user = secret(
                        "delivery.smtp.username_env",
                        &self.smtp.username_env,
                        "SMTP user name",
                    );
                    let password = secret(
                        "delivery.smtp.password_env",
                        &self.smtp.password_env,
                        "SMTP password",
                    );
                    Some((user?, password?))
                };
                super::smtp::Smtp::new(&self.smtp, credentials).map(|p| Arc::new(p) as _)
            }
            "whatsapp_cloud" => {
                let token = secret(
                    "delivery.whatsapp_cloud.access_token_env",
                    &self.whatsapp_cloud.access_token_env,
                    "WhatsApp Cloud API access token",
                )?;
                super::whatsapp::WhatsappCloud::new(&self.whatsapp_cloud, token)
                    .map(|p| Arc::new(p) as _)
                    .map_err(|e| e.to_string())
            }
            "twilio" => {
                let token = secret(
                    "delivery.twilio.auth_token_env",
                    &self.twilio.auth_token_env,
                    "Twilio auth token",
                )?;
                crate::redact::register_basic_auth(&self.twilio.account_sid, &token);
                super::twilio::Twilio::new(&self.twilio, token)
                    .map(|p| Arc::new(p) as _)
                    .map_err(|e| e.to_string())
            }
            _ => {
                let s = secret(
                    "delivery.webhook.secret_env",
                    &self.webhook.secret_env,
                    "webhook signing secret",
                )?;
                super::webhook::Webhook::new(&self.webhook, s.into_bytes())
                    .map(|p| Arc::new(p) as _)
                    .map_err(|e| e.to_string())
            }
        };
        match built {
            Ok(p) => Some(p),
            Err(e) => {
                sink.push(
                    format!("delivery.{name}"),
                    format!("cannot set up provider {name}: {e}"),
                    "check the [delivery] settings of this provider",
                );
                None
            }
        }
    }
}

fn is_e164(s: &str) -> bool {
    matches!(s.strip_prefix('+'), Some(d) if (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(s: &DeliverySettings) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        s.validate("t.toml", &mut issues);
        issues
    }

    fn parse(text: &str) -> (DeliverySettings, Vec<ConfigIssue>) {
        let mut issues = Vec::new();
        let table: toml::Table = text.parse().expect("toml");
        let mut sink = IssueSink {
            file: "t.toml".into(),
            issues: &mut issues,
        };
        let s = DeliverySettings::from_toml(table.get("delivery"), &mut sink);
        s.validate("t.toml", &mut issues);
        (s, issues)
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_valid_and_need_no_credentials() {
        let d = DeliverySettings::default();
        assert!(issues(&d).is_empty(), "{:?}", issues(&d));
        let providers = d
            .build(&no_env)
            .expect("defaults build without any environment");
        for ch in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
            assert_eq!(providers.for_channel(ch).unwrap().name(), "file");
        }
        assert_eq!(
            providers.entries().len(),
            1,
            "one file sink shared by the channels"
        );
        assert_eq!(
            providers.limits(Channel::Email).unwrap().timeout,
            Duration::from_secs(10)
        );
        // The defaults round-trip through TOML, with nothing unknown.
        let text = toml::to_string_pretty(&toml::Table::from_iter([(
            "delivery".to_string(),
            toml::Value::try_from(&d).unwrap(),
        )]))
        .unwrap();
        let (_, issues) = parse(&text);
        assert!(issues.is_empty(), "{issues:?}\n{text}");
    }

    #[test]
    fn missing_credential_names_the_variable() {
        let (d, issues) = parse(
            "[delivery]\nemail = \"sendgrid\"\n[delivery.sendgrid]\nfrom_email = \"hello@vedaroots.example\"\n",
        );
        assert!(issues.is_empty(), "{issues:?}");
        let err = d.build(&no_env).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!(err[0].key, "delivery.sendgrid.api_key_env");
        assert!(
            err[0].message.contains("SENDGRID_API_KEY"),
            "{}",
            err[0].message
        );
        assert!(
            err[0].fix.contains("set SENDGRID_API_KEY"),
            "{}",
            err[0].fix
        );
        // An empty variable counts as missing; a set one builds, and the key stays out of Debug.
        assert!(d.build(&|_| Some("  ".into())).is_err());
        let p = d
            .build(&|k| (k == "SENDGRID_API_KEY").then(|| "SG.secret-value".to_string()))
            .expect("builds");
        assert_eq!(p.for_channel(Channel::Email).unwrap().name(), "sendgrid");
        assert!(!format!("{p:?}").contains("secret-value"));
    }

    #[test]
    fn only_selected_providers_need_credentials() {
        let d = DeliverySettings {
            email: "postmark".into(),
            sms: String::new(),
            whatsapp: "twilio".into(),
            ..Default::default()
        };
        let err = d.build(&no_env).unwrap_err();
        let keys: Vec<&str> = err.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "delivery.postmark.server_token_env",
                "delivery.twilio.auth_token_env"
            ]
        );
        let d = DeliverySettings {
            email: String::new(),
            sms: String::new(),
            whatsapp: String::new(),
            ..Default::default()
        };
        let p = d.build(&no_env).unwrap();
        assert!(p.for_channel(Channel::Email).is_none() && p.entries().is_empty());
    }

    #[test]
    fn unknown_and_unsuitable_providers_are_issues() {
        let (_, issues) = parse(
            "[delivery]\nemail = \"sendgird\"\nsms = \"postmark\"\nwhatsapp = \"carrier-pigeon\"\n",
        );
        let by_key = |k: &str| {
            issues
                .iter()
                .find(|i| i.key == k)
                .unwrap_or_else(|| panic!("no issue for {k}: {issues:?}"))
        };
        assert!(
            by_key("delivery.email")
                .fix
                .contains("did you mean \"sendgrid\""),
            "{issues:?}"
        );
        assert!(by_key("delivery.sms").message.contains("cannot send sms"));
        assert!(by_key("delivery.sms").fix.contains("twilio"));
        assert!(
            by_key("delivery.whatsapp")
                .message
                .contains("unknown provider")
        );
        let d = DeliverySettings {
            email: "twilio".into(),
            ..Default::default()
        };
        assert!(d.build(&no_env).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let (_, issues) = parse(
            "[delivery]\nemail = \"smtp\"\n[delivery.smtp]\nhost = \"smtp.example.com\"\nsecurity = \"ssl\"\nfrom = \"not an address\"\ntimeout_ms = 5\n[delivery.sendgrid]\napi_key = \"oops\"\n",
        );
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"delivery.smtp.security"), "{keys:?}");
        assert!(keys.contains(&"delivery.smtp.from"), "{keys:?}");
        assert!(keys.contains(&"delivery.smtp.timeout_ms"), "{keys:?}");
        assert!(keys.contains(&"delivery.sendgrid.api_key"), "{keys:?}");
        let typo = issues
            .iter()
            .find(|i| i.key == "delivery.sendgrid.api_key")
            .unwrap();
        assert!(typo.fix.contains("api_key_env"), "{}", typo.fix);
        // The wrong `security` does not discard the rest of [delivery.smtp].
        assert!(!keys.contains(&"delivery.smtp.host"), "{keys:?}");
        let (_, issues) = parse(
            "[delivery]\nemial = \"file\"\n[delivery.sendgird]\nfrom_email = \"a@b.example\"\n[delivery.file]\ndir = 3\n",
        );
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["delivery.emial", "delivery.sendgird", "delivery.file.dir"],
            "{issues:?}"
        );
        assert!(
            issues[1].fix.contains("delivery.sendgrid"),
            "{}",
            issues[1].fix
        );
        let (_, issues) = parse("[delivery]\nsmtp = \"x\"\n");
        assert_eq!(issues.len(), 1, "{issues:?}");
    }

    #[test]
    fn selected_providers_need_their_keys() {
        let d = DeliverySettings {
            email: "mailgun".into(),
            sms: "twilio".into(),
            whatsapp: "whatsapp_cloud".into(),
            ..Default::default()
        };
        let keys: Vec<String> = issues(&d).into_iter().map(|i| i.key).collect();
        for k in [
            "delivery.mailgun.from",
            "delivery.mailgun.domain",
            "delivery.twilio.account_sid",
            "delivery.twilio.from",
            "delivery.whatsapp_cloud.phone_number_id",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        let mut d = DeliverySettings {
            email: "webhook".into(),
            sms: "webhook".into(),
            whatsapp: "twilio".into(),
            ..Default::default()
        };
        d.webhook.url = "https://hooks.example.com/retentiond".into();
        d.twilio.account_sid = format!("AC{}", "0".repeat(32));
        d.twilio.whatsapp_from = "whatsapp:+14155550123".into();
        d.twilio
            .whatsapp_content_sids
            .insert("winback_offer".into(), format!("HX{}", "a".repeat(32)));
        assert!(issues(&d).is_empty(), "{:?}", issues(&d));
        d.webhook.secret_env = "not a name".into();
        assert_eq!(issues(&d).len(), 1);
    }

    #[test]
    fn senders() {
        assert!(looks_like_sender("hello@vedaroots.example"));
        assert!(looks_like_sender("Veda Roots <hello@vedaroots.example>"));
        assert!(!looks_like_sender("hello"));
        assert!(!looks_like_sender("Veda <hello@vedaroots.example"));
        assert!(is_e164("+14155550123") && !is_e164("14155550123") && !is_e164("+0123456789"));
    }
}
