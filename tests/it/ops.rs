//! Operator-facing safety on both backends: a provider error that echoes the API key is stored
//! and logged redacted, and the file sink still writes every message after the database is
//! rebuilt (its files are named by idempotency key, not by outbox id).

use std::sync::Arc;
use std::time::Duration;

use retentiond::campaigns::Channel;
use retentiond::db::{Db, Val};
use retentiond::delivery::dispatcher::Dispatcher;
use retentiond::delivery::providers::config::FileSettings;
use retentiond::delivery::providers::file::FileSink;
use retentiond::delivery::providers::{Limits, Providers};
use retentiond::delivery::retry::DispatchSettings;
use retentiond::messages::{self, Context, EmailFamily, MessageCopy};
use retentiond::outbox::{self, NewMessage, Status};
use retentiond::selection::offer::Rendered;

use crate::helpers::TestDb;
use crate::on_both_backends;

/// Queues one email per customer id for `day`.
async fn seed(db: &Db, customers: &[&str], day: &str) {
    let ctx = Context {
        brand_name: "Veda Roots",
        first_name: Some("Asha"),
        category: Some("hair care"),
        discount: Some("15%"),
        code: None,
        products: &[],
        cta_url: "https://shop.example/c/hair",
        unsubscribe_url: "https://crm.example/unsubscribe/t",
        unsubscribe_mailto: None,
        postal_address: "12 MG Road, Bengaluru",
    };
    let copy = MessageCopy {
        subject: "Hi {first_name}".into(),
        headline: "Back to {category}".into(),
        body: "Body".into(),
        cta: "Shop".into(),
        sms: None,
    };
    let mut tx = db.begin().await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut rows = Vec::new();
    for id in customers {
        let to = format!("{id}@example.com");
        tx.execute(
            "INSERT INTO customers (customer_id, email, first_name, email_opt_in) VALUES ($1, $2, 'Asha', TRUE)",
            &[Val::Text(Some(id.to_string())), Val::Text(Some(to.clone()))],
        )
        .await
        .unwrap();
        let rendered = Rendered::Email {
            to: to.clone(),
            email: messages::render_email(EmailFamily::Offer, &copy, &ctx).unwrap(),
        };
        rows.push(NewMessage {
            idempotency_key: outbox::idempotency_key("winback", id, day),
            campaign: "winback".into(),
            customer_id: id.to_string(),
            day: day.into(),
            status: Status::Queued,
            channel: Some("email".into()),
            fallback_channels: vec![],
            recipient: Some(to),
            message: Some(serde_json::to_value(&rendered).unwrap()),
            offer: serde_json::json!({"category": "hair care", "discount": "15%", "code": null, "products": [], "landing_url": "https://shop.example/c/hair"}),
            explanation: serde_json::json!({}),
            holdout_draw: 0.5,
            model_version_id: 1,
            p_return: 0.2,
            lapse_risk: 0.8,
            not_before: now - 10,
            expires_at: now + 3600,
        });
    }
    outbox::insert(&mut tx, &rows, now).await.unwrap();
    tx.commit().await.unwrap();
}

async fn texts(db: &Db, sql: &str) -> Vec<String> {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch_all(p).await.unwrap())
}

async fn ids(db: &Db) -> Vec<i64> {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT message_id FROM outbox ORDER BY message_id").fetch_all(p).await.unwrap())
}

// ---- redaction ----

const API_KEY: &str = "SG.ops-test-live-key.Zx81Qm0vTq";

/// `retentiond dispatch --once` through SendGrid (a local mock) that answers every send with an
/// error echoing the API key it was sent, as some gateways do: the key must not reach
/// `outbox.last_error`, `delivery_attempts.error` or the log.
async fn provider_errors_never_store_or_log_the_key(t: TestDb) {
    seed(&t.db, &["c1", "c2"], "2026-11-01").await;
    let server = wiremock::MockServer::start().await;
    let echo = serde_json::json!({"errors": [{"message": format!("The provided authorization grant is invalid, expired, or revoked: Bearer {API_KEY}"), "field": null}]});
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v3/mail/send"))
        .respond_with(wiremock::ResponseTemplate::new(400).set_body_json(echo))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("r.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\nemail = \"sendgrid\"\n[delivery.sendgrid]\nbase_url = \"{}\"\napi_key_env = \"OPS_TEST_SENDGRID_KEY\"\nfrom_email = \"crm@example.com\"\n[campaigns]\ndir = \"{}\"\n",
            server.uri(),
            dir.path().join("no-campaigns").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--database",
            &t.url,
            "--log",
            "warn",
            "dispatch",
            "--once",
        ])
        .env("OPS_TEST_SENDGRID_KEY", API_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "both messages reached the provider"
    );
    let stored = texts(
        &t.db,
        "SELECT last_error FROM outbox WHERE status = 'failed' ORDER BY message_id",
    )
    .await;
    let attempts = texts(
        &t.db,
        "SELECT error FROM delivery_attempts WHERE error IS NOT NULL",
    )
    .await;
    assert_eq!(
        (stored.len(), attempts.len()),
        (2, 2),
        "{stored:?} {attempts:?}"
    );
    for text in stored.iter().chain(&attempts) {
        assert!(
            !text.contains(API_KEY) && !text.contains("ops-test-live-key"),
            "key stored: {text}"
        );
        assert!(
            text.contains("Bearer [REDACTED]") && text.contains("HTTP 400"),
            "the rest of the reason is kept: {text}"
        );
    }
    assert!(
        log.contains("send failed") && log.contains("[REDACTED]"),
        "the failure is logged: {log}"
    );
    assert!(
        !log.contains(API_KEY) && !log.contains("ops-test-live-key"),
        "key logged: {log}"
    );
}
on_both_backends!(
    redacted_provider_errors_sqlite,
    redacted_provider_errors_postgres,
    provider_errors_never_store_or_log_the_key
);

