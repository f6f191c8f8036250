//! SMTP relay through lettre (`AsyncSmtpTransport<Tokio1Executor>`, rustls with the `ring`
//! provider): `multipart/alternative` text + HTML, the `List-Unsubscribe` headers, and a
//! `Message-ID` derived from the idempotency key (so a resend carries the same id, and bounces
//! can be matched to the message).
//!
//! Replies: 5xx is permanent (a bad mailbox, per its enhanced status code, is a bad address),
//! 4xx is transient, and connection, TLS and timeout errors are transient. The `status` of a
//! [`SendError`] from this provider is the SMTP reply code. SMTP has no idempotency: a resend
//! after a crash may deliver twice (with the same Message-ID, which some clients collapse).

use std::sync::OnceLock;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{AsyncTransport as _, Message, Tokio1Executor};
use sha2::{Digest as _, Sha256};

use super::config::{SmtpSecurity, SmtpSettings};
use super::{
    Accepted, Outgoing, Provider, SendError, install_crypto_provider, sanitize_reason, traced,
    wrong_channel,
};
use crate::campaigns::Channel;
use crate::messages::RenderedEmail;
use crate::selection::offer::Rendered;

pub struct Smtp {
    /// Built on first send: lettre's connection pool spawns a Tokio task when it is created
    /// (and when it is dropped), so it must live inside the runtime.
    builder: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    timeout: Duration,
    endpoint: String,
}

impl std::fmt::Debug for Smtp {
    // The transport holds the credentials: show only where it connects.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .finish()
    }
}

/// `<32 hex digits of SHA-256(idempotency key)@domain>`: stable across resends of one message.
pub fn message_id_for(idempotency_key: &str, domain: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("<{hex}.retentiond@{domain}>")
}

