//! The SMTP provider against a real SMTP server: `scripts/smtp_sink.py` (Python's aiosmtpd),
//! started here, which writes every message it accepts to a folder. The message that arrives is
//! parsed back (headers, RFC 2047 subject, multipart/alternative parts and their transfer
//! encodings) and compared with what was rendered.
//!
//! Without python3 or aiosmtpd the tests print why they skip, unless `CI` is set, where the
//! server is required and its absence fails them (`.ci/run` installs aiosmtpd).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use retentiond::delivery::providers::config::{SmtpSecurity, SmtpSettings};
use retentiond::delivery::providers::smtp::{Smtp, message_id_for};
use retentiond::delivery::providers::{Accepted, Outgoing, Provider as _, SendError};
use retentiond::messages::{LIST_UNSUBSCRIBE_POST, RenderedEmail};
use retentiond::selection::offer::Rendered;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const KEY: &str = "spring-winback/C-10042/2026-11-03";

// ---- the server ----

/// A running `smtp_sink.py`; killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    out: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    /// Starts the server, or `None` (with a printed reason) when python3 or aiosmtpd is
    /// missing outside CI.
    fn start() -> Option<Sink> {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let missing = match probe {
            Err(e) => Some(format!("cannot run python3 ({e})")),
            Ok(o) if !o.status.success() => Some(format!(
                "python3 cannot import aiosmtpd ({})",
                String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Ok(_) => None,
        };
        if let Some(why) = missing {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set, so the SMTP tests are required, but {why}; it needs python3 with aiosmtpd (`python3 -m pip install aiosmtpd`)"
                );
            }
            crate::helpers::skipped(&format!(
                "SMTP test against a real server: {why}; it needs python3 with aiosmtpd (`python3 -m pip install aiosmtpd`)"
            ));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mail");
        let stderr = dir.path().join("stderr.txt");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        // The first line of stdout is the port; read it on a thread so a hung start times out.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let mut sink = Sink {
            child,
            port: 0,
            out,
            stderr,
            _dir: dir,
        };
        sink.port = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => panic!(
                "smtp_sink.py printed no port ({line:?}); its stderr:\n{}",
                sink.stderr_text()
            ),
        };
        Some(sink)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The messages written so far, in arrival order.
    fn messages(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.out) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
            .iter()
            .map(|f| {
                let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
                Received {
                    mail_from: v["mail_from"].as_str().unwrap().to_string(),
                    rcpt_tos: v["rcpt_tos"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect(),
                    raw: STANDARD.decode(v["data"].as_str().unwrap()).unwrap(),
                }
            })
            .collect()
    }

    /// Waits (a little) for `n` messages.
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.messages();
            if got.len() >= n || start.elapsed() > Duration::from_secs(10) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn provider(&self) -> Smtp {
        let s = SmtpSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            security: SmtpSecurity::None,
            username_env: String::new(),
            from: "Veda Roots <hello@vedaroots.example>".into(),
            timeout_ms: 10_000,
            ..Default::default()
        };
        Smtp::new(&s, None).unwrap()
    }
}

/// One message as the server got it.
struct Received {
    mail_from: String,
    rcpt_tos: Vec<String>,
    raw: Vec<u8>,
}

// ---- a small RFC 5322 / MIME reader ----

/// Headers (unfolded, in order) and the body.
fn split_message(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("a blank line after the headers");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let headers = unfolded
        .split("\r\n")
        .map(|l| {
            let (name, value) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {l:?}"));
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    (headers, body.to_string())
}

/// The one value of header `name` (case-insensitive); panics when absent or repeated.
fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(found.len(), 1, "header {name}: {found:?} in {headers:?}");
    found[0]
}

/// A Content-Type parameter (`boundary`, `charset`), quoted or not.
fn param<'a>(content_type: &'a str, name: &str) -> Option<&'a str> {
    content_type
        .split(';')
        .skip(1)
        .map(str::trim)
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"'))
        })
}

fn quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes[i + 1..].starts_with(b"\r\n") => i += 3, // soft line break
            b'=' => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(
                    u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad QP escape {hex:?}")),
                );
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn decode_body(encoding: &str, body: &str) -> String {
    let bytes = match encoding.to_ascii_lowercase().as_str() {
        "quoted-printable" => quoted_printable(body),
        "base64" => STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .unwrap(),
        "7bit" | "8bit" | "binary" => body.as_bytes().to_vec(),
        other => panic!("unknown Content-Transfer-Encoding {other:?}"),
    };
    String::from_utf8(bytes).unwrap()
}

