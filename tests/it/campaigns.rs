//! Campaigns end to end on both backends: generated brand → train → score → `campaigns plan`
//! (changes nothing) → `campaigns run` (outbox, idempotent), suppressions, and the CDNOW sample
//! where there are no categories and contacts are sparse.

use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use retentiond::campaigns::CampaignSet;
use retentiond::config::{ModelSettings, Settings};
use retentiond::db::Db;
use retentiond::models::training;
use retentiond::selection::offer::{Rendered, Secrets};
use retentiond::selection::run::{PlanReport, plan, run};
use retentiond::selection::{Funnel, Step};

use crate::helpers::{TestDb, shared_data};
use crate::models::{brand, end, import};
use crate::on_both_backends;

const UNSUB: &[u8] = b"test-unsubscribe-secret-0123456789";

fn secrets() -> Secrets {
    Secrets {
        unsubscribe: Some(UNSUB.to_vec()),
        code: Some(b"test-code-secret-0123456789".to_vec()),
    }
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.brand.timezone = "Asia/Kolkata".into();
    s.campaigns.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/campaigns");
    s
}

fn shipped() -> CampaignSet {
    CampaignSet::load(&settings().campaigns.dir).unwrap()
}

/// 12:00 in Kolkata on the scoring day: inside every shipped campaign's send hours there.
fn noon(day: NaiveDate) -> DateTime<Utc> {
    chrono_tz::Asia::Kolkata
        .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

async fn count(db: &Db, sql: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.unwrap())
}

/// Every scored customer ends in exactly one funnel step.
fn check_funnel(f: &Funnel) {
    let total: u64 = f.counts.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total, f.scored,
        "funnel steps must add up to the scored customers: {f:?}"
    );
}

fn check_plan(r: &PlanReport) {
    for c in &r.campaigns {
        if c.active {
            check_funnel(&c.funnel);
        }
    }
    for p in &r.planned {
        match (&p.message, p.held_out) {
            (None, true) => assert!(p.channel.is_none()),
            (Some(m), false) => {
                assert!(!m.recipient().is_empty(), "{p:?}");
                if let Rendered::Email { email, .. } = m {
                    // The one-click unsubscribe link verifies and names this customer.
                    let token = email
                        .list_unsubscribe
                        .split("/unsubscribe/")
                        .nth(1)
                        .unwrap()
                        .split('>')
                        .next()
                        .unwrap();
                    let claims = retentiond::unsubscribe::verify(UNSUB, token).unwrap();
                    assert_eq!(claims.customer_id, p.customer_id);
                    assert_eq!(claims.channel, "email");
                    assert!(email.html.contains("/unsubscribe/"));
                    assert!(!email.html.contains('{') || !email.html.contains("{first_name}"));
                }
            }
            other => panic!("held-out rows carry no message, selected rows one: {other:?}"),
        }
    }
}

