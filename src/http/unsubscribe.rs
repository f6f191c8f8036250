//! One-click unsubscribe (RFC 8058).
//!
//! `GET /unsubscribe/{token}` only shows a confirmation page: link scanners and previews fetch
//! links, and a GET must not unsubscribe anyone. The page's form, and mail clients honouring
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, POST to the same URL; the POST verifies
//! the token's signature, adds the suppression (once) and marks the customer's queued messages
//! on that channel `suppressed`, all in one transaction. The POST body is not needed and not
//! read. A token that does not verify gets 400 and changes nothing.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::store::{self, NewSuppression};
use super::{Shared, now};
use crate::unsubscribe::{Claims, verify};

/// Channels a token may name.
pub const CHANNELS: [&str; 3] = ["email", "sms", "whatsapp"];

fn channel_label(channel: &str) -> &'static str {
    match channel {
        "email" => "emails",
        "sms" => "text messages",
        "whatsapp" => "WhatsApp messages",
        _ => "messages",
    }
}

fn claims(secret: &[u8], token: &str) -> Option<Claims> {
    verify(secret, token)
        .ok()
        .filter(|c| CHANNELS.contains(&c.channel.as_str()) && !c.customer_id.is_empty())
}

fn invalid_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Invalid link",
        "<p>This unsubscribe link is not valid. Please use the link from the message exactly as it was sent, or reply to the message to be unsubscribed.</p>",
    )
}

/// `GET /unsubscribe/{token}`: the confirmation page. Changes nothing.
pub(crate) async fn confirm_page(State(s): State<Shared>, Path(token): Path<String>) -> Response {
    let Some(c) = claims(&s.unsubscribe_secret, &token) else {
        return invalid_link();
    };
    let brand = escape(&s.brand_name);
    let what = channel_label(&c.channel);
    // No action attribute: the form posts to this very URL (works behind a path prefix too).
    let body = format!(
        "<p>Stop receiving {what} from {brand}?</p>\n\
         <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>"
    );
    page(StatusCode::OK, "Unsubscribe", &body)
}

/// `POST /unsubscribe/{token}`: suppresses the token's customer on the token's channel.
pub(crate) async fn unsubscribe(State(s): State<Shared>, Path(token): Path<String>) -> Response {
    let Some(c) = claims(&s.unsubscribe_secret, &token) else {
        tracing::warn!("unsubscribe with an invalid token");
        ::metrics::counter!("retentiond_unsubscribes_total", "channel" => "", "result" => "invalid_token").increment(1);
        return invalid_link();
    };
    let suppression = NewSuppression {
        customer_id: &c.customer_id,
        channel: Some(&c.channel),
        address: None,
        reason: "unsubscribe",
        source: "link",
    };
    let result = async {
        let mut tx = s.db.begin().await?;
        let added = store::add_suppression(&mut tx, &suppression, now()).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(added)
    }
    .await;
    match result {
        Ok(added) => {
            tracing::info!(customer_id = %c.customer_id, channel = %c.channel, new = added, "unsubscribed via link");
            ::metrics::counter!("retentiond_unsubscribes_total", "channel" => c.channel.clone(), "result" => if added { "added" } else { "already" }).increment(1);
            let body = format!(
                "<p>You will no longer receive {} from {}.</p>",
                channel_label(&c.channel),
                escape(&s.brand_name)
            );
            page(StatusCode::OK, "You are unsubscribed", &body)
        }
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe failed (rolled back)");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Please try again",
                "<p>Something went wrong on our side; nothing was changed. Please try again in a minute.</p>",
            )
        }
    }
}

/// A small self-contained HTML page; never cached, never framed, no referrer (the URL holds
/// the token).
fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}\
         button{{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}}</style></head>\n\
         <body><h1>{title}</h1>\n{body_html}\n</body></html>\n",
        title = escape(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    r
}

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">Tom & Jerry's</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
    }

    #[test]
    fn tokens_for_unknown_channels_are_refused() {
        let secret = b"s";
        let token = |channel: &str| {
            crate::unsubscribe::sign(
                secret,
                &Claims {
                    customer_id: "c1".into(),
                    channel: channel.into(),
                    issued_at: 0,
                },
            )
        };
        assert!(claims(secret, &token("email")).is_some());
        assert!(claims(secret, &token("pigeon")).is_none());
        assert!(claims(b"other", &token("email")).is_none());
    }
}
