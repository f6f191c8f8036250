//! Known secret values, kept out of error texts and logs.
//!
//! Every secret read from the environment (provider credentials, the unsubscribe and code
//! secrets, webhook secrets, the HTTP bearer token) is registered here when it is read;
//! [`redact`] replaces each occurrence of any of them with [`REDACTED`]. Provider errors pass
//! through it before they become a stored or logged reason (a provider may echo the API key it
//! was sent), and so does every log line written to stderr (`crate::telemetry`).

use std::borrow::Cow;
use std::sync::RwLock;

use base64::Engine as _;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Shorter values are not registered: replacing every 1–3 character match would garble
/// ordinary text (and such a secret is refused or reported as weak anyway).
const MIN_LEN: usize = 4;

/// Registered secrets, longest first (a secret that contains another is replaced whole).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value (trimmed, as the providers use it) for redaction, process-wide.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers `user:password` as HTTP Basic auth sends it (base64), for providers that
/// authenticate that way, so an echoed `Authorization` header is redacted too.
pub fn register_basic_auth(user: &str, password: &str) {
    register(password);
    register(
        &base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.trim())),
    );
}

/// Registers a secret held as bytes (when they are UTF-8, as values from the environment are).
pub fn register_bytes(value: &[u8]) {
    if let Ok(s) = std::str::from_utf8(value) {
        register(s);
    }
}

/// `text` with every registered secret replaced by [`REDACTED`]; borrowed when none occurs.
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), REDACTED));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_replaced_everywhere() {
        register("unit-redact-key-0123456789");
        register("unit-redact-key-0123456789-longer");
        register("abc"); // too short: not registered
        let text = "bad key unit-redact-key-0123456789-longer and unit-redact-key-0123456789; abc";
        assert_eq!(redact(text), "bad key [REDACTED] and [REDACTED]; abc");
        assert!(matches!(redact("nothing secret here"), Cow::Borrowed(_)));
        register_basic_auth("api", "unit-redact-basic-pw");
        let header = base64::engine::general_purpose::STANDARD.encode("api:unit-redact-basic-pw");
        assert_eq!(
            redact(&format!("Authorization: Basic {header}")),
            "Authorization: Basic [REDACTED]"
        );
    }
}