async fn plan_and_run_on_generated_data(t: TestDb) {
    import(&t.db, &brand(2000)).await;
    let m = ModelSettings {
        max_train_rows: 20_000,
        ..ModelSettings::default()
    };
    training::train(&t.db, &m, chrono_tz::UTC, end())
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    retentiond::scoring::score(&t.db, end(), &day.to_string(), 200, 90.0, 90)
        .await
        .unwrap();
    let (s, set, now) = (settings(), shipped(), noon(day));
    // Scoring counted the units sold per product that rank product picks.
    assert!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM product_sales WHERE as_of_date = '2026-11-01' AND units > 0"
        )
        .await
            > 10
    );

    // Plan: a dry run that writes nothing.
    let p = plan(&t.db, &s, &set, None, day, now, &secrets())
        .await
        .unwrap();
    check_plan(&p);
    assert_eq!(t.db.count("outbox").await.unwrap(), 0);
    assert_eq!(t.db.count("campaign_runs").await.unwrap(), 0);
    let per: Vec<(String, u64, u64)> = p
        .campaigns
        .iter()
        .map(|c| (c.campaign.clone(), c.selected, c.held_out))
        .collect();
    assert!(
        per.iter().filter(|(_, sel, _)| *sel > 0).count() >= 2,
        "at least two shipped campaigns select someone: {per:?}"
    );
    // Each campaign's offer: per-customer codes for slipping-away, the shared one for cross-sell.
    for x in p.planned.iter().filter(|x| x.campaign == "slipping-away") {
        let code = x.offer.code.as_deref().unwrap();
        assert!(code.starts_with("BACK-") && code.len() == 13, "{code}");
        assert!(x.offer.category.is_some());
    }
    for x in p.planned.iter().filter(|x| x.campaign == "cross-sell") {
        assert_eq!(x.offer.code.as_deref(), Some("DISCOVER200"));
        assert!(
            !x.score.has_bought(x.offer.category.as_deref().unwrap()),
            "cross-sell offers a category never bought"
        );
    }
    // Product picks were never bought by the customer, except in the restock reminder
    // (due-soon, `picks = "bought_before"`), whose picks are what they bought before.
    let bought = retentiond::selection::offer::bought_products(
        &t.db,
        &p.planned
            .iter()
            .map(|x| x.customer_id.as_str())
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let (mut picks, mut restock) = (0, 0);
    for x in &p.planned {
        let had = |id: &str| bought.get(&x.customer_id).is_some_and(|b| b.contains(id));
        if x.campaign == "due-soon" {
            restock += x
                .offer
                .products
                .iter()
                .filter(|prod| had(&prod.product_id))
                .count();
            continue;
        }
        for prod in &x.offer.products {
            picks += 1;
            assert!(
                !had(&prod.product_id),
                "{} already bought {}",
                x.customer_id,
                prod.product_id
            );
        }
    }
    assert!(picks > 0);
    if p.planned.iter().any(|x| x.campaign == "due-soon") {
        assert!(
            restock > 0,
            "the restock reminder recommends products bought before"
        );
    }
    // One campaign per customer per day.
    let mut ids: Vec<&str> = p.planned.iter().map(|x| x.customer_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "a customer appears in two campaigns on one day"
    );

    // A suppression added now wins over every campaign.
    let victim = p
        .planned
        .iter()
        .find(|x| !x.held_out)
        .unwrap()
        .customer_id
        .clone();
    let mut tx = t.db.begin().await.unwrap();
    tx.execute(
        "INSERT INTO suppressions (customer_id, channel, address, reason, source, created_at) VALUES ($1, NULL, NULL, 'unsubscribe', 'test', 0)",
        &[retentiond::db::Val::Text(Some(victim.clone()))],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Run: the same selection (minus the suppressed customer) in the outbox, once.
    let r = run(&t.db, &s, &set, None, day, now, &secrets())
        .await
        .unwrap();
    check_plan(&r);
    assert!(
        r.planned.iter().all(|x| x.customer_id != victim),
        "suppressed customers are never selected"
    );
    assert!(
        r.campaigns
            .iter()
            .map(|c| c.funnel.get(Step::Suppressed))
            .sum::<u64>()
            >= 1
    );
    let rows = t.db.count("outbox").await.unwrap();
    assert_eq!(rows as usize, r.planned.len());
    assert_eq!(
        r.campaigns.iter().map(|c| c.inserted.unwrap()).sum::<u64>() as i64,
        rows
    );
    let held = count(&t.db, "SELECT COUNT(*) FROM outbox WHERE status = 'held_out' AND channel IS NULL AND message IS NULL").await;
    let queued = count(&t.db, "SELECT COUNT(*) FROM outbox WHERE status = 'queued' AND channel IS NOT NULL AND recipient IS NOT NULL").await;
    assert_eq!(held + queued, rows);
    assert_eq!(
        held as u64,
        r.campaigns.iter().map(|c| c.held_out).sum::<u64>()
    );
    let active = r.campaigns.iter().filter(|c| c.active).count() as i64;
    assert_eq!(t.db.count("campaign_runs").await.unwrap(), active);

    // Re-running the day adds nothing.
    let again = run(&t.db, &s, &set, None, day, now, &secrets())
        .await
        .unwrap();
    assert_eq!(
        again
            .campaigns
            .iter()
            .map(|c| c.inserted.unwrap())
            .sum::<u64>(),
        0
    );
    assert!(again.planned.is_empty());
    assert_eq!(
        again
            .campaigns
            .iter()
            .map(|c| c.funnel.get(Step::AlreadyInOutbox))
            .sum::<u64>() as i64,
        rows
    );
    assert_eq!(t.db.count("outbox").await.unwrap(), rows);

    // Only one campaign: unknown names are a clear error.
    let err = plan(&t.db, &s, &set, Some("nope"), day, now, &secrets())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("due-soon"), "{err}");
    // Missing secrets are a clear error naming the variable.
    let err = plan(&t.db, &s, &set, None, day, now, &Secrets::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("RETENTIOND_UNSUBSCRIBE_SECRET"),
        "{err}"
    );
    // No scores for a day: a clear error.
    let err = plan(
        &t.db,
        &s,
        &set,
        None,
        day.succ_opt().unwrap(),
        now,
        &secrets(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("retentiond score --as-of 2026-11-02"),
        "{err}"
    );
}
on_both_backends!(
    campaigns_on_generated_data_sqlite,
    campaigns_on_generated_data_postgres,
    plan_and_run_on_generated_data
);

/// CDNOW has order history only: no categories (category-free copy) and, here, contacts for
/// some customers only (channels fall back, the rest are counted as unreachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdnow_plan_and_run_fall_back_to_category_free_copy() {
    let Some(src) = shared_data("cdnow") else {
        return;
    };
    let t = crate::helpers::sqlite().await;
    let out = tempfile::tempdir().unwrap();
    retentiond::datasets::convert(retentiond::datasets::Dataset::Cdnow, &src, out.path()).unwrap();
    import(&t.db, out.path()).await;
    // Contacts for some customers: email for a third, WhatsApp for another third.
    let mut tx = t.db.begin().await.unwrap();
    tx.execute("UPDATE customers SET email = customer_id || '@example.com', email_opt_in = TRUE WHERE CAST(customer_id AS INTEGER) % 3 = 0", &[]).await.unwrap();
    tx.execute("UPDATE customers SET phone = '+1202555' || customer_id, whatsapp_opt_in = TRUE WHERE CAST(customer_id AS INTEGER) % 3 = 1", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let day = NaiveDate::from_ymd_opt(1997, 10, 1).unwrap();
    let as_of = day.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
    let m = ModelSettings::default();
    training::train(&t.db, &m, chrono_tz::UTC, as_of)
        .await
        .unwrap();
    retentiond::scoring::score(&t.db, as_of, &day.to_string(), 200, 90.0, 90)
        .await
        .unwrap();

    let set = shipped();
    let mut only = set.get("slipping-away").unwrap().clone();
    // CDNOW spend is in dollars, from CDs: the shipped rupee threshold would exclude everyone.
    only.audience.min_spend = None;
    // A 90-day horizon on CDs: windows open later than for wellness products.
    only.trigger.lead_days = 45;
    let set = CampaignSet {
        dir: set.dir.clone(),
        campaigns: vec![only],
    };
    let s = settings();
    let r = run(&t.db, &s, &set, None, day, noon(day), &secrets())
        .await
        .unwrap();
    check_plan(&r);
    let c = &r.campaigns[0];
    assert!(c.selected > 20, "{c:?}");
    assert!(
        c.funnel.get(Step::NoConsent) > 0,
        "customers without contacts are counted: {c:?}"
    );
    assert!(
        c.funnel.channel_fallbacks > 0,
        "customers without WhatsApp fall back to email: {c:?}"
    );
    for p in r.planned.iter().filter(|p| !p.held_out) {
        assert_eq!(p.offer.category, None);
        assert!(p.offer.products.is_empty());
        match p.message.as_ref().unwrap() {
            Rendered::Email { email, .. } => {
                assert!(
                    email.subject.ends_with("15% off your next order"),
                    "{}",
                    email.subject
                );
                assert!(!email.html.contains("{category}") && !email.text.contains("{category}"));
            }
            Rendered::Whatsapp { whatsapp, .. } => {
                assert_eq!(whatsapp.params.len(), 4);
                assert!(
                    whatsapp.params.iter().all(|x| !x.is_empty()),
                    "{:?}",
                    whatsapp.params
                );
            }
            Rendered::Sms { .. } => panic!("slipping-away has no SMS channel"),
        }
    }
    assert_eq!(
        t.db.count("outbox").await.unwrap() as usize,
        r.planned.len()
    );
}