// ---- file sink after a rebuilt database ----

fn file_providers(dir: &std::path::Path) -> Arc<Providers> {
    let sink = FileSink::new(&FileSettings {
        dir: dir.to_path_buf(),
        ..Default::default()
    });
    Arc::new(Providers::default().with_channel(
        Channel::Email,
        Arc::new(sink),
        Limits {
            rate_per_second: 0,
            concurrency: 4,
            timeout: Duration::from_secs(5),
        },
    ))
}

/// The file sink's folder outlives the database: after a rebuild, outbox ids start again at 1,
/// and new messages (new keys) must be written, not taken for the old files of the same ids.
async fn file_sink_writes_new_messages_after_a_rebuild(t: TestDb) {
    let out = tempfile::tempdir().unwrap();
    seed(&t.db, &["c1", "c2", "c3"], "2026-11-01").await;
    let s = Dispatcher::new(
        t.db.clone(),
        file_providers(out.path()),
        DispatchSettings::default(),
        None,
    )
    .drain()
    .await
    .unwrap();
    assert_eq!(s.sent, 3, "{s:?}");
    let first_ids = ids(&t.db).await;

    // The rebuilt database: a fresh one on the same backend, the same folder.
    let rebuilt = match t.name {
        "sqlite" => crate::helpers::sqlite().await,
        _ => crate::helpers::postgres()
            .await
            .expect("PostgreSQL was reachable a moment ago"),
    };
    seed(&rebuilt.db, &["c4", "c5", "c6"], "2026-11-02").await;
    assert_eq!(
        ids(&rebuilt.db).await,
        first_ids,
        "the rebuilt outbox numbers its messages from the start again"
    );
    let s = Dispatcher::new(
        rebuilt.db.clone(),
        file_providers(out.path()),
        DispatchSettings::default(),
        None,
    )
    .drain()
    .await
    .unwrap();
    assert_eq!(s.sent, 3, "{s:?}");

    let mut keys = Vec::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        keys.push(v["idempotency_key"].as_str().unwrap().to_string());
    }
    keys.sort();
    let expected: Vec<String> = [
        ("c1", "01"),
        ("c2", "01"),
        ("c3", "01"),
        ("c4", "02"),
        ("c5", "02"),
        ("c6", "02"),
    ]
    .iter()
    .map(|(c, d)| format!("winback/{c}/2026-11-{d}"))
    .collect();
    assert_eq!(
        keys, expected,
        "one file per message, the new ones included"
    );
    // Each sent message's provider id is its own file.
    for path in texts(
        &rebuilt.db,
        "SELECT provider_message_id FROM outbox WHERE status = 'sent'",
    )
    .await
    {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            v["idempotency_key"]
                .as_str()
                .unwrap()
                .ends_with("/2026-11-02"),
            "{path}"
        );
    }

    // Sending the same messages again (a resend after a crash) writes nothing new.
    let mut tx = rebuilt.db.begin().await.unwrap();
    tx.execute(
        "UPDATE outbox SET status = 'queued', next_attempt_at = 0",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let before: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| {
            std::fs::metadata(e.unwrap().path())
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let s = Dispatcher::new(
        rebuilt.db.clone(),
        file_providers(out.path()),
        DispatchSettings::default(),
        None,
    )
    .drain()
    .await
    .unwrap();
    assert_eq!(s.sent, 3, "{s:?}");
    let after: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| {
            std::fs::metadata(e.unwrap().path())
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    assert_eq!(before, after, "the existing files are kept as they were");
}
on_both_backends!(
    file_sink_rebuild_sqlite,
    file_sink_rebuild_postgres,
    file_sink_writes_new_messages_after_a_rebuild
);