/// An RFC 2047 header value (`=?utf-8?b?…?=` / `=?utf-8?q?…?=` words, as lettre writes them).
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut last_encoded = false;
    for word in value.split(' ') {
        let encoded = word
            .strip_prefix("=?")
            .and_then(|w| w.strip_suffix("?="))
            .and_then(|w| {
                let mut parts = w.splitn(3, '?');
                let (charset, enc, text) = (parts.next()?, parts.next()?, parts.next()?);
                assert!(charset.eq_ignore_ascii_case("utf-8"), "charset {charset}");
                let bytes = match enc {
                    "b" | "B" => STANDARD.decode(text).unwrap(),
                    "q" | "Q" => quoted_printable(&text.replace('_', " ")),
                    other => panic!("encoding {other}"),
                };
                Some(String::from_utf8(bytes).unwrap())
            });
        match encoded {
            Some(text) => {
                // Whitespace between two encoded words is not part of the text.
                if !out.is_empty() && !last_encoded {
                    out.push(' ');
                }
                out.push_str(&text);
                last_encoded = true;
            }
            None => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
                last_encoded = false;
            }
        }
    }
    out
}

/// The parts of a multipart body: (headers, decoded content).
fn multipart_parts(body: &str, boundary: &str) -> Vec<(Vec<(String, String)>, String)> {
    let delimiter = format!("--{boundary}");
    let (_, rest) = body
        .split_once(&format!("{delimiter}\r\n"))
        .expect("first boundary");
    let (inner, _) = rest
        .split_once(&format!("\r\n{delimiter}--"))
        .expect("closing boundary");
    inner
        .split(&format!("\r\n{delimiter}\r\n"))
        .map(|part| {
            let (headers, content) = split_message(part);
            let encoding = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Content-Transfer-Encoding"))
                .map(|(_, v)| v.as_str())
                .unwrap_or("7bit");
            let decoded = decode_body(encoding, &content);
            (headers, decoded)
        })
        .collect()
}

// ---- the tests ----

/// A winback email as the renderer produces it: a non-ASCII subject, a rupee price, long HTML
/// lines (so the parts need a transfer encoding), and the RFC 8058 unsubscribe headers.
fn email(to: &str) -> Rendered {
    Rendered::Email {
        to: to.into(),
        email: RenderedEmail {
            subject: "Asha, your skincare picks are back — 15% off inside".into(),
            html: "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Veda Roots</title></head>\n\
                   <body style=\"font-family: Georgia, serif; color: #2d2a26; background: #faf7f2; margin: 0; padding: 24px;\">\n\
                   <h1>We miss you, Asha</h1>\n\
                   <p>Your Kumkumadi night serum (₹1,299) and the neem–tulsi face wash are back in stock. \
                   Use <b>VEDA-7K2M9QXA</b> at checkout for 15% off — valid for 7 days.</p>\n\
                   <p><a href=\"https://vedaroots.example/collections/skincare?utm_source=retentiond&amp;utm_campaign=spring-winback\">Shop skincare</a></p>\n\
                   <p style=\"font-size: 12px\"><a href=\"https://crm.example.com/u/abc\">Unsubscribe</a></p>\n\
                   </body></html>\n"
                .into(),
            text: "We miss you, Asha\n\n\
                   Your Kumkumadi night serum (₹1,299) and the neem–tulsi face wash are back in stock. \
                   Use VEDA-7K2M9QXA at checkout for 15% off — valid for 7 days.\n\n\
                   Shop skincare: https://vedaroots.example/collections/skincare?utm_source=retentiond&utm_campaign=spring-winback\n\n\
                   Unsubscribe: https://crm.example.com/u/abc\n"
                .into(),
            list_unsubscribe: "<https://crm.example.com/u/abc>, <mailto:unsubscribe@vedaroots.example?subject=unsubscribe>".into(),
            list_unsubscribe_post: LIST_UNSUBSCRIBE_POST.into(),
        },
    }
}

fn outgoing(rendered: &Rendered) -> Outgoing<'_> {
    Outgoing {
        message_id: 4711,
        idempotency_key: KEY,
        campaign: "spring-winback",
        customer_id: "C-10042",
        rendered,
        test: false,
    }
}

