//! The HTTP server on both backends, through `tower::ServiceExt::oneshot`: health, metrics,
//! one-click unsubscribe, and every provider's webhook (good signature → effect, bad or
//! missing signature → 401 with nothing changed and a warning logged, replay → nothing
//! changed), our own `/webhooks/retentiond` included.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::BodyExt as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use retentiond::db::Db;
use retentiond::http::{
    AppState, WebhookSecrets, WebhookSettings, install_metrics_recorder, router,
};
use retentiond::unsubscribe::{Claims, sign};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::helpers::TestDb;
use crate::on_both_backends;

const UNSUB: &[u8] = b"http-test-unsubscribe-secret-0123456789";
const BASE: &str = "https://crm.example.com";
const POSTMARK_AUTH: &str = "hooks:pm-pass-123";
const MAILGUN_KEY: &str = "mailgun-signing-key-abc";
const TWILIO_TOKEN: &str = "twilio-auth-token-xyz";
const WA_SECRET: &str = "meta-app-secret-42";
const WA_VERIFY: &str = "verify-me-please";
const RTD_SECRET: &str = "whsec-retentiond-0123456789";

// ---- harness ----

struct Keys {
    sendgrid: SigningKey,
}

fn keys() -> Keys {
    loop {
        // A random scalar; out of range (practically never) → draw again.
        if let Ok(sk) = SigningKey::from_slice(&rand::random::<[u8; 32]>()) {
            return Keys { sendgrid: sk };
        }
    }
}

fn public_key_b64(sk: &SigningKey) -> String {
    STANDARD.encode(sk.verifying_key().to_public_key_der().unwrap().as_bytes())
}

/// Secrets as the daemon resolves them: through the default env var names.
fn secrets(k: &Keys) -> WebhookSecrets {
    let sendgrid = public_key_b64(&k.sendgrid);
    let env = move |name: &str| -> Option<String> {
        Some(
            match name {
                "RETENTIOND_SENDGRID_WEBHOOK_KEY" => sendgrid.as_str(),
                "RETENTIOND_POSTMARK_WEBHOOK_AUTH" => POSTMARK_AUTH,
                "RETENTIOND_MAILGUN_WEBHOOK_SIGNING_KEY" => MAILGUN_KEY,
                "RETENTIOND_TWILIO_AUTH_TOKEN" => TWILIO_TOKEN,
                "RETENTIOND_WHATSAPP_APP_SECRET" => WA_SECRET,
                "RETENTIOND_WHATSAPP_VERIFY_TOKEN" => WA_VERIFY,
                "RETENTIOND_WEBHOOK_SECRET" => RTD_SECRET,
                _ => return None,
            }
            .to_string(),
        )
    };
    let s = WebhookSettings::default().resolve(&env);
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    s
}

fn app(db: &Db, webhooks: WebhookSecrets) -> Router {
    router(AppState {
        db: db.clone(),
        unsubscribe_secret: UNSUB.to_vec(),
        webhooks,
        public_base_url: BASE.into(),
        metrics: install_metrics_recorder(),
        brand_name: "Veda <Roots>".into(),
        report: None,
        auth_token: None,
    })
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn call(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

async fn strings(db: &Db, sql: &str) -> Vec<String> {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch_all(p).await.unwrap())
}

async fn exec(db: &Db, sql: &str) {
    retentiond::with_pool!(db, p => { sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await.unwrap(); });
}

/// Everything a request may change, as text.
async fn snapshot(db: &Db) -> String {
    let mut out = Vec::new();
    out.extend(strings(db, "SELECT CAST(message_id AS TEXT) || '|' || status || '|' || COALESCE(CAST(delivered_at AS TEXT), '-') || '|' || COALESCE(last_error, '-') FROM outbox ORDER BY message_id").await);
    out.push("#".into());
    out.extend(suppressions(db).await);
    out.push("#".into());
    out.extend(strings(db, "SELECT event_key || '|' || kind || '|' || COALESCE(CAST(message_id AS TEXT), '-') || '|' || COALESCE(customer_id, '-') FROM webhook_events ORDER BY event_key").await);
    out.join("\n")
}

async fn suppressions(db: &Db) -> Vec<String> {
    strings(db, "SELECT customer_id || '|' || COALESCE(channel, '*') || '|' || reason || '|' || source FROM suppressions ORDER BY customer_id, channel, reason").await
}

async fn status(db: &Db, id: i64) -> String {
    strings(
        db,
        &format!("SELECT status FROM outbox WHERE message_id = {id}"),
    )
    .await
    .remove(0)
}

async fn event_count(db: &Db) -> usize {
    strings(db, "SELECT event_key FROM webhook_events")
        .await
        .len()
}

async fn seed_customers(db: &Db) {
    exec(
        db,
        "INSERT INTO customers (customer_id, email, phone) VALUES \
         ('c1', 'a@example.com', '+91 98765 43210'), ('c2', 'b@example.com', '+1 (555) 000-1111'), ('c3', 'c@example.com', NULL)",
    )
    .await;
}

/// An outbox row; `day` keeps (customer_id, day) unique.
#[allow(clippy::too_many_arguments)]
async fn msg(
    db: &Db,
    customer: &str,
    day: u32,
    status: &str,
    channel: &str,
    recipient: &str,
    provider: Option<&str>,
    provider_id: Option<&str>,
) -> i64 {
    let sql = "INSERT INTO outbox (idempotency_key, campaign, customer_id, day, status, channel, fallback_channels, recipient, offer, explanation, \
               holdout_draw, not_before, expires_at, created_at, updated_at, provider, provider_message_id) \
               VALUES ($1, 'winback', $2, $3, $4, $5, '[]', $6, '{}', '{}', 0.5, 0, 4102444800, 0, 0, $7, $8) RETURNING message_id";
    let day = format!("2026-01-{day:02}");
    let key = format!("winback/{customer}/{day}");
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>(sql)
        .bind(&key).bind(customer).bind(&day).bind(status).bind(channel).bind(recipient).bind(provider).bind(provider_id)
        .fetch_one(p).await.unwrap())
}

// ---- health and metrics ----

