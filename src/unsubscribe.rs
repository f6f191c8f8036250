//! Signed one-click unsubscribe tokens (RFC 8058 links, SMS/WhatsApp opt-out links).
//!
//! The token carries who unsubscribes from what, so the unsubscribe endpoint needs no lookup
//! table and works for every message ever sent; the HMAC stops anyone from unsubscribing
//! other customers by editing the link.
//!
//! Format: `base64url(JSON claims) "." base64url(HMAC-SHA256(secret, first part))`, both
//! without padding, so the token can go into a URL path or query unescaped.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest token `verify` looks at; real ones are ~150 characters. Bounds the work an
/// attacker can make the endpoint do.
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a token asserts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub customer_id: String,
    /// `email`, `sms` or `whatsapp`.
    pub channel: String,
    /// Unix seconds; lets the endpoint log or refuse very old links if policy requires.
    pub issued_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed unsubscribe token")]
    Malformed,
    #[error("unsubscribe token signature does not match")]
    BadSignature,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Token for `claims`, signed with `secret`.
pub fn sign(secret: &[u8], claims: &Claims) -> String {
    // Serializing three plain fields can't fail.
    let json = serde_json::to_vec(claims).expect("claims serialize to JSON");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let mut mac = mac(secret);
    mac.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{payload}.{signature}")
}

/// Claims of a token made by [`sign`] with the same secret. The signature is checked in
/// constant time before the payload is parsed, so untrusted JSON is never looked at.
pub fn verify(secret: &[u8], token: &str) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() || signature.contains('.') {
        return Err(TokenError::Malformed);
    }
    // The decoder rejects padding and non-canonical trailing bits, so each signature has
    // exactly one spelling.
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unsubscribe test secret ........";

    fn claims() -> Claims {
        Claims {
            customer_id: "cust-1042".into(),
            channel: "email".into(),
            issued_at: 1_750_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let token = sign(SECRET, &claims());
        assert_eq!(verify(SECRET, &token), Ok(claims()));
        // deterministic: the same claims give the same link
        assert_eq!(token, sign(SECRET, &claims()));
    }

    #[test]
    fn round_trip_unusual_ids() {
        let c = Claims {
            customer_id: "ä/?&=.\"\\ 😀".into(),
            channel: "sms".into(),
            issued_at: -1,
        };
        assert_eq!(verify(SECRET, &sign(SECRET, &c)), Ok(c));
    }

    #[test]
    fn token_is_url_safe() {
        let c = Claims {
            customer_id: "???>>>~~~".repeat(5),
            ..claims()
        };
        let token = sign(SECRET, &c);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "{token}"
        );
        assert_eq!(token.matches('.').count(), 1);
    }

    #[test]
    fn altered_payload_is_rejected() {
        let token = sign(SECRET, &claims());
        let (_, signature) = token.split_once('.').unwrap();
        let forged = Claims {
            customer_id: "cust-9999".into(),
            ..claims()
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify(SECRET, &format!("{forged_payload}.{signature}")),
            Err(TokenError::BadSignature)
        );
        // flipping one character of the payload
        let mut bytes = token.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(verify(SECRET, &flipped), Err(TokenError::BadSignature));
    }

    #[test]
    fn altered_signature_is_rejected() {
        let token = sign(SECRET, &claims());
        let (payload, signature) = token.split_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
        sig[0] ^= 1;
        let altered = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(verify(SECRET, &altered), Err(TokenError::BadSignature));
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let token = sign(SECRET, &claims());
        assert_eq!(
            verify(b"another secret", &token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn truncated_tokens_are_rejected() {
        let token = sign(SECRET, &claims());
        for len in 0..token.len() {
            assert!(
                verify(SECRET, &token[..len]).is_err(),
                "accepted prefix of length {len}"
            );
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for garbage in [
            "",
            ".",
            "abc",
            "a.b",
            "..",
            "a.b.c",
            "!!!.###",
            "eyJ9.",
            "€€€.€€€",
        ] {
            assert!(verify(SECRET, garbage).is_err(), "{garbage:?}");
        }
        let token = sign(SECRET, &claims());
        assert_eq!(
            verify(SECRET, &format!("{token}.x")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(SECRET, &format!("{token}=")),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(SECRET, &"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn validly_signed_non_claims_payload_is_malformed() {
        // only reachable by someone holding the secret, but must not panic
        let payload = URL_SAFE_NO_PAD.encode(b"[1,2,3]");
        let mut m = mac(SECRET);
        m.update(payload.as_bytes());
        let token = format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        );
        assert_eq!(verify(SECRET, &token), Err(TokenError::Malformed));
    }
}