#[tokio::test]
async fn smtp_delivers_a_multipart_message_to_a_real_server() {
    let Some(sink) = Sink::start() else { return };
    let rendered = email("asha.rao@example.com");
    let Rendered::Email { email, .. } = &rendered else {
        unreachable!()
    };
    let smtp = sink.provider();

    let accepted = smtp
        .send(&outgoing(&rendered))
        .await
        .unwrap_or_else(|e| panic!("{e:?}; server stderr:\n{}", sink.stderr_text()));
    // The Message-ID is derived from the idempotency key: 32 hex digits of its SHA-256.
    let digest: String = Sha256::digest(KEY.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let message_id = format!("<{digest}.retentiond@vedaroots.example>");
    assert_eq!(message_id, message_id_for(KEY, "vedaroots.example"));
    assert_eq!(
        accepted,
        Accepted {
            provider_message_id: Some(message_id.clone())
        }
    );

    let got = sink.wait_for(1);
    assert_eq!(
        got.len(),
        1,
        "one message; server stderr:\n{}",
        sink.stderr_text()
    );
    let m = &got[0];
    assert_eq!(m.mail_from, "hello@vedaroots.example");
    assert_eq!(m.rcpt_tos, vec!["asha.rao@example.com"]);
    let raw = String::from_utf8(m.raw.clone()).expect("the message is UTF-8");

    let (headers, body) = split_message(&raw);
    let from = header(&headers, "From");
    assert!(
        from == "\"Veda Roots\" <hello@vedaroots.example>"
            || from == "Veda Roots <hello@vedaroots.example>",
        "{from}"
    );
    assert_eq!(header(&headers, "To"), "asha.rao@example.com");
    assert_eq!(decode_words(header(&headers, "Subject")), email.subject);
    assert_eq!(header(&headers, "Message-ID"), message_id);
    assert_eq!(header(&headers, "List-Unsubscribe"), email.list_unsubscribe);
    assert_eq!(
        header(&headers, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(header(&headers, "MIME-Version"), "1.0");
    assert!(
        chrono::DateTime::parse_from_rfc2822(header(&headers, "Date")).is_ok(),
        "{}",
        header(&headers, "Date")
    );

    let content_type = header(&headers, "Content-Type");
    assert!(
        content_type
            .to_ascii_lowercase()
            .starts_with("multipart/alternative;"),
        "{content_type}"
    );
    let boundary = param(content_type, "boundary").expect("a boundary");
    let parts = multipart_parts(&body, boundary);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let kinds: Vec<String> = parts
        .iter()
        .map(|(h, _)| header(h, "Content-Type").to_ascii_lowercase())
        .collect();
    // RFC 2046: the preferred (richest) alternative comes last.
    assert!(
        kinds[0].starts_with("text/plain") && kinds[1].starts_with("text/html"),
        "{kinds:?}"
    );
    for (h, _) in &parts {
        assert_eq!(
            param(header(h, "Content-Type"), "charset")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("utf-8")
        );
    }
    // Line ends travel as CRLF.
    let plain = parts[0].1.replace("\r\n", "\n");
    let html = parts[1].1.replace("\r\n", "\n");
    assert_eq!(plain.trim_end(), email.text.trim_end());
    assert_eq!(html.trim_end(), email.html.trim_end());
    assert!(plain.contains("₹1,299") && html.contains("<b>VEDA-7K2M9QXA</b>"));

    // A resend (after a crash) carries the same Message-ID.
    smtp.send(&outgoing(&rendered)).await.unwrap();
    let got = sink.wait_for(2);
    assert_eq!(got.len(), 2);
    let (again, _) = split_message(std::str::from_utf8(&got[1].raw).unwrap());
    assert_eq!(header(&again, "Message-ID"), message_id);
}

#[tokio::test]
async fn smtp_recipient_rejected_by_the_server_is_a_permanent_bad_address() {
    let Some(sink) = Sink::start() else { return };
    let rendered = email("bad.mailbox@example.com");
    let err = sink
        .provider()
        .send(&outgoing(&rendered))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SendError::Permanent {
                status: Some(550),
                bad_address: true,
                ..
            }
        ),
        "{err:?}; server stderr:\n{}",
        sink.stderr_text()
    );
    assert!(err.reason().contains("5.1.1"), "{err:?}");
    assert!(
        !err.reason().contains("bad.mailbox@"),
        "recipient masked: {err:?}"
    );
    // Nothing was delivered, and a good recipient still goes through on the same server.
    assert!(sink.messages().is_empty());
    sink.provider()
        .send(&outgoing(&email("asha.rao@example.com")))
        .await
        .unwrap();
    assert_eq!(sink.wait_for(1).len(), 1);
}
