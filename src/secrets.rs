//! The secrets the configuration names (environment variables in `*_env` keys): which ones a
//! command needs and whether a value is strong enough. One set of rules for what
//! `check-config` reports and what `run`, `serve` and `campaigns` refuse.
//!
//! | secret | missing | weak |
//! |---|---|---|
//! | `campaigns.unsubscribe_secret_env` | error | error |
//! | `campaigns.code_secret_env` (a campaign derives codes) | error | error |
//! | `campaigns.code_secret_env` (no campaign derives codes) | — | warning |
//! | `http.auth_token_env` (when set) | error | error |
//! | a selected provider's credential | error (`Settings::providers`) | warning |
//! | `http.webhooks.*` (not the SendGrid public key) | — (that webhook answers 404) | warning |
//!
//! Weak means under [`MIN_SECRET_BYTES`] bytes or one character repeated. Provider credentials
//! are issued by the provider, so a short one is only a warning: `run` does not refuse it.

use crate::campaigns::Channel;
use crate::config::{ConfigError, ConfigIssue, Settings};
use crate::http::AuthToken;

/// The shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// The fix printed for a missing or weak secret.
pub const STRONG_SECRET_FIX: &str = "set it to a long random value, e.g. `openssl rand -hex 32`";

/// Why `value` is too weak to be a secret, or `None`.
pub fn weakness(value: &[u8]) -> Option<String> {
    if value.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "is shorter than {MIN_SECRET_BYTES} bytes ({} bytes)",
            value.len()
        ));
    }
    if value.iter().all(|b| *b == value[0]) {
        return Some("is one character repeated".into());
    }
    None
}

/// Secret problems: `errors` are what `run`/`serve` refuse to start with, `warnings` what they
/// accept but should not.
#[derive(Debug, Default)]
pub struct SecretReport {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
}