impl Smtp {
    /// `credentials` = (user name, password), or `None` to send without AUTH.
    pub fn new(s: &SmtpSettings, credentials: Option<(String, String)>) -> Result<Smtp, String> {
        install_crypto_provider();
        let from: Mailbox = s
            .from
            .parse()
            .map_err(|e| format!("from {:?} is not a mailbox: {e}", s.from))?;
        let mut builder = match s.security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)
                .map_err(|e| e.to_string())?,
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host).map_err(|e| e.to_string())?
            }
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host),
        };
        let timeout = Duration::from_millis(s.timeout_ms);
        builder = builder
            .port(s.port)
            .timeout(Some(timeout))
            .hello_name(ClientId::Domain(from.email.domain().to_string()))
            .pool_config(PoolConfig::new().max_size(s.concurrency.max(1)));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Smtp {
            builder,
            transport: OnceLock::new(),
            from,
            timeout,
            endpoint: format!("{}:{} ({:?})", s.host, s.port, s.security),
        })
    }

    /// The MIME message for one email.
    pub fn message(
        &self,
        msg: &Outgoing<'_>,
        to: &str,
        email: &RenderedEmail,
    ) -> Result<Message, SendError> {
        let to: Mailbox = to.parse().map_err(|e| SendError::Permanent {
            status: None,
            reason: sanitize_reason(&format!("invalid recipient address {to:?}: {e}"), to),
            bad_address: true,
        })?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(message_id_for(
                msg.idempotency_key,
                self.from.email.domain(),
            )));
        for (name, value) in [
            ("List-Unsubscribe", &email.list_unsubscribe),
            ("List-Unsubscribe-Post", &email.list_unsubscribe_post),
        ] {
            if !value.is_empty() {
                b = b.raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str(name),
                    value.clone(),
                ));
            }
        }
        if msg.test {
            b = b.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Retentiond-Test"),
                "true".to_string(),
            ));
        }
        b.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            email.html.clone(),
        ))
        .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))
    }

    async fn send_email(
        &self,
        msg: &Outgoing<'_>,
        to: &str,
        email: &RenderedEmail,
    ) -> Result<Accepted, SendError> {
        let message = self.message(msg, to, email)?;
        let message_id = message.headers().get_raw("Message-ID").map(str::to_string);
        let transport = self.transport.get_or_init(|| self.builder.clone().build());
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(Accepted {
                provider_message_id: message_id,
            }),
            Ok(Err(e)) => Err(classify(&e, to)),
            Err(_) => Err(SendError::transient(format!(
                "SMTP send timed out after {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        // Dropping the pool spawns a task that closes its connections; outside a runtime (the
        // process is ending) that would panic, so let the OS close them instead.
        if tokio::runtime::Handle::try_current().is_err()
            && let Some(transport) = self.transport.take()
        {
            std::mem::forget(transport);
        }
    }
}

/// SMTP error → [`SendError`]: 5xx permanent, 4xx and transport errors transient.
pub fn classify(e: &lettre::transport::smtp::Error, to: &str) -> SendError {
    let detail = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let code = e.status().map(u16::from);
    let reason = sanitize_reason(&e.to_string(), to);
    if e.is_permanent() {
        SendError::Permanent {
            status: code,
            bad_address: is_bad_mailbox(code.unwrap_or(550), &detail),
            reason,
        }
    } else if e.is_transient() {
        SendError::Transient {
            status: code,
            reason,
            retry_after: None,
        }
    } else if e.is_client() {
        SendError::Permanent {
            status: None,
            reason,
            bad_address: false,
        }
    } else {
        // Connection, TLS, timeout, malformed reply, transport shut down.
        SendError::Transient {
            status: None,
            reason,
            retry_after: None,
        }
    }
}

/// Whether a 5xx reply rejects the mailbox itself (RFC 3463 enhanced codes X.1.1 bad
/// mailbox, X.1.2 bad domain, X.1.3 bad syntax, X.1.6 moved, X.1.10 null MX, X.2.1 disabled;
/// without an enhanced code: 550/551/553).
pub fn is_bad_mailbox(code: u16, text: &str) -> bool {
    let enhanced = text.split_whitespace().next().filter(|w| {
        w.starts_with("5.")
            && w.split('.').count() == 3
            && w.split('.').all(|p| p.parse::<u16>().is_ok())
    });
    match enhanced {
        Some(e) => matches!(
            e,
            "5.1.1" | "5.1.2" | "5.1.3" | "5.1.6" | "5.1.10" | "5.2.1"
        ),
        None => matches!(code, 550 | 551 | 553),
    }
}

#[async_trait::async_trait]
impl Provider for Smtp {
    fn name(&self) -> &str {
        "smtp"
    }

    fn channels(&self) -> &'static [Channel] {
        &[Channel::Email]
    }

    fn honours_idempotency_key(&self) -> bool {
        false
    }

    async fn send(&self, msg: &Outgoing<'_>) -> Result<Accepted, SendError> {
        traced(self.name(), msg, async {
            match msg.rendered {
                Rendered::Email { to, email } => self.send_email(msg, to, email).await,
                _ => Err(wrong_channel(self.name(), msg)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::delivery::providers::testutil;

    fn settings(port: u16) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            from: "Veda Roots <hello@vedaroots.example>".into(),
            timeout_ms: 3_000,
            ..Default::default()
        }
    }

    /// The message as sent, with folded header lines unfolded (RFC 5322 2.2.3).
    fn formatted(m: &Message) -> String {
        String::from_utf8(m.formatted())
            .unwrap()
            .replace("\r\n ", " ")
    }

    #[test]
    fn builds_a_multipart_message_with_unsubscribe_headers() {
        let smtp = Smtp::new(&settings(2525), None).unwrap();
        let r = testutil::email();
        let Rendered::Email { to, email } = &r else {
            unreachable!()
        };
        let m = smtp.message(&testutil::outgoing(&r), to, email).unwrap();
        let text = formatted(&m);
        let id = message_id_for(testutil::KEY, "vedaroots.example");
        assert_eq!(
            id,
            message_id_for(testutil::KEY, "vedaroots.example"),
            "stable"
        );
        assert!(
            id.starts_with('<') && id.ends_with(".retentiond@vedaroots.example>"),
            "{id}"
        );
        for needle in [
            "From: \"Veda Roots\" <hello@vedaroots.example>\r\n".to_string(),
            "To: asha.rao@example.com\r\n".into(),
            format!("Subject: {}\r\n", email.subject),
            format!("Message-ID: {id}\r\n"),
            "List-Unsubscribe: <https://crm.example.com/u/abc>, <mailto:unsubscribe@vedaroots.example>\r\n".into(),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n".into(),
            "Content-Type: multipart/alternative;".into(),
            "Content-Type: text/plain; charset=utf-8\r\n".into(),
            "Content-Type: text/html; charset=utf-8\r\n".into(),
            "Date: ".into(),
        ] {
            assert!(text.contains(&needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            text.find("text/plain").unwrap() < text.find("text/html").unwrap(),
            "plain part first"
        );
        assert_eq!(m.envelope().to()[0].to_string(), "asha.rao@example.com");
        assert!(text.contains("VEDA-7K2M9QXA"));

        let bad = Rendered::Email {
            to: "not-an-address".into(),
            email: email.clone(),
        };
        let err = smtp
            .message(&testutil::outgoing(&bad), "not-an-address", email)
            .unwrap_err();
        assert!(err.is_bad_address(), "{err:?}");
    }

    #[test]
    fn bad_mailbox_codes() {
        assert!(is_bad_mailbox(
            550,
            "5.1.1 <x@example.com>: Recipient address rejected: User unknown"
        ));
        assert!(!is_bad_mailbox(550, "5.7.1 Message rejected as spam"));
        assert!(is_bad_mailbox(
            550,
            "Requested action not taken: mailbox unavailable"
        ));
        assert!(!is_bad_mailbox(554, "Transaction failed"));
    }

    /// A tiny SMTP server: answers each command, recording what it got; `rcpt` is the reply to
    /// RCPT TO.
    async fn stub(rcpt: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write
                        .write_all(b"220 stub.local ESMTP ready\r\n")
                        .await
                        .unwrap();
                    let mut in_data = false;
                    let mut data = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                seen.lock().unwrap().push(std::mem::take(&mut data));
                                write
                                    .write_all(b"250 2.0.0 Ok: queued as 4F1A2\r\n")
                                    .await
                                    .unwrap();
                            } else {
                                data.push_str(&line);
                                data.push_str("\r\n");
                            }
                            continue;
                        }
                        seen.lock().unwrap().push(line.clone());
                        let upper = line.to_ascii_uppercase();
                        let reply: &str = if upper.starts_with("EHLO") {
                            "250-stub.local\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT") {
                            rcpt
                        } else if upper == "DATA" {
                            in_data = true;
                            "354 End data with <CR><LF>.<CR><LF>\r\n"
                        } else if upper == "QUIT" {
                            write.write_all(b"221 2.0.0 Bye\r\n").await.unwrap();
                            break;
                        } else {
                            "250 2.0.0 Ok\r\n"
                        };
                        write.write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (port, log)
    }

    #[tokio::test]
    async fn sends_through_a_local_server() {
        let (port, log) = stub("250 2.1.5 Ok\r\n").await;
        let smtp = Smtp::new(&settings(port), None).unwrap();
        let r = testutil::email();
        let accepted = smtp.send(&testutil::outgoing(&r)).await.unwrap();
        assert_eq!(
            accepted.provider_message_id,
            Some(message_id_for(testutil::KEY, "vedaroots.example"))
        );
        let log = log.lock().unwrap().clone();
        assert!(log.iter().any(|l| l == "EHLO vedaroots.example"), "{log:?}");
        assert!(
            log.iter()
                .any(|l| l == "MAIL FROM:<hello@vedaroots.example>"
                    || l.starts_with("MAIL FROM:<hello@vedaroots.example> ")),
            "{log:?}"
        );
        assert!(
            log.iter().any(|l| l == "RCPT TO:<asha.rao@example.com>"),
            "{log:?}"
        );
        let data = log
            .iter()
            .find(|l| l.contains("Subject:"))
            .expect("message data");
        assert!(
            data.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{data}"
        );
        assert!(data.contains("multipart/alternative"), "{data}");
    }

    #[tokio::test]
    async fn rejected_mailbox_is_a_permanent_bad_address() {
        let (port, _) = stub("550 5.1.1 <asha.rao@example.com>: Recipient address rejected: User unknown in local recipient table\r\n").await;
        let smtp = Smtp::new(&settings(port), None).unwrap();
        let r = testutil::email();
        let err = smtp.send(&testutil::outgoing(&r)).await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Permanent {
                    status: Some(550),
                    bad_address: true,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            !err.reason().contains("asha.rao@"),
            "recipient masked: {err:?}"
        );
    }

    #[tokio::test]
    async fn busy_mailbox_is_transient() {
        let (port, _) = stub("452 4.2.2 Mailbox full, try again later\r\n").await;
        let smtp = Smtp::new(&settings(port), None).unwrap();
        let r = testutil::email();
        let err = smtp.send(&testutil::outgoing(&r)).await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Transient {
                    status: Some(452),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let smtp = Smtp::new(
            &settings(port),
            Some(("user".into(), "smtp-secret-pw".into())),
        )
        .unwrap();
        assert!(!format!("{smtp:?}").contains("smtp-secret-pw"));
        let r = testutil::email();
        let err = smtp.send(&testutil::outgoing(&r)).await.unwrap_err();
        assert!(
            matches!(err, SendError::Transient { status: None, .. }),
            "{err:?}"
        );
    }
}
