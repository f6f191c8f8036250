//! Optional bearer-token auth for the operator endpoints, `GET /` (the report) and `/metrics`.
//! Webhooks and unsubscribe links carry their own credentials, and `/healthz` must answer load
//! balancers, so those stay open.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Shared, plain};

/// The token from `http.auth_token_env`. Only its SHA-256 is kept, so comparing a guess takes
/// the same time whatever its length or how much of it is right.
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
}

impl AuthToken {
    pub fn new(token: &str) -> AuthToken {
        AuthToken {
            digest: Sha256::digest(token.trim().as_bytes()).into(),
        }
    }

    /// Whether `given` is the token (constant time).
    pub fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(given.ct_eq(&self.digest))
    }

    /// Whether an `Authorization` header value carries the token (`Bearer <token>`, the scheme
    /// case-insensitive as RFC 7235 says).
    pub fn authorizes(&self, header_value: Option<&HeaderValue>) -> bool {
        let Some(value) = header_value.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                self.matches(token.trim())
            }
            _ => false,
        }
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Route layer of the operator endpoints: without a configured token everything passes;
/// with one, a request without `Authorization: Bearer <token>` gets 401.
pub(crate) async fn require_token(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.auth_token
        && !token.authorizes(req.headers().get(header::AUTHORIZATION))
    {
        // The route is in the request's span; the header's value is never logged.
        tracing::warn!("operator endpoint: missing or wrong bearer token");
        let mut resp = plain(
            StatusCode::UNAUTHORIZED,
            "unauthorized: send the token from http.auth_token_env as `Authorization: Bearer <token>`",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"retentiond\""),
        );
        return resp;
    }
    next.run(req).await
}

/// Whether serving on `addr` exposes the report and metrics to the network: a non-loopback
/// address without a token.
pub fn exposed(addr: SocketAddr, token: Option<&AuthToken>) -> bool {
    token.is_none() && !addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_token() {
        let t = AuthToken::new("s3cret-operator-token-0123");
        assert!(t.matches("s3cret-operator-token-0123"));
        assert!(!t.matches("s3cret-operator-token-012"));
        assert!(!t.matches(""));
        let h = |v: &str| Some(HeaderValue::from_str(v).unwrap());
        assert!(t.authorizes(h("Bearer s3cret-operator-token-0123").as_ref()));
        assert!(t.authorizes(h("bearer s3cret-operator-token-0123").as_ref()));
        assert!(!t.authorizes(h("Basic s3cret-operator-token-0123").as_ref()));
        assert!(!t.authorizes(h("Bearer wrong").as_ref()));
        assert!(!t.authorizes(None));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn exposure() {
        let t = AuthToken::new("x");
        for (addr, open) in [
            ("127.0.0.1:8080", false),
            ("[::1]:8080", false),
            ("[::ffff:127.0.0.1]:1", false),
            ("0.0.0.0:8080", true),
            ("[::]:80", true),
            ("10.1.2.3:80", true),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(exposed(addr, None), open, "{addr}");
            assert!(!exposed(addr, Some(&t)), "{addr}");
        }
    }
}