async fn health_and_metrics(t: TestDb) {
    let db = &t.db;
    let app = app(db, WebhookSecrets::default());
    let r = call(&app, get("/healthz")).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));

    seed_customers(db).await;
    msg(db, "c1", 1, "queued", "email", "a@example.com", None, None).await;
    msg(db, "c2", 1, "queued", "sms", "+15550001111", None, None).await;
    msg(
        db,
        "c3",
        1,
        "sent",
        "email",
        "c@example.com",
        Some("sendgrid"),
        Some("sg1"),
    )
    .await;
    exec(db, "INSERT INTO suppressions (customer_id, channel, reason, source, created_at) VALUES ('c3', NULL, 'manual', 'test', 0)").await;
    // What the dispatcher records with the `metrics` macros.
    metrics::counter!("retentiond_delivery_attempts_total", "provider" => "http-test", "outcome" => "accepted").increment(2);
    metrics::histogram!("retentiond_delivery_latency_seconds", "provider" => "http-test")
        .record(0.3);

    let r = call(&app, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = &r.body;
    for line in [
        "retentiond_messages{status=\"queued\",provider=\"\"} 2",
        "retentiond_messages{status=\"sent\",provider=\"sendgrid\"} 1",
        "retentiond_queue_depth 2",
        "retentiond_suppressions_total 1",
        "retentiond_database_up 1",
        "# TYPE retentiond_messages gauge",
        "retentiond_delivery_attempts_total{provider=\"http-test\",outcome=\"accepted\"}",
        "retentiond_delivery_latency_seconds_bucket{provider=\"http-test\",le=\"0.5\"}",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in\n{m}"
        );
    }
    assert!(!m.contains("retentiond_job_last"), "no job runs yet:\n{m}");

    // The scheduler's ledger: the last finished run of each job; a skipped run is not a failure.
    exec(
        db,
        "INSERT INTO job_runs (job, scheduled_for, trigger_kind, runner, day, started_at, heartbeat_at, finished_at, outcome) VALUES \
         ('score', 1, 'schedule', 'r', 'd', 100, 100, 110, 'ok'), ('score', 2, 'schedule', 'r', 'd', 200, 200, 210, 'failed'), \
         ('send', 3, 'schedule', 'r', 'd', 300, 300, 305, 'skipped'), ('send', 4, 'schedule', 'r', 'd', 400, 400, NULL, 'running')",
    )
    .await;
    let m = call(&app, get("/metrics")).await.body;
    for line in [
        "retentiond_job_last_run_timestamp_seconds{job=\"score\"} 210",
        "retentiond_job_last_outcome{job=\"score\"} 0",
        "retentiond_job_last_run_timestamp_seconds{job=\"send\"} 305",
        "retentiond_job_last_outcome{job=\"send\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }

    db.close().await;
    let r = call(&app, get("/healthz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = call(&app, get("/metrics")).await;
    assert!(r.body.contains("retentiond_database_up 0"), "{}", r.body);
}
on_both_backends!(
    health_and_metrics_sqlite,
    health_and_metrics_postgres,
    health_and_metrics
);

// ---- one-click unsubscribe ----

fn token(customer: &str, channel: &str) -> String {
    sign(
        UNSUB,
        &Claims {
            customer_id: customer.into(),
            channel: channel.into(),
            issued_at: 1_750_000_000,
        },
    )
}

async fn unsubscribe_link(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let q1 = msg(db, "c1", 1, "queued", "email", "a@example.com", None, None).await;
    let q2 = msg(db, "c1", 2, "queued", "email", "a@example.com", None, None).await;
    let sms = msg(db, "c1", 3, "queued", "sms", "+919876543210", None, None).await;
    let sent = msg(
        db,
        "c1",
        4,
        "sent",
        "email",
        "a@example.com",
        Some("sendgrid"),
        Some("x"),
    )
    .await;
    let other = msg(db, "c2", 1, "queued", "email", "b@example.com", None, None).await;
    let app = app(db, WebhookSecrets::default());
    let good = token("c1", "email");
    let before = snapshot(db).await;

    // GET shows the confirmation page and changes nothing.
    let r = call(&app, get(&format!("/unsubscribe/{good}"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.body.contains("<form method=\"post\""), "{}", r.body);
    assert!(
        r.body.contains("Veda &lt;Roots&gt;"),
        "brand name is escaped: {}",
        r.body
    );
    assert_eq!(snapshot(db).await, before);

    // Forged, altered and garbage tokens: 400 on GET and POST, nothing changes.
    let forged = sign(
        b"another secret",
        &Claims {
            customer_id: "c1".into(),
            channel: "email".into(),
            issued_at: 1,
        },
    );
    let (_, sig) = good.split_once('.').unwrap();
    let other_payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(
            &json!({"customer_id": "c2", "channel": "email", "issued_at": 1_750_000_000}),
        )
        .unwrap(),
    );
    let altered = format!("{other_payload}.{sig}");
    let truncated = good[..good.len() - 3].to_string();
    let pigeon = token("c1", "pigeon");
    for bad in [
        forged,
        altered,
        truncated,
        pigeon,
        "garbage".to_string(),
        "a.b".to_string(),
    ] {
        let r = call(&app, get(&format!("/unsubscribe/{bad}"))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "GET {bad}");
        let r = call(
            &app,
            post(
                &format!("/unsubscribe/{bad}"),
                &[("content-type", "application/x-www-form-urlencoded")],
                "List-Unsubscribe=One-Click",
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "POST {bad}");
        assert!(r.body.contains("not valid"));
        assert_eq!(snapshot(db).await, before, "{bad}");
    }

    // The one-click POST, as a mail client sends it.
    let r = call(
        &app,
        post(
            &format!("/unsubscribe/{good}"),
            &[("content-type", "application/x-www-form-urlencoded")],
            "List-Unsubscribe=One-Click",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("You are unsubscribed"), "{}", r.body);
    assert_eq!(suppressions(db).await, vec!["c1|email|unsubscribe|link"]);
    assert_eq!(status(db, q1).await, "suppressed");
    assert_eq!(status(db, q2).await, "suppressed");
    assert_eq!(status(db, sms).await, "queued", "other channels stay");
    assert_eq!(status(db, sent).await, "sent", "only queued rows change");
    assert_eq!(status(db, other).await, "queued", "other customers stay");

    // Again (the form after the one-click, a double click): no second row.
    let after = snapshot(db).await;
    let r = call(
        &app,
        post(&format!("/unsubscribe/{good}"), &[], Body::empty()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(snapshot(db).await, after);

    // Another channel is its own suppression.
    let r = call(
        &app,
        post(
            &format!("/unsubscribe/{}", token("c1", "sms")),
            &[],
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        suppressions(db).await,
        vec!["c1|email|unsubscribe|link", "c1|sms|unsubscribe|link"]
    );
    assert_eq!(status(db, sms).await, "suppressed");

    // Many clicks at once (a client's one-click POST racing the form): one row, all answered.
    let c2 = token("c2", "email");
    let posts = (0..8).map(|_| {
        let app = app.clone();
        let uri = format!("/unsubscribe/{c2}");
        tokio::spawn(async move { call(&app, post(&uri, &[], Body::empty())).await.status })
    });
    for p in posts.collect::<Vec<_>>() {
        assert_eq!(p.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        strings(
            db,
            "SELECT reason FROM suppressions WHERE customer_id = 'c2'"
        )
        .await,
        vec!["unsubscribe"]
    );
    assert_eq!(status(db, other).await, "suppressed");
}
on_both_backends!(
    unsubscribe_link_sqlite,
    unsubscribe_link_postgres,
    unsubscribe_link
);

// ---- SendGrid ----

fn sendgrid_request(sk: &SigningKey, timestamp: &str, body: &str) -> Request<Body> {
    let mut signed = timestamp.as_bytes().to_vec();
    signed.extend_from_slice(body.as_bytes());
    let sig: Signature = sk.sign(&signed);
    let sig = STANDARD.encode(sig.to_der().as_bytes());
    post(
        "/webhooks/sendgrid",
        &[
            ("content-type", "application/json"),
            ("x-twilio-email-event-webhook-signature", &sig),
            ("x-twilio-email-event-webhook-timestamp", timestamp),
        ],
        body.to_string(),
    )
}

async fn sendgrid(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "email",
        "a@example.com",
        Some("sendgrid"),
        Some("sgA"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "sent",
        "email",
        "b@example.com",
        Some("sendgrid"),
        Some("sgB"),
    )
    .await;
    let c = msg(
        db,
        "c3",
        1,
        "sent",
        "email",
        "c@example.com",
        Some("sendgrid"),
        Some("sgC"),
    )
    .await;
    let f = msg(
        db,
        "c1",
        2,
        "failed",
        "email",
        "a@example.com",
        Some("sendgrid"),
        Some("sgF"),
    )
    .await;
    let q2 = msg(db, "c2", 2, "queued", "email", "b@example.com", None, None).await;
    let s2 = msg(db, "c2", 3, "queued", "sms", "+15550001111", None, None).await;
    let s3 = msg(db, "c3", 2, "queued", "sms", "+15550002222", None, None).await;
    let k = keys();
    let app = app(db, secrets(&k));
    let events = json!([
        {"email": "a@example.com", "timestamp": 1_767_000_000, "event": "delivered", "sg_event_id": "ev-a", "sg_message_id": "zzz.filter1", "message_id": a.to_string(), "customer_id": "c1", "campaign": "winback"},
        {"email": "b@example.com", "timestamp": 1_767_000_001, "event": "bounce", "type": "bounce", "reason": "550 5.1.1 no such user", "status": "5.1.1", "sg_event_id": "ev-b", "sg_message_id": "sgB.filterdrecv-1.2"},
        {"email": "c@example.com", "timestamp": 1_767_000_002, "event": "bounce", "type": "blocked", "sg_event_id": "ev-c1", "message_id": c.to_string()},
        {"email": "c@example.com", "timestamp": 1_767_000_003, "event": "spamreport", "sg_event_id": "ev-c2", "message_id": c.to_string()},
        {"email": "c@example.com", "timestamp": 1_767_000_004, "event": "open", "sg_event_id": "ev-c3", "message_id": c.to_string()},
        {"email": "a@example.com", "timestamp": 1_767_000_005, "event": "delivered", "sg_event_id": "ev-f", "message_id": f.to_string()}
    ])
    .to_string();
    let now = unix_now();
    let ts = &now.to_string();
    let before = snapshot(db).await;

    // Rejected, nothing changed: missing headers, tampered body, another key, garbage signature.
    let r = call(
        &app,
        post(
            "/webhooks/sendgrid",
            &[("content-type", "application/json")],
            events.clone(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let good = sendgrid_request(&k.sendgrid, ts, &events);
    let (parts, _) = good.into_parts();
    let tampered = Request::from_parts(
        parts,
        Body::from(events.replace("\"bounce\"", "\"delivered\"")),
    );
    assert_eq!(call(&app, tampered).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, sendgrid_request(&keys().sendgrid, ts, &events))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let garbage = post(
        "/webhooks/sendgrid",
        &[
            ("x-twilio-email-event-webhook-signature", "!!!"),
            ("x-twilio-email-event-webhook-timestamp", ts),
        ],
        events.clone(),
    );
    assert_eq!(call(&app, garbage).await.status, StatusCode::UNAUTHORIZED);
    // Signed, but the timestamp header changed.
    let good = sendgrid_request(&k.sendgrid, ts, &events);
    let (mut parts, body) = good.into_parts();
    parts.headers.insert(
        "x-twilio-email-event-webhook-timestamp",
        (now + 1).to_string().parse().unwrap(),
    );
    assert_eq!(
        call(&app, Request::from_parts(parts, body)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(snapshot(db).await, before);

    // Correctly signed.
    let r = call(&app, sendgrid_request(&k.sendgrid, ts, &events)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(
        strings(
            db,
            &format!("SELECT CAST(delivered_at AS TEXT) FROM outbox WHERE message_id = {a}")
        )
        .await,
        vec!["1767000000"]
    );
    assert_eq!(status(db, b).await, "failed");
    let err = strings(
        db,
        &format!("SELECT last_error FROM outbox WHERE message_id = {b}"),
    )
    .await;
    assert!(err[0].contains("no such user"), "{err:?}");
    assert_eq!(
        status(db, c).await,
        "sent",
        "blocked (soft) bounces and opens change nothing"
    );
    assert_eq!(
        status(db, f).await,
        "failed",
        "delivered never moves a failed row"
    );
    assert_eq!(
        suppressions(db).await,
        vec!["c2|email|hard_bounce|sendgrid", "c3|*|complaint|sendgrid"]
    );
    assert_eq!(status(db, q2).await, "suppressed", "c2's queued email");
    assert_eq!(
        status(db, s2).await,
        "queued",
        "a hard bounce on email leaves sms"
    );
    assert_eq!(
        status(db, s3).await,
        "suppressed",
        "a complaint stops every channel"
    );
    assert_eq!(
        event_count(db).await,
        4,
        "delivered a, bounce b, spamreport c, delivered f"
    );
    let linked = strings(db, "SELECT event_key || '|' || COALESCE(CAST(message_id AS TEXT), '-') || '|' || COALESCE(customer_id, '-') FROM webhook_events WHERE event_key = 'sendgrid/ev-b'").await;
    assert_eq!(linked, vec![format!("sendgrid/ev-b|{b}|c2")]);

    // A replay changes nothing.
    let after = snapshot(db).await;
    let r = call(&app, sendgrid_request(&k.sendgrid, ts, &events)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(snapshot(db).await, after);

    // Unsubscribe events name the customer by custom args or by email address.
    let more = json!([
        {"email": "A@Example.com", "timestamp": 1_767_000_200, "event": "group_unsubscribe", "sg_event_id": "ev-u1"},
        {"email": "nobody@example.com", "timestamp": 1_767_000_201, "event": "unsubscribe", "sg_event_id": "ev-u2"}
    ])
    .to_string();
    assert_eq!(
        call(&app, sendgrid_request(&k.sendgrid, ts, &more))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        suppressions(db).await,
        vec![
            "c1|email|unsubscribe|sendgrid",
            "c2|email|hard_bounce|sendgrid",
            "c3|*|complaint|sendgrid"
        ]
    );
    assert_eq!(
        event_count(db).await,
        6,
        "unmatched events are recorded too"
    );
}
on_both_backends!(sendgrid_sqlite, sendgrid_postgres, sendgrid);

// ---- Postmark ----

fn postmark_request(auth: Option<&str>, body: &Value) -> Request<Body> {
    let header = auth.map(|a| format!("Basic {}", STANDARD.encode(a)));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(h) = &header {
        headers.push(("authorization", h.as_str()));
    }
    post("/webhooks/postmark", &headers, body.to_string())
}

async fn postmark(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "email",
        "a@example.com",
        Some("postmark"),
        Some("pm-a"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "unknown",
        "email",
        "b@example.com",
        Some("postmark"),
        Some("pm-b"),
    )
    .await;
    let c = msg(
        db,
        "c3",
        1,
        "delivered",
        "email",
        "c@example.com",
        Some("postmark"),
        Some("pm-c"),
    )
    .await;
    let k = keys();
    let app = app(db, secrets(&k));
    let delivery = json!({"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound", "MessageID": "pm-a", "Recipient": "a@example.com", "DeliveredAt": "2026-01-05T10:00:00Z", "Details": "Test", "Metadata": {}});
    let bounce = json!({"RecordType": "Bounce", "ID": 4323372036854775807_u64, "Type": "HardBounce", "TypeCode": 1, "MessageID": "not-ours", "Email": "b@example.com", "Description": "Unknown user", "BouncedAt": "2026-01-05T10:01:00Z", "Metadata": {"message_id": b.to_string()}});
    let complaint = json!({"RecordType": "SpamComplaint", "ID": 77, "MessageID": "pm-c", "Email": "c@example.com", "BouncedAt": "2026-01-05T10:02:00Z"});
    let sub_change = json!({"RecordType": "SubscriptionChange", "MessageID": null, "Recipient": "A@EXAMPLE.COM", "SuppressSending": true, "SuppressionReason": "ManualSuppression", "ChangedAt": "2026-01-05T10:03:00Z", "Origin": "Recipient"});
    let before = snapshot(db).await;

    let r = call(&app, postmark_request(None, &bounce)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.contains_key("www-authenticate"));
    let r = call(&app, postmark_request(Some("hooks:wrong"), &bounce)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers.contains_key("www-authenticate"),
        "a 401 names the Basic scheme"
    );
    assert_eq!(
        call(&app, postmark_request(Some("hooks:pm-pass-1234"), &bounce))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = post(
        "/webhooks/postmark",
        &[("authorization", "Bearer hooks:pm-pass-123")],
        bounce.to_string(),
    );
    assert_eq!(call(&app, bearer).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(snapshot(db).await, before);

    for body in [&delivery, &bounce, &complaint, &sub_change] {
        let r = call(&app, postmark_request(Some(POSTMARK_AUTH), body)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(
        status(db, b).await,
        "failed",
        "matched by Metadata.message_id"
    );
    assert_eq!(
        status(db, c).await,
        "delivered",
        "a complaint does not change the status"
    );
    assert_eq!(
        suppressions(db).await,
        vec![
            "c1|email|unsubscribe|postmark",
            "c2|email|hard_bounce|postmark",
            "c3|*|complaint|postmark"
        ]
    );
    assert_eq!(event_count(db).await, 4);

    let after = snapshot(db).await;
    for body in [&delivery, &bounce, &complaint, &sub_change] {
        assert_eq!(
            call(&app, postmark_request(Some(POSTMARK_AUTH), body))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(snapshot(db).await, after, "replays change nothing");
}
on_both_backends!(postmark_sqlite, postmark_postgres, postmark);

// ---- Mailgun ----

/// Signed now.
fn mailgun_body(key: &str, token: &str, event_data: &Value) -> String {
    mailgun_body_at(key, &unix_now().to_string(), token, event_data)
}

fn mailgun_body_at(key: &str, timestamp: &str, token: &str, event_data: &Value) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{token}").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"signature": {"timestamp": timestamp, "token": token, "signature": sig}, "event-data": event_data}).to_string()
}

fn mailgun_request(body: String) -> Request<Body> {
    post(
        "/webhooks/mailgun",
        &[("content-type", "application/json")],
        body,
    )
}

async fn mailgun(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "email",
        "a@example.com",
        Some("mailgun"),
        Some("a1@mg.example.com"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "sent",
        "email",
        "b@example.com",
        Some("mailgun"),
        Some("b1@mg.example.com"),
    )
    .await;
    let c = msg(
        db,
        "c3",
        1,
        "sent",
        "email",
        "c@example.com",
        Some("mailgun"),
        Some("c1@mg.example.com"),
    )
    .await;
    let k = keys();
    let app = app(db, secrets(&k));
    let delivered = json!({"event": "delivered", "id": "mg-ev-1", "timestamp": 1_767_000_000.1, "recipient": "a@example.com", "user-variables": {"message_id": a.to_string()}, "message": {"headers": {"message-id": "zzz@mg.example.com"}}});
    let failed = json!({"event": "failed", "id": "mg-ev-2", "timestamp": 1_767_000_001.2, "severity": "permanent", "reason": "bounce", "recipient": "b@example.com", "delivery-status": {"code": 550, "message": "mailbox unavailable"}, "message": {"headers": {"message-id": "b1@mg.example.com"}}});
    let temporary = json!({"event": "failed", "id": "mg-ev-3", "timestamp": 1_767_000_002.3, "severity": "temporary", "recipient": "c@example.com", "user-variables": {"message_id": c.to_string()}});
    let complained = json!({"event": "complained", "id": "mg-ev-4", "timestamp": 1_767_000_003.4, "recipient": "c@example.com", "user-variables": {"message_id": c.to_string()}});
    let before = snapshot(db).await;

    assert_eq!(
        call(
            &app,
            mailgun_request(mailgun_body("wrong-key", "tok-1", &failed))
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &app,
            mailgun_request(json!({"event-data": failed}).to_string())
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, mailgun_request("not json".into())).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut bad_hex: Value =
        serde_json::from_str(&mailgun_body(MAILGUN_KEY, "tok-1", &failed)).unwrap();
    bad_hex["signature"]["signature"] = json!("zz");
    assert_eq!(
        call(&app, mailgun_request(bad_hex.to_string()))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(snapshot(db).await, before);

    let bodies: Vec<String> = [&delivered, &failed, &temporary, &complained]
        .iter()
        .enumerate()
        .map(|(i, e)| mailgun_body(MAILGUN_KEY, &format!("token-{i}"), e))
        .collect();
    for body in &bodies {
        let r = call(&app, mailgun_request(body.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(status(db, b).await, "failed");
    assert_eq!(
        status(db, c).await,
        "sent",
        "temporary failures are retried by Mailgun"
    );
    assert_eq!(
        suppressions(db).await,
        vec!["c2|email|hard_bounce|mailgun", "c3|*|complaint|mailgun"]
    );

    let after = snapshot(db).await;
    for body in &bodies {
        assert_eq!(
            call(&app, mailgun_request(body.clone())).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(snapshot(db).await, after, "replays change nothing");
    // Mailgun signs only timestamp + token: a captured signature on other event data is
    // refused too, because each token is accepted once.
    let mut forged: Value = serde_json::from_str(&bodies[0]).unwrap();
    forged["event-data"] = json!({"event": "complained", "id": "mg-ev-9", "timestamp": 1_767_000_009.0, "user-variables": {"message_id": a.to_string()}});
    assert_eq!(
        call(&app, mailgun_request(forged.to_string())).await.status,
        StatusCode::OK
    );
    assert_eq!(snapshot(db).await, after, "a reused token changes nothing");
}
on_both_backends!(mailgun_sqlite, mailgun_postgres, mailgun);

// ---- signed timestamps: stale requests are refused ----

/// 2015-01-01T00:00:00Z.
const Y2015: &str = "1420070400";

/// A correctly signed Mailgun `complained` or SendGrid event with a 2015 (or future, or
/// non-numeric) timestamp is refused with 401 and changes nothing; the same signed now is applied.
async fn stale_signatures_are_refused(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let c = msg(
        db,
        "c3",
        1,
        "sent",
        "email",
        "c@example.com",
        Some("mailgun"),
        Some("c1@mg.example.com"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "sent",
        "email",
        "b@example.com",
        Some("sendgrid"),
        Some("sgB"),
    )
    .await;
    let k = keys();
    let app = app(db, secrets(&k));
    let complained = json!({"event": "complained", "id": "mg-ev-c", "timestamp": 1_420_070_400.0, "recipient": "c@example.com", "user-variables": {"message_id": c.to_string()}});
    let spam = json!([{"email": "b@example.com", "timestamp": 1_420_070_400, "event": "spamreport", "sg_event_id": "sg-ev-s", "message_id": b.to_string()}]).to_string();
    let now = unix_now();
    let before = snapshot(db).await;

    for ts in [
        Y2015.to_string(),
        (now - 301).to_string(),
        (now + 3_600).to_string(),
    ] {
        let r = call(
            &app,
            mailgun_request(mailgun_body_at(
                MAILGUN_KEY,
                &ts,
                &format!("tok-{ts}"),
                &complained,
            )),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "mailgun {ts}: {}",
            r.body
        );
        assert!(r.body.contains("stale signature timestamp"), "{}", r.body);
        let r = call(&app, sendgrid_request(&k.sendgrid, &ts, &spam)).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "sendgrid {ts}: {}",
            r.body
        );
        assert!(r.body.contains("stale signature timestamp"), "{}", r.body);
    }
    // Correctly signed over a timestamp that is not Unix seconds.
    for ts in ["soon", "1767000000.5", "+1767000000"] {
        let r = call(
            &app,
            mailgun_request(mailgun_body_at(MAILGUN_KEY, ts, "tok-nn", &complained)),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "mailgun {ts}: {}",
            r.body
        );
        let r = call(&app, sendgrid_request(&k.sendgrid, ts, &spam)).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "sendgrid {ts}: {}",
            r.body
        );
        assert!(r.body.contains("invalid signature timestamp"), "{}", r.body);
    }
    assert_eq!(snapshot(db).await, before, "nothing changed");
    assert!(suppressions(db).await.is_empty());
    assert_eq!(
        event_count(db).await,
        0,
        "no webhook_events row, not even the token"
    );

    // The same events signed now (within the tolerance either way) are applied.
    let r = call(
        &app,
        mailgun_request(mailgun_body_at(
            MAILGUN_KEY,
            &(now - 60).to_string(),
            "tok-fresh",
            &complained,
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = call(
        &app,
        sendgrid_request(&k.sendgrid, &(now + 60).to_string(), &spam),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        suppressions(db).await,
        vec!["c2|*|complaint|sendgrid", "c3|*|complaint|mailgun"]
    );
    assert_eq!(
        event_count(db).await,
        3,
        "the mailgun token, the mailgun event, the sendgrid event"
    );
}
on_both_backends!(
    stale_signatures_are_refused_sqlite,
    stale_signatures_are_refused_postgres,
    stale_signatures_are_refused
);

/// The probe's sequence: a fresh signed Mailgun event is accepted; housekeeping prunes its
/// token record; the same (timestamp, token, signature) triple replayed with a forged complaint
/// is refused as stale and changes nothing. A 2-second tolerance keeps the wait short.
async fn pruned_token_cannot_be_replayed(t: TestDb) {
    use retentiond::scheduler::jobs::housekeeping;
    use retentiond::scheduler::schedule::HousekeepingSettings;
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "email",
        "a@example.com",
        Some("mailgun"),
        Some("a1@mg.example.com"),
    )
    .await;
    let k = keys();
    let tolerance = 2;
    let app = app(
        db,
        WebhookSecrets {
            tolerance_secs: tolerance,
            ..secrets(&k)
        },
    );
    let signed_at = unix_now();
    let delivered = json!({"event": "delivered", "id": "mg-ev-1", "timestamp": signed_at, "user-variables": {"message_id": a.to_string()}});
    let body = mailgun_body_at(MAILGUN_KEY, &signed_at.to_string(), "tok-probe", &delivered);
    let r = call(&app, mailgun_request(body.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(
        strings(
            db,
            "SELECT event_key FROM webhook_events WHERE kind = 'nonce'"
        )
        .await,
        vec!["mailgun/token/tok-probe"]
    );

    // 91 days later (the default retention is 90): housekeeping prunes the token record.
    exec(
        db,
        "UPDATE webhook_events SET received_at = received_at - 91 * 86400",
    )
    .await;
    let done = housekeeping(
        db,
        &HousekeepingSettings::default(),
        chrono::Utc::now(),
        chrono_tz::UTC,
        tolerance,
    )
    .await
    .unwrap();
    assert_eq!(done["webhook_events_deleted"], json!(2), "{done}");
    assert_eq!(event_count(db).await, 0);

    // The captured triple, now older than the tolerance, with forged event data.
    while unix_now() <= signed_at + u64::from(tolerance) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let after = snapshot(db).await;
    let mut forged: Value = serde_json::from_str(&body).unwrap();
    forged["event-data"] = json!({"event": "complained", "id": "mg-ev-9", "timestamp": signed_at, "user-variables": {"message_id": a.to_string()}});
    let r = call(&app, mailgun_request(forged.to_string())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("stale signature timestamp"), "{}", r.body);
    assert_eq!(
        snapshot(db).await,
        after,
        "no complaint, no webhook_events row"
    );
    assert!(suppressions(db).await.is_empty());
}
on_both_backends!(
    pruned_token_cannot_be_replayed_sqlite,
    pruned_token_cannot_be_replayed_postgres,
    pruned_token_cannot_be_replayed
);

/// Housekeeping never prunes a webhook event (a replay record) younger than twice the
/// tolerance plus an hour, even when `keep_webhook_events_days` is shorter.
async fn replay_records_outlive_the_tolerance(t: TestDb) {
    use retentiond::scheduler::jobs::housekeeping;
    use retentiond::scheduler::schedule::HousekeepingSettings;
    let db = &t.db;
    let now = chrono::Utc::now();
    let t0 = now.timestamp();
    let hours = |h: i64| t0 - h * 3_600;
    exec(
        db,
        &format!(
            "INSERT INTO webhook_events (event_key, provider, kind, received_at, payload) VALUES              ('mailgun/token/t36', 'mailgun', 'nonce', {}, '{{}}'), ('mailgun/token/t48', 'mailgun', 'nonce', {}, '{{}}'), ('mailgun/token/t50', 'mailgun', 'nonce', {}, '{{}}')",
            hours(36),
            hours(48),
            hours(50)
        ),
    )
    .await;
    let one_day = HousekeepingSettings {
        keep_webhook_events_days: 1,
        ..Default::default()
    };
    // A one-day tolerance: records are kept 2 days + 1 hour = 49 hours.
    let done = housekeeping(db, &one_day, now, chrono_tz::UTC, 86_400)
        .await
        .unwrap();
    assert_eq!(done["webhook_events_deleted"], json!(1), "{done}");
    assert_eq!(
        strings(
            db,
            "SELECT event_key FROM webhook_events ORDER BY event_key"
        )
        .await,
        vec!["mailgun/token/t36", "mailgun/token/t48"]
    );
    // The default tolerance: the retention (1 day) decides.
    let done = housekeeping(db, &one_day, now, chrono_tz::UTC, 300)
        .await
        .unwrap();
    assert_eq!(done["webhook_events_deleted"], json!(2), "{done}");
    assert_eq!(event_count(db).await, 0);
}
on_both_backends!(
    replay_records_outlive_the_tolerance_sqlite,
    replay_records_outlive_the_tolerance_postgres,
    replay_records_outlive_the_tolerance
);

// ---- Twilio ----

fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn form(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

/// A request signed for `signed_url`, sent to `path` (with its query, if any).
fn twilio_request(
    token: &str,
    signed_url: &str,
    path: &str,
    params: &[(&str, &str)],
) -> Request<Body> {
    let sig = twilio_signature(token, signed_url, params);
    post(
        path,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-twilio-signature", &sig),
        ],
        form(params),
    )
}

async fn twilio(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "sms",
        "+919876543210",
        Some("twilio"),
        Some("SMa"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "sent",
        "sms",
        "+15550001111",
        Some("twilio"),
        Some("SMb"),
    )
    .await;
    let g = msg(
        db,
        "c3",
        1,
        "sending",
        "sms",
        "+15550002222",
        Some("twilio"),
        None,
    )
    .await;
    let q1 = msg(db, "c1", 2, "queued", "sms", "+919876543210", None, None).await;
    let w1 = msg(
        db,
        "c1",
        3,
        "queued",
        "whatsapp",
        "+919876543210",
        None,
        None,
    )
    .await;
    let k = keys();
    let app = app(db, secrets(&k));
    let url = format!("{BASE}/webhooks/twilio");
    let delivered: &[(&str, &str)] = &[
        ("MessageSid", "SMa"),
        ("SmsSid", "SMa"),
        ("MessageStatus", "delivered"),
        ("To", "+919876543210"),
        ("From", "+15005550006"),
        ("AccountSid", "AC1"),
    ];
    let undelivered: &[(&str, &str)] = &[
        ("MessageSid", "SMb"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "21211"),
        ("To", "+15550001111"),
        ("From", "+15005550006"),
    ];
    let stop_sms: &[(&str, &str)] = &[
        ("MessageSid", "SMin1"),
        ("SmsStatus", "received"),
        ("Body", " stop "),
        ("From", "+919876543210"),
        ("To", "+15005550006"),
        ("NumMedia", "0"),
    ];
    let stop_wa: &[(&str, &str)] = &[
        ("MessageSid", "SMin2"),
        ("SmsStatus", "received"),
        ("Body", "STOP"),
        ("From", "whatsapp:+15550001111"),
        ("To", "whatsapp:+15005550006"),
    ];
    let hello: &[(&str, &str)] = &[
        ("MessageSid", "SMin3"),
        ("SmsStatus", "received"),
        ("Body", "hello"),
        ("From", "+919876543210"),
    ];
    let g_path = format!("/webhooks/twilio?message_id={g}");
    let g_url = format!("{url}?message_id={g}");
    let g_delivered: &[(&str, &str)] = &[
        ("MessageSid", "SMg"),
        ("MessageStatus", "delivered"),
        ("To", "+15550002222"),
    ];
    let before = snapshot(db).await;

    let r = call(
        &app,
        post(
            "/webhooks/twilio",
            &[("content-type", "application/x-www-form-urlencoded")],
            form(stop_sms),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(
            &app,
            twilio_request("wrong-token", &url, "/webhooks/twilio", stop_sms)
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &app,
            twilio_request(
                TWILIO_TOKEN,
                "https://evil.example.com/webhooks/twilio",
                "/webhooks/twilio",
                stop_sms
            )
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // Signed without the query string, sent with one.
    assert_eq!(
        call(
            &app,
            twilio_request(TWILIO_TOKEN, &url, &g_path, g_delivered)
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // A parameter changed after signing.
    let sig = twilio_signature(TWILIO_TOKEN, &url, stop_sms);
    let tampered: Vec<(&str, &str)> = stop_sms
        .iter()
        .map(|&(k, v)| {
            if k == "From" {
                (k, "+15550001111")
            } else {
                (k, v)
            }
        })
        .collect();
    let r = call(
        &app,
        post(
            "/webhooks/twilio",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-twilio-signature", &sig),
            ],
            form(&tampered),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(snapshot(db).await, before);

    let requests = [
        (url.clone(), "/webhooks/twilio".to_string(), delivered),
        (url.clone(), "/webhooks/twilio".to_string(), undelivered),
        (url.clone(), "/webhooks/twilio".to_string(), stop_sms),
        (url.clone(), "/webhooks/twilio".to_string(), stop_wa),
        (url.clone(), "/webhooks/twilio".to_string(), hello),
        (g_url.clone(), g_path.clone(), g_delivered),
    ];
    for (signed, path, params) in &requests {
        let r = call(&app, twilio_request(TWILIO_TOKEN, signed, path, params)).await;
        assert_eq!(r.status, StatusCode::OK, "{params:?}: {}", r.body);
    }
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(status(db, b).await, "failed");
    assert_eq!(
        status(db, g).await,
        "delivered",
        "matched by the status callback URL's message_id"
    );
    assert_eq!(
        suppressions(db).await,
        vec![
            "c1|sms|stop|twilio",
            "c2|sms|hard_bounce|twilio",
            "c2|whatsapp|stop|twilio"
        ],
        "STOP matched +91 98765 43210 and +1 (555) 000-1111 on digits"
    );
    assert_eq!(status(db, q1).await, "suppressed");
    assert_eq!(
        status(db, w1).await,
        "queued",
        "an SMS STOP leaves WhatsApp"
    );
    assert_eq!(event_count(db).await, 5, "hello is ignored");

    let after = snapshot(db).await;
    for (signed, path, params) in &requests {
        assert_eq!(
            call(&app, twilio_request(TWILIO_TOKEN, signed, path, params))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(snapshot(db).await, after, "replays change nothing");
}
on_both_backends!(twilio_sqlite, twilio_postgres, twilio);

// ---- WhatsApp Cloud API ----

fn whatsapp_request(secret: &str, body: &str) -> Request<Body> {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    post(
        "/webhooks/whatsapp",
        &[
            ("content-type", "application/json"),
            ("x-hub-signature-256", &format!("sha256={sig}")),
        ],
        body.to_string(),
    )
}

async fn whatsapp(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "whatsapp",
        "+919876543210",
        Some("whatsapp_cloud"),
        Some("wamid.A"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "sent",
        "whatsapp",
        "+15550001111",
        Some("whatsapp_cloud"),
        Some("wamid.B"),
    )
    .await;
    let w1 = msg(
        db,
        "c1",
        2,
        "queued",
        "whatsapp",
        "+919876543210",
        None,
        None,
    )
    .await;
    let e1 = msg(db, "c1", 3, "queued", "email", "a@example.com", None, None).await;
    let k = keys();
    let app = app(db, secrets(&k));

    // The subscription handshake.
    let r = call(&app, get(&format!("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={WA_VERIFY}&hub.challenge=1158201444"))).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "1158201444"));
    // Meta's handshake is not a signed event: Meta documents 403 for a wrong verify token.
    let r = call(
        &app,
        get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1158201444"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.body.contains("1158201444"));

    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": "123"},
        "statuses": [
            {"id": "wamid.A", "status": "sent", "timestamp": "1767000000", "recipient_id": "919876543210"},
            {"id": "wamid.A", "status": "delivered", "timestamp": "1767000005", "recipient_id": "919876543210"},
            {"id": "wamid.B", "status": "failed", "timestamp": "1767000006", "recipient_id": "15550001111", "errors": [{"code": 131026, "title": "Message undeliverable"}]}
        ],
        "messages": [
            {"from": "919876543210", "id": "wamid.IN1", "timestamp": "1767000007", "type": "text", "text": {"body": "Stop"}},
            {"from": "919876543210", "id": "wamid.IN2", "timestamp": "1767000008", "type": "text", "text": {"body": "thanks!"}}
        ]
    }}]}]})
    .to_string();
    let before = snapshot(db).await;
    assert_eq!(
        call(
            &app,
            post(
                "/webhooks/whatsapp",
                &[("content-type", "application/json")],
                body.clone()
            )
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, whatsapp_request("not-the-secret", &body))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let bad = post(
        "/webhooks/whatsapp",
        &[("x-hub-signature-256", "sha256=zz")],
        body.clone(),
    );
    assert_eq!(call(&app, bad).await.status, StatusCode::UNAUTHORIZED);
    let sig_of_other = whatsapp_request(WA_SECRET, "{}");
    let (parts, _) = sig_of_other.into_parts();
    assert_eq!(
        call(&app, Request::from_parts(parts, Body::from(body.clone())))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(snapshot(db).await, before);

    let r = call(&app, whatsapp_request(WA_SECRET, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(
        strings(
            db,
            &format!("SELECT CAST(delivered_at AS TEXT) FROM outbox WHERE message_id = {a}")
        )
        .await,
        vec!["1767000005"]
    );
    assert_eq!(status(db, b).await, "failed");
    assert_eq!(
        suppressions(db).await,
        vec![
            "c1|whatsapp|stop|whatsapp",
            "c2|whatsapp|hard_bounce|whatsapp"
        ]
    );
    assert_eq!(status(db, w1).await, "suppressed");
    assert_eq!(status(db, e1).await, "queued");
    assert_eq!(event_count(db).await, 3);

    let after = snapshot(db).await;
    assert_eq!(
        call(&app, whatsapp_request(WA_SECRET, &body)).await.status,
        StatusCode::OK
    );
    assert_eq!(snapshot(db).await, after, "a replay changes nothing");
}
on_both_backends!(whatsapp_sqlite, whatsapp_postgres, whatsapp);

// ---- our own signed webhook (receivers of the `webhook` provider) ----

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `v1=` + hex(HMAC-SHA256(secret, timestamp + "." + body)), computed here from the documented
/// formula (not with the provider's own function).
fn retentiond_signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1={hex}")
}

fn retentiond_request(secret: &str, timestamp: u64, body: &str) -> Request<Body> {
    let ts = timestamp.to_string();
    let sig = retentiond_signature(secret, timestamp, body);
    post(
        "/webhooks/retentiond",
        &[
            ("content-type", "application/json"),
            ("x-retentiond-timestamp", &ts),
            ("x-retentiond-signature", &sig),
        ],
        body.to_string(),
    )
}

async fn retentiond_webhook(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    let a = msg(
        db,
        "c1",
        1,
        "sent",
        "email",
        "a@example.com",
        Some("webhook"),
        Some("rcv-a"),
    )
    .await;
    let b = msg(
        db,
        "c2",
        1,
        "sent",
        "sms",
        "+15550001111",
        Some("webhook"),
        None,
    )
    .await;
    let c = msg(
        db,
        "c3",
        1,
        "delivered",
        "email",
        "c@example.com",
        Some("webhook"),
        None,
    )
    .await;
    let q2 = msg(db, "c2", 2, "queued", "sms", "+15550001111", None, None).await;
    let e2 = msg(db, "c2", 3, "queued", "email", "b@example.com", None, None).await;
    let q3 = msg(
        db,
        "c3",
        2,
        "queued",
        "whatsapp",
        "+15550002222",
        None,
        None,
    )
    .await;
    let k = keys();
    let app = app(db, secrets(&k));
    let events = json!([
        {"event_id": "rcv-ev-1", "message_id": a, "event": "delivered", "timestamp": 1_767_000_000},
        {"event_id": "rcv-ev-2", "message_id": b.to_string(), "event": "bounced", "reason": "30003 unreachable handset"},
        {"event_id": "rcv-ev-3", "message_id": c, "event": "complained"},
        // A message we do not know: the customer and channel say who to suppress.
        {"event_id": "rcv-ev-4", "message_id": 999_999, "event": "unsubscribed", "customer_id": "c1", "channel": "whatsapp"},
        // Neither a known message nor a channel: recorded, nothing else.
        {"event_id": "rcv-ev-5", "message_id": 999_998, "event": "stop", "customer_id": "c1"}
    ])
    .to_string();
    let now = unix_now();
    let before = snapshot(db).await;

    // Forged, altered, unsigned, stale: 401, nothing changes.
    let unsigned = post(
        "/webhooks/retentiond",
        &[("content-type", "application/json")],
        events.clone(),
    );
    assert_eq!(call(&app, unsigned).await.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, retentiond_request("not-the-secret", now, &events)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.body.contains(RTD_SECRET));
    let (parts, _) = retentiond_request(RTD_SECRET, now, &events).into_parts();
    let altered = Request::from_parts(
        parts,
        Body::from(events.replace("\"complained\"", "\"delivered\"")),
    );
    assert_eq!(call(&app, altered).await.status, StatusCode::UNAUTHORIZED);
    let (mut parts, body) = retentiond_request(RTD_SECRET, now, &events).into_parts();
    parts.headers.insert(
        "x-retentiond-timestamp",
        (now + 1).to_string().parse().unwrap(),
    );
    assert_eq!(
        call(&app, Request::from_parts(parts, body)).await.status,
        StatusCode::UNAUTHORIZED,
        "timestamp changed after signing"
    );
    let (mut parts, body) = retentiond_request(RTD_SECRET, now, &events).into_parts();
    parts.headers.remove("x-retentiond-timestamp");
    assert_eq!(
        call(&app, Request::from_parts(parts, body)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let (mut parts, body) = retentiond_request(RTD_SECRET, now, &events).into_parts();
    parts
        .headers
        .insert("x-retentiond-signature", "v1=zz".parse().unwrap());
    assert_eq!(
        call(&app, Request::from_parts(parts, body)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Correctly signed, but more than 5 minutes ago (a captured request replayed later), or
    // too far ahead.
    let r = call(&app, retentiond_request(RTD_SECRET, now - 6 * 60, &events)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.body.contains("timestamp"), "{}", r.body);
    assert_eq!(
        call(&app, retentiond_request(RTD_SECRET, now + 6 * 60, &events))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Oversized (signed): 413 before anything is read.
    let big = format!(
        "[{}]",
        "{\"event_id\": \"x\", \"message_id\": 1, \"event\": \"stop\"},"
            .repeat(retentiond::http::MAX_BODY_BYTES / 40)
    );
    assert!(big.len() > retentiond::http::MAX_BODY_BYTES);
    assert_eq!(
        call(&app, retentiond_request(RTD_SECRET, now, &big))
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Authentic but not our contract: 400, the whole batch refused.
    let typo = json!([{"event_id": "rcv-ev-9", "message_id": a, "event": "delivered"}, {"event_id": "rcv-ev-10", "message_id": a, "event": "deliverd"}]).to_string();
    let r = call(&app, retentiond_request(RTD_SECRET, now, &typo)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("event 1"), "{}", r.body);
    assert_eq!(snapshot(db).await, before);

    // Valid.
    let r = call(&app, retentiond_request(RTD_SECRET, now, &events)).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(status(db, a).await, "delivered");
    assert_eq!(
        strings(
            db,
            &format!("SELECT CAST(delivered_at AS TEXT) FROM outbox WHERE message_id = {a}")
        )
        .await,
        vec!["1767000000"]
    );
    assert_eq!(status(db, b).await, "failed");
    let err = strings(
        db,
        &format!("SELECT last_error FROM outbox WHERE message_id = {b}"),
    )
    .await;
    assert!(err[0].contains("unreachable handset"), "{err:?}");
    assert_eq!(
        status(db, c).await,
        "delivered",
        "a complaint does not change the status"
    );
    assert_eq!(
        suppressions(db).await,
        vec![
            "c1|whatsapp|unsubscribe|retentiond",
            "c2|sms|hard_bounce|retentiond",
            "c3|*|complaint|retentiond"
        ]
    );
    assert_eq!(status(db, q2).await, "suppressed", "c2's queued sms");
    assert_eq!(
        status(db, e2).await,
        "queued",
        "a bounce on sms leaves email"
    );
    assert_eq!(
        status(db, q3).await,
        "suppressed",
        "a complaint stops every channel"
    );
    assert_eq!(
        strings(db, "SELECT event_key || '|' || kind || '|' || COALESCE(CAST(message_id AS TEXT), '-') || '|' || COALESCE(customer_id, '-') FROM webhook_events ORDER BY event_key").await,
        vec![
            format!("retentiond/rcv-ev-1|delivered|{a}|c1"),
            format!("retentiond/rcv-ev-2|bounced|{b}|c2"),
            format!("retentiond/rcv-ev-3|complained|{c}|c3"),
            "retentiond/rcv-ev-4|unsubscribed|-|c1".to_string(),
            "retentiond/rcv-ev-5|stop|-|-".to_string(),
        ]
    );

    // Replays: the same request again, and the same events re-signed later (a receiver's
    // retry), change nothing.
    let after = snapshot(db).await;
    assert_eq!(
        call(&app, retentiond_request(RTD_SECRET, now, &events))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, retentiond_request(RTD_SECRET, now + 30, &events))
            .await
            .status,
        StatusCode::OK
    );
    let one = json!({"event_id": "rcv-ev-2", "message_id": b, "event": "bounced"}).to_string();
    assert_eq!(
        call(&app, retentiond_request(RTD_SECRET, now, &one))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(snapshot(db).await, after, "replays change nothing");

    // A single event object (not an array).
    let d = msg(
        db,
        "c2",
        4,
        "sent",
        "email",
        "b@example.com",
        Some("webhook"),
        None,
    )
    .await;
    let one = json!({"event_id": "rcv-ev-6", "message_id": d, "event": "delivered"}).to_string();
    assert_eq!(
        call(&app, retentiond_request(RTD_SECRET, unix_now(), &one))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(status(db, d).await, "delivered");
}
on_both_backends!(
    retentiond_webhook_sqlite,
    retentiond_webhook_postgres,
    retentiond_webhook
);

// ---- rejections are logged ----

/// Log lines written while the guard lives (on this thread).
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// A current-thread runtime: the handlers run on this thread, under the capturing subscriber.
#[tokio::test]
async fn rejections_are_401_and_logged_without_secrets() {
    let t = crate::helpers::sqlite().await;
    let k = keys();
    let app = app(&t.db, secrets(&k));
    let (logs, _guard) = Logs::capture();
    let body = json!([{"event_id": "e", "message_id": 1, "event": "delivered"}]).to_string();
    let now = unix_now();
    let forged_sig = retentiond_signature("guessed-secret", now, &body);
    let requests = [
        (
            "sendgrid",
            sendgrid_request(&keys().sendgrid, &now.to_string(), &body),
        ),
        // Correctly signed in 2015.
        (
            "mailgun",
            mailgun_request(mailgun_body_at(
                MAILGUN_KEY,
                "1420070400",
                "tok-8",
                &json!({"event": "complained"}),
            )),
        ),
        (
            "postmark",
            postmark_request(
                Some("hooks:wrong-password"),
                &json!({"RecordType": "Delivery"}),
            ),
        ),
        (
            "mailgun",
            mailgun_request(mailgun_body(
                "wrong-key",
                "tok-9",
                &json!({"event": "delivered"}),
            )),
        ),
        (
            "twilio",
            twilio_request(
                "wrong-token",
                &format!("{BASE}/webhooks/twilio"),
                "/webhooks/twilio",
                &[("MessageSid", "SM1"), ("MessageStatus", "delivered")],
            ),
        ),
        ("whatsapp", whatsapp_request("not-the-secret", &body)),
        (
            "retentiond",
            retentiond_request("guessed-secret", now, &body),
        ),
        (
            "retentiond",
            post("/webhooks/retentiond", &[], body.clone()),
        ),
    ];
    for (provider, req) in requests {
        let r = call(&app, req).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{provider}: {}", r.body);
    }
    let text = logs.text();
    for provider in [
        "sendgrid",
        "postmark",
        "mailgun",
        "twilio",
        "whatsapp",
        "retentiond",
    ] {
        assert!(
            text.lines().any(|l| l.contains(" WARN ")
                && l.contains("webhook rejected")
                && l.contains(&format!("provider=\"{provider}\""))),
            "{provider} not logged:\n{text}"
        );
    }
    assert!(
        text.contains("outcome=\"invalid_signature\"")
            && text.contains("outcome=\"unauthenticated\""),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains(" WARN ")
            && l.contains("provider=\"mailgun\"")
            && l.contains("outcome=\"stale_timestamp\"")
            && l.contains("stale signature timestamp")),
        "{text}"
    );
    for secret in [
        POSTMARK_AUTH,
        "pm-pass-123",
        "wrong-password",
        MAILGUN_KEY,
        TWILIO_TOKEN,
        WA_SECRET,
        RTD_SECRET,
        "guessed-secret",
        forged_sig.as_str(),
        "a@example.com",
    ] {
        assert!(!text.contains(secret), "{secret:?} logged:\n{text}");
    }
    assert_eq!(event_count(&t.db).await, 0);
}

// ---- configuration and limits ----

async fn unconfigured_and_limits(t: TestDb) {
    let db = &t.db;
    let closed = app(db, WebhookSecrets::default());
    for provider in [
        "sendgrid",
        "postmark",
        "mailgun",
        "twilio",
        "whatsapp",
        "retentiond",
    ] {
        let r = call(&closed, post(&format!("/webhooks/{provider}"), &[], "{}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{provider}");
        assert!(r.body.contains("not configured"), "{provider}: {}", r.body);
    }
    assert_eq!(
        call(&closed, post("/webhooks/pigeon", &[], "{}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &closed,
            get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&closed, get("/webhooks/sendgrid")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let k = keys();
    let app = app(db, secrets(&k));
    let big = "x".repeat(retentiond::http::MAX_BODY_BYTES + 1);
    assert_eq!(
        call(&app, whatsapp_request(WA_SECRET, &big)).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Authentic but not JSON: 400, nothing recorded.
    assert_eq!(
        call(&app, whatsapp_request(WA_SECRET, "not json"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(
            &app,
            sendgrid_request(
                &k.sendgrid,
                &unix_now().to_string(),
                "{\"not\": \"an array\"}"
            )
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(event_count(db).await, 0);
    assert_eq!(
        call(&app, get("/nowhere")).await.status,
        StatusCode::NOT_FOUND
    );

    // Debug output never shows secrets.
    let state = format!("{:?}", secrets(&k));
    assert!(
        !state.contains(TWILIO_TOKEN) && !state.contains(MAILGUN_KEY),
        "{state}"
    );
}
on_both_backends!(
    unconfigured_and_limits_sqlite,
    unconfigured_and_limits_postgres,
    unconfigured_and_limits
);

// ---- the real server: TCP, graceful shutdown ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_over_tcp_and_shuts_down() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let t = crate::helpers::sqlite().await;
    let state = AppState {
        db: t.db.clone(),
        unsubscribe_secret: UNSUB.to_vec(),
        webhooks: WebhookSecrets::default(),
        public_base_url: BASE.into(),
        metrics: install_metrics_recorder(),
        brand_name: "Veda Roots".into(),
        report: None,
        auth_token: None,
    };
    assert!(!format!("{state:?}").contains("http-test-unsubscribe-secret"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(retentiond::http::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("ok"), "{reply}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

// ---- operator endpoints: optional bearer token ----

const OPS_TOKEN: &str = "ops-bearer-token-0123456789abcdef";

fn app_with_token(db: &Db) -> Router {
    router(AppState {
        db: db.clone(),
        unsubscribe_secret: UNSUB.to_vec(),
        webhooks: WebhookSecrets::default(),
        public_base_url: BASE.into(),
        metrics: install_metrics_recorder(),
        brand_name: "Veda Roots".into(),
        report: None,
        auth_token: Some(retentiond::http::AuthToken::new(OPS_TOKEN)),
    })
}

fn get_with(uri: &str, authorization: &str) -> Request<Body> {
    Request::get(uri)
        .header("authorization", authorization)
        .body(Body::empty())
        .unwrap()
}

/// With `http.auth_token_env` set, `GET /` and `/metrics` need `Authorization: Bearer <token>`;
/// health, unsubscribe and webhooks answer as before (they are public or carry their own
/// credentials).
async fn operator_endpoints_require_the_token(t: TestDb) {
    let db = &t.db;
    seed_customers(db).await;
    msg(db, "c1", 1, "queued", "email", "a@example.com", None, None).await;
    let guarded = app_with_token(db);
    for uri in ["/metrics", "/"] {
        for req in [
            get(uri),
            get_with(uri, "Bearer wrong-token"),
            get_with(uri, &format!("Basic {OPS_TOKEN}")),
            get_with(uri, "Bearer "),
        ] {
            let r = call(&guarded, req).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}: {}", r.body);
            assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"retentiond\"");
            assert!(
                !r.body.contains("retentiond_") && !r.body.contains(OPS_TOKEN),
                "{uri}: {}",
                r.body
            );
        }
    }
    let r = call(
        &guarded,
        get_with("/metrics", &format!("Bearer {OPS_TOKEN}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.lines().any(|l| l == "retentiond_queue_depth 1"),
        "{}",
        r.body
    );
    // Past the token, `/` answers as without one (this state has no report: 404).
    let r = call(&guarded, get_with("/", &format!("bearer {OPS_TOKEN}"))).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (StatusCode::NOT_FOUND, "no report on this server")
    );
    // The rest stays open.
    assert_eq!(call(&guarded, get("/healthz")).await.status, StatusCode::OK);
    let r = call(
        &guarded,
        get(&format!("/unsubscribe/{}", token("c1", "email"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = call(
        &guarded,
        post(
            "/unsubscribe/not-a-token",
            &[],
            "List-Unsubscribe=One-Click",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(&guarded, post("/webhooks/postmark", &[], "{}")).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a webhook's own rules decide, not the token: {}",
        r.body
    );
    // Without a token configured, both are open (the default).
    let open = app(db, WebhookSecrets::default());
    assert_eq!(call(&open, get("/metrics")).await.status, StatusCode::OK);
}
on_both_backends!(
    operator_token_sqlite,
    operator_token_postgres,
    operator_endpoints_require_the_token
);

/// Serving a non-loopback address without a token logs a warning at start; a loopback address,
/// or a token, does not.
#[tokio::test]
async fn open_non_loopback_bind_is_warned_about() {
    let t = crate::helpers::sqlite().await;
    let state = |auth_token: Option<retentiond::http::AuthToken>| AppState {
        db: t.db.clone(),
        unsubscribe_secret: UNSUB.to_vec(),
        webhooks: WebhookSecrets::default(),
        public_base_url: BASE.into(),
        metrics: install_metrics_recorder(),
        brand_name: "Veda Roots".into(),
        report: None,
        auth_token,
    };
    for (bind, token, warned) in [
        ("0.0.0.0:0", None, true),
        ("127.0.0.1:0", None, false),
        (
            "0.0.0.0:0",
            Some(retentiond::http::AuthToken::new(OPS_TOKEN)),
            false,
        ),
    ] {
        let (logs, guard) = Logs::capture();
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        retentiond::http::serve(listener, state(token), async {})
            .await
            .unwrap();
        drop(guard);
        let text = logs.text();
        let warning = text.lines().any(|l| {
            l.contains(" WARN ")
                && l.contains("open to anyone")
                && l.contains("http.auth_token_env")
        });
        assert_eq!(warning, warned, "{bind}:\n{text}");
    }
}
