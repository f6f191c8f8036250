//! Webhook credentials: the config names environment variables, the secrets come from them.

use serde::{Deserialize, Serialize};

use crate::config::IssueSink;

/// Which environment variables hold each provider's webhook credentials (a section next to
/// `[http]`, e.g. `[http.webhooks]` or `[webhooks]`). A provider whose variable is unset or
/// empty has its webhook endpoint answer 404 "not configured".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// SendGrid Signed Event Webhook verification key: the base64 public key shown under Mail
    /// Settings → Event Webhook. Default "RETENTIOND_SENDGRID_WEBHOOK_KEY".
    pub sendgrid_public_key_env: String,
    /// Postmark webhook HTTP Basic auth credentials as `user:pass` (the ones put in the webhook
    /// URL). Default "RETENTIOND_POSTMARK_WEBHOOK_AUTH".
    pub postmark_basic_auth_env: String,
    /// Mailgun HTTP webhook signing key. Default "RETENTIOND_MAILGUN_WEBHOOK_SIGNING_KEY".
    pub mailgun_signing_key_env: String,
    /// Twilio account auth token (signs `X-Twilio-Signature`). Default "RETENTIOND_TWILIO_AUTH_TOKEN".
    pub twilio_auth_token_env: String,
    /// Meta app secret (signs `X-Hub-Signature-256`). Default "RETENTIOND_WHATSAPP_APP_SECRET".
    pub whatsapp_app_secret_env: String,
    /// The verify token typed into Meta's webhook setup. Default "RETENTIOND_WHATSAPP_VERIFY_TOKEN".
    pub whatsapp_verify_token_env: String,
    /// The signing secret of our own webhook provider, which its receivers also sign the events
    /// they post back to `/webhooks/retentiond` with. Default "RETENTIOND_WEBHOOK_SECRET", the
    /// default of `delivery.webhook.secret_env`: keep the two naming the same variable.
    pub retentiond_secret_env: String,
    /// How far (seconds, either way) the timestamp a provider signs (SendGrid, Mailgun,
    /// `retentiond`) may be from our clock; a request outside it gets 401. Received webhook
    /// events are kept at least twice this plus an hour, whatever
    /// `housekeeping.keep_webhook_events_days` says. 1 to 86400; default 300.
    pub tolerance_seconds: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            sendgrid_public_key_env: "RETENTIOND_SENDGRID_WEBHOOK_KEY".into(),
            postmark_basic_auth_env: "RETENTIOND_POSTMARK_WEBHOOK_AUTH".into(),
            mailgun_signing_key_env: "RETENTIOND_MAILGUN_WEBHOOK_SIGNING_KEY".into(),
            twilio_auth_token_env: "RETENTIOND_TWILIO_AUTH_TOKEN".into(),
            whatsapp_app_secret_env: "RETENTIOND_WHATSAPP_APP_SECRET".into(),
            whatsapp_verify_token_env: "RETENTIOND_WHATSAPP_VERIFY_TOKEN".into(),
            retentiond_secret_env: "RETENTIOND_WEBHOOK_SECRET".into(),
            tolerance_seconds: super::webhooks::DEFAULT_TOLERANCE_SECS,
        }
    }
}

