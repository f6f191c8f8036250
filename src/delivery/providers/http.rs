//! Shared HTTP plumbing: one client per provider, status classification, Retry-After parsing,
//! and transport errors mapped to [`SendError`].
//!
//! Every HTTP provider maps the failure classes the same way:
//!
//! | what happened | outcome |
//! |---|---|
//! | 429 (with or without `Retry-After`), 408, 5xx | [`SendError::Transient`], `retry_after` from the header |
//! | timeout, refused or reset connection, TLS failure | [`SendError::Transient`] without a status |
//! | other 4xx | [`SendError::Permanent`]; `bad_address` when the provider says the recipient is invalid |
//! | 2xx whose body is not the JSON expected (cut short, HTML, garbage) | **accepted**, without a provider message id |
//!
//! The last row is a choice. The status line is the provider's verdict: a 2xx means it took
//! the message, and none of these APIs has an idempotency key, so treating an unreadable 2xx
//! body as a transient failure would send the customer a second copy on retry. Without the
//! provider's id, its delivery reports are matched by our `message_id` where the provider echoes
//! it (SendGrid `custom_args`, Postmark `Metadata`, Mailgun `v:` variables), else they go
//! unmatched; [`Reply::accepted`] logs a warning so a `base_url` pointing at the wrong server
//! (which would answer every send this way) shows up in the logs.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{Accepted, SendError, install_crypto_provider, sanitize_reason};

/// Largest response body read from a provider (error bodies are short; anything longer is cut).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest Retry-After honoured: a provider asking for more is treated as asking for this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A client with the request timeout from the config, rustls with the `ring` provider, and no
/// redirects (a redirected POST to a provider API means a wrong `base_url`).
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("retentiond/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// HTTP status → error: 408, 429 and 5xx are transient (retry later, after `retry_after` when
/// given); other 4xx are permanent; anything else (1xx, 3xx) is permanent too, since it means the
/// request went somewhere it should not (check `base_url`).
pub fn classify_status(
    status: u16,
    reason: impl Into<String>,
    retry_after: Option<Duration>,
) -> SendError {
    let reason = reason.into();
    match status {
        408 | 429 | 500..=599 => SendError::Transient {
            status: Some(status),
            reason,
            retry_after,
        },
        _ => SendError::Permanent {
            status: Some(status),
            reason,
            bad_address: false,
        },
    }
}

/// Parses a `Retry-After` value: delay seconds (`"7"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, relative to `now`; a date in the past means now).
/// Capped at a day.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// A provider's answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }

    /// A 2xx reply: the provider took the message. `id` is its message id as read from the
    /// reply; when there is none (the body was cut short, was not JSON, or lacked the field) the
    /// message is accepted all the same (see the module docs) and a warning says so.
    pub fn accepted(&self, id: Option<String>) -> Accepted {
        if id.is_none() {
            tracing::warn!(
                status = self.status,
                body_is_json = self.json().is_some(),
                "provider accepted the message but its reply carried no message id: its delivery reports can only be matched by our message id (check base_url if every send says this)"
            );
        }
        Accepted {
            provider_message_id: id,
        }
    }

    /// The error for a non-2xx reply with `detail` (the provider's own message, when the body
    /// had one) as the reason.
    pub fn error(&self, detail: Option<&str>, recipient: &str) -> SendError {
        let detail = match detail {
            Some(d) if !d.trim().is_empty() => d.to_string(),
            _ => self.body.chars().take(300).collect(),
        };
        let reason = match self.status {
            401 | 403 => format!(
                "HTTP {}: authentication or permission failure; check the credential and account settings: {detail}",
                self.status
            ),
            _ => format!("HTTP {}: {detail}", self.status),
        };
        classify_status(
            self.status,
            sanitize_reason(&reason, recipient),
            self.retry_after(),
        )
    }
}

/// Sends a request and reads the reply. Timeouts and connection errors are transient.
pub(crate) async fn execute(
    req: reqwest::RequestBuilder,
    recipient: &str,
) -> Result<Reply, SendError> {
    let resp = req
        .send()
        .await
        .map_err(|e| transport_error(e, recipient))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut resp = resp;
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_BODY_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            // The status is known: a body cut short still tells success from failure.
            Err(e) if (200..300).contains(&status) => {
                tracing::debug!(error = %e.without_url(), "provider reply body cut short");
                break;
            }
            Err(e) => return Err(transport_error(e, recipient)),
        }
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A transport failure (no usable reply): always transient. The URL is left out of the reason
/// (a webhook URL may carry a token).
pub(crate) fn transport_error(e: reqwest::Error, recipient: &str) -> SendError {
    let what = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the reply failed"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    SendError::Transient {
        status: None,
        reason: sanitize_reason(&format!("{what}: {detail}"), recipient),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(!classify_status(s, "x", None).is_permanent(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422, 301] {
            assert!(classify_status(s, "x", None).is_permanent(), "{s}");
        }
        let e = classify_status(503, "busy", Some(Duration::from_secs(3)));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.status(), Some(503));
    }

    #[test]
    fn parses_retry_after() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
