//! `retentiond demo` through its library entry (the command calls the same function), on both
//! backends: the rehearsed outreach two weeks back is measured (uplift with an interval,
//! attributed conversions), the report labels what was simulated and raises no drift alarm for
//! the model it just trained, and messages signed with throw-away secrets are never left for
//! `retentiond run` to send. On SQLite the post-demo report is also checked in a real browser.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::Timelike;
use retentiond::campaigns::CampaignSet;
use retentiond::config::Settings;
use retentiond::db::Db;
use retentiond::demo::{CANCELLED_REASON, DemoOptions, DemoSummary};
use retentiond::selection::offer::Secrets;

use crate::helpers::TestDb;
use crate::on_both_backends;

async fn count(db: &Db, sql: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.unwrap())
}

/// A brand time zone where it is now about 2 in the morning: today's selections then wait for
/// their send hours whatever the hour the test runs at.
fn night_zone() -> String {
    let h = chrono::Utc::now().hour() as i32;
    let mut off = (2 - h).rem_euclid(24);
    if off > 14 {
        off -= 24;
    }
    // Etc/GMT zones count the other way round: Etc/GMT-5 is UTC+5.
    match off {
        0 => "Etc/GMT".into(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// The shipped configuration, on the test's database, writing into `dir`.
fn settings(url: &str, dir: &Path) -> Settings {
    let mut s = Settings::load(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/retentiond.toml"
        )),
        Some(url),
    )
    .unwrap();
    s.brand.timezone = night_zone();
    s.delivery.file.dir = dir.join("outbox");
    s.import.report_dir = dir.join("imports");
    s
}

fn options(customers: u64, dir: &Path) -> DemoOptions {
    let mut o = DemoOptions::new(customers, 42, dir.join("brand"));
    o.report = dir.join("report.html");
    o
}

async fn demo(t: &TestDb, customers: u64, dir: &Path, secrets: Secrets) -> (Settings, DemoSummary) {
    let s = settings(&t.url, dir);
    let config = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/retentiond.toml"
    ));
    let started = std::time::Instant::now();
    let summary = retentiond::demo::run(&s, &config, &options(customers, dir), secrets)
        .await
        .unwrap();
    eprintln!(
        "demo ({}, {customers} customers, brand zone {}): {:.1} s, {summary:?}",
        t.name,
        s.brand.timezone,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(summary.code, ExitCode::SUCCESS);
    (s, summary)
}

/// Without secrets in the environment (a first try of the product).
async fn demo_measures_the_simulated_outreach(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let (s, summary) = demo(&t, 6000, dir.path(), Secrets::default()).await;
    let day = summary.rehearsal_day.unwrap();
    let sim = summary.simulated.as_ref().unwrap();
    assert!(summary.simulated_sends > 0 && sim.orders > 0, "{summary:?}");
    assert!((sim.true_effect - 0.08).abs() < 0.01, "{sim:?}");

    // The measurement of the rehearsed day: both groups, an interval, attributed conversions.
    let set = CampaignSet::load(&s.campaigns.dir).unwrap();
    let m = &s.measurement;
    let u =
        retentiond::measurement::uplift(&t.db, m, &set, day, day, chrono::Utc::now().timestamp())
            .await
            .unwrap();
    let o = &u.overall;
    assert_eq!(u.still_open, 0, "every window of {day} has closed");
    assert!(
        o.treated.n > 0 && o.holdout.n > 0 && o.treated.converted > 0,
        "{o:?}"
    );
    let (lo, hi) = o.return_lift.absolute_ci;
    assert!(
        lo.is_finite()
            && hi.is_finite()
            && lo < o.return_lift.absolute
            && o.return_lift.absolute < hi,
        "{o:?}"
    );
    eprintln!(
        "measured lift {:+.1} pts (95% CI {:+.1} to {:+.1}), known effect {:+.1}",
        o.return_lift.absolute * 100.0,
        lo * 100.0,
        hi * 100.0,
        sim.true_effect * 100.0
    );
    assert!(count(&t.db, "SELECT COUNT(*) FROM conversions WHERE treated = 1").await > 0);
    assert!(count(&t.db, "SELECT COUNT(*) FROM conversions WHERE treated = 0").await > 0);

    // The page: simulation labelled, uplift measured, no drift alarm for a fresh model.
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(
        html.contains("id=\"simulation\"")
            && html.contains("sent in simulation")
            && html.contains("simulated responses"),
        "no simulation label"
    );
    assert!(
        !html.contains("too early to tell"),
        "the headline still says too early"
    );
    // The uplift plot has data (it is not marked empty).
    assert!(
        !html.contains("data-plot=\"uplift\" data-empty"),
        "the uplift plot is empty"
    );
    assert!(
        !html.contains("Feature drift:"),
        "drift banner right after the demo"
    );
    let line = summary.report_line.as_deref().unwrap();
    assert!(
        line.contains("treated") && !line.contains("measured 0 treated"),
        "{line}"
    );

    // Throw-away secrets: what still waited for its send hours is cancelled, with the reason;
    // nothing is left for `retentiond run` to send.
    assert!(
        summary.cancelled > 0,
        "at 2 in the morning messages wait for their send hours: {summary:?}"
    );
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM outbox WHERE status = 'queued'").await,
        0
    );
    let cancelled = retentiond::with_pool!(&t.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE status = 'dead' AND last_error = $1").bind(CANCELLED_REASON).fetch_one(p).await.unwrap());
    assert_eq!(cancelled as u64, summary.cancelled);

    if t.name == "sqlite" {
        if let Some(chromium) = crate::report::chromium() {
            crate::report::check_in_browser(
                &chromium,
                &dir.path().join("report.html"),
                dir.path(),
                &[],
                "post-demo",
            );
        }
    }
}
on_both_backends!(
    demo_sqlite,
    demo_postgres,
    demo_measures_the_simulated_outreach
);

/// With the configured secrets set, the messages waiting for their send hours stay queued for
/// `retentiond run`, signed with those secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_configured_secrets_leaves_sendable_messages() {
    let t = crate::helpers::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let unsubscribe = b"demo-test-unsubscribe-secret-0123456789".to_vec();
    let secrets = Secrets {
        unsubscribe: Some(unsubscribe.clone()),
        code: Some(b"demo-test-code-secret-0123456789".to_vec()),
    };
    let (_, summary) = demo(&t, 1500, dir.path(), secrets).await;
    assert_eq!(summary.cancelled, 0);
    let messages: Vec<String> = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT message FROM outbox WHERE status = 'queued'").fetch_all(p).await.unwrap());
    assert!(
        !messages.is_empty(),
        "at 2 in the morning messages wait for their send hours"
    );
    // Email and SMS carry an unsubscribe link (a WhatsApp template has none of its own).
    let mut verified = 0;
    for m in &messages {
        let Some(at) = m.find("/unsubscribe/") else {
            continue;
        };
        let start = at + "/unsubscribe/".len();
        let token: String = m[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        retentiond::unsubscribe::verify(&unsubscribe, &token)
            .unwrap_or_else(|e| panic!("{e}: {token}"));
        verified += 1;
    }
    assert!(
        verified > 0,
        "none of the {} queued messages has an unsubscribe link",
        messages.len()
    );
}