/// Checks every secret the configuration names against `env` (the process environment in the
/// CLI). `needs_code`: some campaign derives per-customer codes. Missing provider credentials
/// are left to [`Settings::providers`], which reports them when it builds the providers.
pub fn check(
    settings: &Settings,
    file: &str,
    needs_code: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> SecretReport {
    let mut report = SecretReport::default();
    let issue = |key: &str, message: String, fix: &str| ConfigIssue {
        file: file.to_string(),
        key: key.to_string(),
        message,
        fix: fix.to_string(),
    };
    let get = |var: &str| env(var).filter(|v| !v.is_empty());
    let c = &settings.campaigns;
    let mut required = vec![(
        "campaigns.unsubscribe_secret_env",
        c.unsubscribe_secret_env.as_str(),
        "signs unsubscribe links",
    )];
    if needs_code {
        required.push((
            "campaigns.code_secret_env",
            c.code_secret_env.as_str(),
            "derives per-customer discount codes (a campaign has `code_prefix`)",
        ));
    }
    if !settings.http.auth_token_env.is_empty() {
        required.push((
            "http.auth_token_env",
            settings.http.auth_token_env.as_str(),
            "GET / and /metrics require as a bearer token",
        ));
    }
    for (key, var, purpose) in required {
        match get(var) {
            None => report.errors.push(issue(
                key,
                format!(
                    "environment variable {var} is not set: it holds the secret that {purpose}"
                ),
                STRONG_SECRET_FIX,
            )),
            Some(v) => {
                if let Some(why) = weakness(v.as_bytes()) {
                    report.errors.push(issue(
                        key,
                        format!("the secret in {var} {why}"),
                        STRONG_SECRET_FIX,
                    ));
                }
            }
        }
    }
    let mut optional: Vec<(String, &str)> = Vec::new();
    if !needs_code {
        optional.push((
            "campaigns.code_secret_env".into(),
            c.code_secret_env.as_str(),
        ));
    }
    for (key, var) in provider_credentials(settings) {
        optional.push((key.into(), var));
    }
    let w = &settings.http.webhooks;
    for (key, var) in [
        ("postmark_basic_auth_env", &w.postmark_basic_auth_env),
        ("mailgun_signing_key_env", &w.mailgun_signing_key_env),
        ("twilio_auth_token_env", &w.twilio_auth_token_env),
        ("whatsapp_app_secret_env", &w.whatsapp_app_secret_env),
        ("whatsapp_verify_token_env", &w.whatsapp_verify_token_env),
        ("retentiond_secret_env", &w.retentiond_secret_env),
    ] {
        optional.push((format!("http.webhooks.{key}"), var.as_str()));
    }
    let mut seen = std::collections::HashSet::new();
    for (key, var) in optional {
        if !seen.insert((key.clone(), var)) {
            continue;
        }
        if let Some(why) = get(var).and_then(|v| weakness(v.trim().as_bytes())) {
            report.warnings.push(issue(
                &key,
                format!("the secret in {var} {why}"),
                "use the full credential or a long random value",
            ));
        }
    }
    report
}

/// The credential variables of the providers selected for a channel: (key, variable).
fn provider_credentials(settings: &Settings) -> Vec<(&'static str, &str)> {
    let d = &settings.delivery;
    let mut out = Vec::new();
    for ch in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
        let entry = match d.channel_provider(ch) {
            "sendgrid" => (
                "delivery.sendgrid.api_key_env",
                d.sendgrid.api_key_env.as_str(),
            ),
            "postmark" => (
                "delivery.postmark.server_token_env",
                d.postmark.server_token_env.as_str(),
            ),
            "mailgun" => (
                "delivery.mailgun.api_key_env",
                d.mailgun.api_key_env.as_str(),
            ),
            "smtp" if !d.smtp.username_env.is_empty() => {
                ("delivery.smtp.password_env", d.smtp.password_env.as_str())
            }
            "whatsapp_cloud" => (
                "delivery.whatsapp_cloud.access_token_env",
                d.whatsapp_cloud.access_token_env.as_str(),
            ),
            "twilio" => (
                "delivery.twilio.auth_token_env",
                d.twilio.auth_token_env.as_str(),
            ),
            "webhook" => ("delivery.webhook.secret_env", d.webhook.secret_env.as_str()),
            _ => continue,
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

/// The bearer token for `GET /` and `/metrics` (`http.auth_token_env`), registered for
/// redaction: `None` when no variable is configured; a config error when it is configured but
/// unset or weak (the server must not start open when a token was asked for).
pub fn http_auth_token(
    settings: &Settings,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<AuthToken>, ConfigError> {
    let var = &settings.http.auth_token_env;
    if var.is_empty() {
        return Ok(None);
    }
    let problem = |message: String| ConfigError {
        issues: vec![ConfigIssue {
            file: file.to_string(),
            key: "http.auth_token_env".into(),
            message,
            fix: STRONG_SECRET_FIX.into(),
        }],
    };
    let value = env(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| problem(format!("environment variable {var} is not set: it holds the bearer token GET / and /metrics require")))?;
    if let Some(why) = weakness(value.as_bytes()) {
        return Err(problem(format!("the token in {var} {why}")));
    }
    crate::redact::register(&value);
    Ok(Some(AuthToken::new(&value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRONG: &str = "4f1c9a7e2b6d8e0f3a5c7b9d1e2f4a6c";

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn weak_values() {
        assert!(
            weakness(b"short")
                .unwrap()
                .contains("shorter than 16 bytes (5 bytes)")
        );
        assert!(
            weakness(b"aaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap()
                .contains("repeated")
        );
        assert_eq!(weakness(STRONG.as_bytes()), None);
    }

    #[test]
    fn missing_and_weak_secrets_are_reported_by_key() {
        let mut s = Settings::default();
        s.http.auth_token_env = "OPS_TOKEN".into();
        s.delivery.email = "sendgrid".into();
        let r = check(
            &s,
            "r.toml",
            true,
            &env_of(&[
                ("RETENTIOND_CODE_SECRET", "xxxxxxxxxxxxxxxxxxxxxxxx"),
                ("SENDGRID_API_KEY", "SG.short"),
                ("RETENTIOND_TWILIO_AUTH_TOKEN", "tok"),
            ]),
        );
        let keys: Vec<&str> = r.errors.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "campaigns.unsubscribe_secret_env",
                "campaigns.code_secret_env",
                "http.auth_token_env"
            ],
            "{:?}",
            r.errors
        );
        assert!(
            r.errors[0]
                .message
                .contains("RETENTIOND_UNSUBSCRIBE_SECRET is not set")
                && r.errors[0].fix.contains("openssl rand")
        );
        assert!(r.errors[1].message.contains("one character repeated"));
        assert!(r.errors.iter().all(|i| i.file == "r.toml"));
        let warned: Vec<&str> = r.warnings.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            warned,
            [
                "delivery.sendgrid.api_key_env",
                "http.webhooks.twilio_auth_token_env"
            ],
            "{:?}",
            r.warnings
        );
        // No secret value is printed.
        let all = format!("{:?}", r);
        assert!(
            !all.contains("SG.short") && !all.contains("xxxxxxxx"),
            "{all}"
        );

        let ok = check(
            &s,
            "r.toml",
            false,
            &env_of(&[
                ("RETENTIOND_UNSUBSCRIBE_SECRET", STRONG),
                ("OPS_TOKEN", STRONG),
                ("SENDGRID_API_KEY", STRONG),
            ]),
        );
        assert!(ok.errors.is_empty() && ok.warnings.is_empty(), "{ok:?}");
    }

    #[test]
    fn auth_token_is_optional_but_enforced_when_named() {
        let mut s = Settings::default();
        assert!(
            http_auth_token(&s, "r.toml", &env_of(&[]))
                .unwrap()
                .is_none()
        );
        s.http.auth_token_env = "OPS_TOKEN".into();
        let e = http_auth_token(&s, "r.toml", &env_of(&[])).unwrap_err();
        assert!(
            e.to_string()
                .contains("`http.auth_token_env`: environment variable OPS_TOKEN is not set"),
            "{e}"
        );
        assert!(
            http_auth_token(
                &s,
                "r.toml",
                &env_of(&[("OPS_TOKEN", "0000000000000000000")])
            )
            .is_err()
        );
        let t = http_auth_token(&s, "r.toml", &env_of(&[("OPS_TOKEN", STRONG)]))
            .unwrap()
            .unwrap();
        assert!(t.matches(STRONG));
    }
}