impl WebhookSettings {
    fn entries(&self) -> [(&'static str, &str); 7] {
        [
            ("sendgrid_public_key_env", &self.sendgrid_public_key_env),
            ("postmark_basic_auth_env", &self.postmark_basic_auth_env),
            ("mailgun_signing_key_env", &self.mailgun_signing_key_env),
            ("twilio_auth_token_env", &self.twilio_auth_token_env),
            ("whatsapp_app_secret_env", &self.whatsapp_app_secret_env),
            ("whatsapp_verify_token_env", &self.whatsapp_verify_token_env),
            ("retentiond_secret_env", &self.retentiond_secret_env),
        ]
    }

    /// Reads the secrets through `env` (`|k| std::env::var(k).ok()` in the daemon). Values are
    /// trimmed; empty means unset.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> WebhookSecrets {
        let get = |name: &str| {
            let v = env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())?;
            crate::redact::register(&v);
            Some(v)
        };
        WebhookSecrets {
            sendgrid_public_key: get(&self.sendgrid_public_key_env),
            postmark_basic_auth: get(&self.postmark_basic_auth_env),
            mailgun_signing_key: get(&self.mailgun_signing_key_env),
            twilio_auth_token: get(&self.twilio_auth_token_env),
            whatsapp_app_secret: get(&self.whatsapp_app_secret_env),
            whatsapp_verify_token: get(&self.whatsapp_verify_token_env),
            retentiond_secret: get(&self.retentiond_secret_env),
            tolerance_secs: self.tolerance_seconds,
        }
    }

    /// Format checks for `check-config`; `prefix` is the section's key path (e.g. "http.webhooks").
    pub fn validate(&self, prefix: &str, sink: &mut IssueSink<'_>) {
        for (key, name) in self.entries() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                sink.push(
                    format!("{prefix}.{key}"),
                    format!("{name:?} is not an environment variable name"),
                    "use a name such as RETENTIOND_TWILIO_AUTH_TOKEN",
                );
            }
        }
        let max = super::webhooks::MAX_TOLERANCE_SECS;
        if self.tolerance_seconds == 0 || self.tolerance_seconds > max {
            sink.push(
                format!("{prefix}.tolerance_seconds"),
                format!("{} is outside 1..={max}", self.tolerance_seconds),
                "use a few minutes (default 300): wide enough for clock skew and provider delays, short enough that a captured request expires",
            );
        }
    }
}

/// The resolved webhook credentials, and the signed-timestamp tolerance. `Debug` shows only
/// which credentials are set.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecrets {
    /// base64 DER (SubjectPublicKeyInfo) P-256 public key.
    pub sendgrid_public_key: Option<String>,
    /// `user:pass`.
    pub postmark_basic_auth: Option<String>,
    pub mailgun_signing_key: Option<String>,
    pub twilio_auth_token: Option<String>,
    pub whatsapp_app_secret: Option<String>,
    pub whatsapp_verify_token: Option<String>,
    /// Our webhook provider's signing secret (verifies `/webhooks/retentiond`).
    pub retentiond_secret: Option<String>,
    /// `http.webhooks.tolerance_seconds`.
    pub tolerance_secs: u32,
}

impl Default for WebhookSecrets {
    fn default() -> Self {
        Self {
            sendgrid_public_key: None,
            postmark_basic_auth: None,
            mailgun_signing_key: None,
            twilio_auth_token: None,
            whatsapp_app_secret: None,
            whatsapp_verify_token: None,
            retentiond_secret: None,
            tolerance_secs: super::webhooks::DEFAULT_TOLERANCE_SECS,
        }
    }
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("WebhookSecrets")
            .field("sendgrid_public_key", &shown(&self.sendgrid_public_key))
            .field("postmark_basic_auth", &shown(&self.postmark_basic_auth))
            .field("mailgun_signing_key", &shown(&self.mailgun_signing_key))
            .field("twilio_auth_token", &shown(&self.twilio_auth_token))
            .field("whatsapp_app_secret", &shown(&self.whatsapp_app_secret))
            .field("whatsapp_verify_token", &shown(&self.whatsapp_verify_token))
            .field("retentiond_secret", &shown(&self.retentiond_secret))
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl WebhookSecrets {
    /// Whether `provider`'s webhook can be verified.
    pub fn is_configured(&self, provider: &str) -> bool {
        match provider {
            "sendgrid" => self.sendgrid_public_key.is_some(),
            "postmark" => self.postmark_basic_auth.is_some(),
            "mailgun" => self.mailgun_signing_key.is_some(),
            "twilio" => self.twilio_auth_token.is_some(),
            "whatsapp" => self.whatsapp_app_secret.is_some(),
            "retentiond" => self.retentiond_secret.is_some(),
            _ => false,
        }
    }

    /// Values that are set but unusable (each message names the provider, never the value).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(key) = &self.sendgrid_public_key
            && let Err(e) = super::webhooks::sendgrid::parse_public_key(key)
        {
            out.push(format!(
                "sendgrid: the verification key is not a base64 P-256 public key ({e})"
            ));
        }
        if let Some(auth) = &self.postmark_basic_auth
            && !auth.contains(':')
        {
            out.push("postmark: the basic auth credentials must be `user:pass`".into());
        }
        if self.whatsapp_app_secret.is_some() != self.whatsapp_verify_token.is_some() {
            out.push("whatsapp: set both the app secret (events) and the verify token (subscription handshake)".into());
        }
        out
    }

