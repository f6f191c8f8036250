//! Measurement on both backends: attribution edge cases on hand-made rows, and uplift on a
//! generated brand whose responses are simulated with a known effect (the interval must cover
//! it; a zero effect must come out not significant, at the rate a 95% interval promises).

use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use retentiond::campaigns::CampaignSet;
use retentiond::config::{ModelSettings, Settings};
use retentiond::db::{Db, Val};
use retentiond::measurement::{MeasurementSettings, attribute, uplift};
use retentiond::models::training;
use retentiond::selection::offer::Secrets;

use crate::helpers::TestDb;
use crate::models::{brand, end, import};
use crate::on_both_backends;

const DAY: i64 = 86_400;

async fn count(db: &Db, sql: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.unwrap())
}

async fn outbox_row(
    db: &Db,
    id: i64,
    customer: &str,
    day: &str,
    status: &str,
    channel: Option<&str>,
    at: i64,
) {
    let mut tx = db.begin().await.unwrap();
    tx.execute(
        "INSERT INTO outbox (message_id, idempotency_key, campaign, customer_id, day, status, channel, fallback_channels, offer, explanation, holdout_draw, not_before, expires_at, created_at, updated_at, sent_at) \
         VALUES ($1, $2, 'c', $3, $4, $5, $6, '[]', '{}', '{}', 0.5, $7, $8, $7, $7, $9)",
        &[
            Val::Int(Some(id)),
            Val::Text(Some(format!("c/{customer}/{day}"))),
            Val::Text(Some(customer.into())),
            Val::Text(Some(day.into())),
            Val::Text(Some(status.into())),
            Val::Text(channel.map(str::to_string)),
            Val::Int(Some(at)),
            Val::Int(Some(at + DAY)),
            Val::Int((status == "sent").then_some(at)),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn order(db: &Db, id: &str, customer: &str, at: i64, amount: f64, status: &str) {
    let mut tx = db.begin().await.unwrap();
    tx.execute(
        "INSERT INTO orders (order_id, customer_id, ordered_at, total_amount, status) VALUES ($1, $2, $3, $4, $5)",
        &[Val::Text(Some(id.into())), Val::Text(Some(customer.into())), Val::Int(Some(at)), Val::Real(Some(amount)), Val::Text(Some(status.into()))],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Orders before the send, cancelled and refunded orders, orders after the window, several
/// messages before one order (the latest gets it), and a held-out customer who buys.
async fn attribution_edge_cases(t: TestDb) {
    let t0 = 1_780_000_000; // 2026-05-28
    let d0 = "2026-05-28";
    let d2 = "2026-05-30";
    outbox_row(&t.db, 1, "A", d0, "sent", Some("email"), t0).await;
    outbox_row(&t.db, 2, "B", d0, "sent", Some("email"), t0).await;
    outbox_row(&t.db, 3, "B", d2, "sent", Some("sms"), t0 + 2 * DAY).await;
    outbox_row(&t.db, 4, "C", d0, "held_out", None, t0).await;
    outbox_row(&t.db, 5, "D", d0, "sent", Some("whatsapp"), t0).await;
    order(&t.db, "A1", "A", t0 - 3600, 100.0, "completed").await; // before the send
    order(&t.db, "A2", "A", t0 + DAY, 200.0, "cancelled").await;
    order(&t.db, "A3", "A", t0 + 2 * DAY, 300.0, "completed").await; // → 1
    order(&t.db, "A4", "A", t0 + 8 * DAY, 400.0, "completed").await; // after email's 7 days
    order(&t.db, "B1", "B", t0 + 3 * DAY, 500.0, "completed").await; // in both windows → 3 (latest)
    order(&t.db, "B2", "B", t0 + 6 * DAY, 600.0, "completed").await; // sms window over → 2
    order(&t.db, "C1", "C", t0 + DAY, 700.0, "completed").await; // held out, email window → 4
    order(&t.db, "D1", "D", t0 + DAY, 800.0, "refunded").await;
    order(&t.db, "D2", "D", t0 + 4 * DAY, 900.0, "completed").await; // after WhatsApp's 3 days
    let m = MeasurementSettings::default();
    let set = CampaignSet::default();
    let a = attribute(&t.db, &m, &set).await.unwrap();
    assert_eq!(a.conversions, 4, "{a:?}");
    let got: Vec<(String, i64, i64, f64)> = retentiond::with_pool!(&t.db, p => sqlx::query_as(
        "SELECT order_id, message_id, treated, revenue FROM conversions ORDER BY order_id"
    ).fetch_all(p).await.unwrap());
    assert_eq!(
        got,
        [
            ("A3".to_string(), 1, 1, 300.0),
            ("B1".to_string(), 3, 1, 500.0),
            ("B2".to_string(), 2, 1, 600.0),
            ("C1".to_string(), 4, 0, 700.0)
        ]
    );
    // Idempotent: a second pass gives the same table.
    attribute(&t.db, &m, &set).await.unwrap();
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM conversions").await, 4);

    let from = NaiveDate::from_ymd_opt(2026, 5, 28).unwrap();
    let to = NaiveDate::from_ymd_opt(2026, 5, 30).unwrap();
    let r = uplift(&t.db, &m, &set, from, to, t0 + 30 * DAY)
        .await
        .unwrap();
    let f = &r.funnel[0];
    assert_eq!(
        (
            f.selected,
            f.held_out,
            f.sent,
            f.converted,
            f.holdout_converted
        ),
        (5, 1, 4, 3, 1),
        "{f:?}"
    );
    assert_eq!(
        (
            r.overall.treated.n,
            r.overall.treated.converted,
            r.overall.holdout.n,
            r.overall.holdout.converted
        ),
        (4, 3, 1, 1)
    );
    assert!((r.overall.treated.revenue - 1400.0).abs() < 1e-9);
    assert!(
        r.overall.warning.as_deref().unwrap().contains("too small"),
        "{:?}",
        r.overall.warning
    );
    // Before the windows close nothing is compared.
    let early = uplift(&t.db, &m, &set, from, to, t0 + DAY).await.unwrap();
    assert_eq!(early.still_open, 5);
    assert_eq!(early.overall.treated.n, 0);
}
on_both_backends!(
    attribution_sqlite,
    attribution_postgres,
    attribution_edge_cases
);

pub(crate) const CAMPAIGN: &str = r#"name = "winback"
enabled = true
channels = ["email"]
[audience]
min_orders = 1
[trigger]
lead_days = 365
min_lapse_risk = 0.0
min_p_alive = 0.0
skip_if_p_return_above = 1.0
[offer]
category = "recommended"
landing_url = "https://shop.example/c/{category}"
[copy]
subject = "Hi {first_name}"
headline = "Restock {category}"
body = "Body"
cta = "Shop"
[limits]
max_sends_per_run = 100000
send_hours = "00:00-24:00"
holdout_percent = 50
"#;

/// A generated brand, scored and selected with a 50% holdout; every selected message is sent.
/// Responses are then simulated many times with a known effect: the 95% interval of the
/// return-rate lift must cover the true effect about 95% of the time, and a zero effect must be
/// significant only about 5% of the time.
async fn uplift_recovers_a_known_effect(t: TestDb) {
    import(&t.db, &brand(6000)).await;
    let m = ModelSettings {
        max_train_rows: 30_000,
        ..ModelSettings::default()
    };
    training::train(&t.db, &m, chrono_tz::UTC, end())
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    retentiond::scoring::score(&t.db, end(), &day.to_string(), 200, 90.0, 90)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("winback.toml"), CAMPAIGN).unwrap();
    let set = CampaignSet::load(dir.path()).unwrap();
    let mut s = Settings::default();
    s.brand.timezone = "UTC".into();
    s.campaigns.dir = Path::new(dir.path()).to_path_buf();
    let secrets = Secrets {
        unsubscribe: Some(b"measurement-test-secret-0123".to_vec()),
        code: Some(b"measurement-test-code-0123".to_vec()),
    };
    let noon = Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).unwrap());
    retentiond::selection::run::run(&t.db, &s, &set, None, day, noon, &secrets)
        .await
        .unwrap();
    let mut tx = t.db.begin().await.unwrap();
    tx.execute(
        "UPDATE outbox SET status = 'sent', sent_at = created_at WHERE status = 'queued'",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let treated = count(&t.db, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await;
    let held = count(
        &t.db,
        "SELECT COUNT(*) FROM outbox WHERE status = 'held_out'",
    )
    .await;
    assert!(
        treated > 800 && held > 800,
        "{treated} treated, {held} held out"
    );

    let ms = MeasurementSettings::default();
    let now = Utc::now().timestamp();
    let runs = 20;
    let (mut covered, mut detected, mut false_positives) = (0, 0, 0);
    for seed in 0..runs {
        let sim = retentiond::simulate::simulate_responses(&t.db, &ms, &set, day, 0.06, seed)
            .await
            .unwrap();
        attribute(&t.db, &ms, &set).await.unwrap();
        let r = uplift(&t.db, &ms, &set, day, day, now).await.unwrap();
        let l = r.overall.return_lift;
        assert_eq!(r.overall.treated.n as i64, treated);
        assert!(r.overall.warning.is_none(), "{:?}", r.overall.warning);
        covered +=
            u32::from(l.absolute_ci.0 <= sim.true_effect && sim.true_effect <= l.absolute_ci.1);
        detected += u32::from(l.significant && l.absolute > 0.0);

        let zero =
            retentiond::simulate::simulate_responses(&t.db, &ms, &set, day, 0.0, 1000 + seed)
                .await
                .unwrap();
        assert_eq!(zero.true_effect, 0.0);
        attribute(&t.db, &ms, &set).await.unwrap();
        let r = uplift(&t.db, &ms, &set, day, day, now).await.unwrap();
        false_positives += u32::from(r.overall.return_lift.significant);
    }
    eprintln!(
        "uplift ({}): {treated} treated, {held} held out; 6-point effect covered {covered}/{runs}, detected {detected}/{runs}; zero effect significant {false_positives}/{runs}",
        t.name
    );
    // 95% coverage: 20 runs give 19 in expectation; 16 or fewer has probability < 2%.
    assert!(
        covered >= 17,
        "the interval covered the true effect only {covered}/{runs} times"
    );
    assert!(
        detected >= 17,
        "a 6-point effect on ~{treated} vs ~{held} customers is detected: {detected}/{runs}"
    );
    assert!(
        false_positives <= 3,
        "a zero effect came out significant {false_positives}/{runs} times"
    );
}
on_both_backends!(
    uplift_sqlite,
    uplift_postgres,
    uplift_recovers_a_known_effect
);