    /// Logs, once at start, which webhook endpoints are live and which answer "not configured".
    pub fn log_status(&self) {
        let (on, off): (Vec<&str>, Vec<&str>) =
            super::PROVIDERS.iter().partition(|p| self.is_configured(p));
        tracing::info!(configured = ?on, not_configured = ?off, "webhook endpoints");
        for p in self.problems() {
            tracing::error!("webhook configuration: {p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_reads_named_variables_and_ignores_empty_ones() {
        let s = WebhookSettings::default();
        let env = |k: &str| match k {
            "RETENTIOND_MAILGUN_WEBHOOK_SIGNING_KEY" => Some(" key-1 ".to_string()),
            "RETENTIOND_TWILIO_AUTH_TOKEN" => Some("   ".to_string()),
            "RETENTIOND_WEBHOOK_SECRET" => Some("whsec-1\n".to_string()),
            _ => None,
        };
        let secrets = s.resolve(&env);
        assert_eq!(secrets.mailgun_signing_key.as_deref(), Some("key-1"));
        assert_eq!(secrets.retentiond_secret.as_deref(), Some("whsec-1"));
        assert!(secrets.is_configured("retentiond"));
        assert!(secrets.twilio_auth_token.is_none());
        assert!(secrets.is_configured("mailgun"));
        assert!(!secrets.is_configured("twilio"));
        assert!(!secrets.is_configured("nonsense"));
    }

    #[test]
    fn debug_hides_values() {
        let secrets = WebhookSecrets {
            twilio_auth_token: Some("hunter2".into()),
            ..Default::default()
        };
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<set>"));
    }

    #[test]
    fn bad_env_names_are_reported() {
        let s = WebhookSettings {
            twilio_auth_token_env: "not a name".into(),
            ..Default::default()
        };
        let mut issues = Vec::new();
        let mut sink = IssueSink {
            file: "t.toml".into(),
            issues: &mut issues,
        };
        s.validate("http.webhooks", &mut sink);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "http.webhooks.twilio_auth_token_env");
        let mut none = Vec::new();
        WebhookSettings::default().validate(
            "http.webhooks",
            &mut IssueSink {
                file: "t.toml".into(),
                issues: &mut none,
            },
        );
        assert!(none.is_empty());
    }

    #[test]
    fn tolerance_is_bounded_and_carried_to_the_secrets() {
        let issues_for = |tolerance_seconds: u32| {
            let mut issues = Vec::new();
            WebhookSettings {
                tolerance_seconds,
                ..Default::default()
            }
            .validate(
                "http.webhooks",
                &mut IssueSink {
                    file: "t.toml".into(),
                    issues: &mut issues,
                },
            );
            issues
        };
        for bad in [0, 86_401, u32::MAX] {
            let issues = issues_for(bad);
            assert_eq!(issues.len(), 1, "{bad}: {issues:?}");
            assert_eq!(issues[0].key, "http.webhooks.tolerance_seconds");
            assert!(
                issues[0].message.contains(&bad.to_string()),
                "{}",
                issues[0].message
            );
        }
        for good in [1, 300, 86_400] {
            assert!(issues_for(good).is_empty(), "{good}");
        }
        assert_eq!(WebhookSettings::default().tolerance_seconds, 300);
        assert_eq!(WebhookSecrets::default().tolerance_secs, 300);
        let s = WebhookSettings {
            tolerance_seconds: 42,
            ..Default::default()
        };
        assert_eq!(s.resolve(&|_| None).tolerance_secs, 42);
    }

    #[test]
    fn problems_flag_unusable_values() {
        let secrets = WebhookSecrets {
            sendgrid_public_key: Some("not base64 at all!".into()),
            postmark_basic_auth: Some("nocolon".into()),
            whatsapp_app_secret: Some("s".into()),
            ..Default::default()
        };
        let p = secrets.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(WebhookSecrets::default().problems().is_empty());
    }
}
