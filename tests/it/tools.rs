//! The everyday CRM tools on both backends: the suppression list (`suppressions list | add |
//! remove | import | export`, and that an imported suppression stops selection and dispatch),
//! `campaigns preview` (a test send through the configured provider that nothing counts, and
//! the HTML for a browser), and product links (`url`, `image_url`) in the offer email.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use retentiond::campaigns::{CampaignSet, Channel};
use retentiond::config::{ModelSettings, Settings};
use retentiond::db::{Db, Val};
use retentiond::delivery::dispatcher::Dispatcher;
use retentiond::delivery::providers::file::FileSink;
use retentiond::delivery::providers::{Limits, Providers};
use retentiond::delivery::retry::DispatchSettings;
use retentiond::selection::offer::{Rendered, Secrets};
use retentiond::selection::run::{plan, run};
use retentiond::suppressions::{self, Reason, SuppressionError};

use crate::helpers::{TestDb, write_dir};
use crate::models::{brand, end, import};
use crate::on_both_backends;

async fn scalar(db: &Db, sql: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.unwrap())
}

async fn exec(db: &Db, sql: &str, vals: &[Val]) {
    let mut tx = db.begin().await.unwrap();
    tx.execute(sql, vals).await.unwrap();
    tx.commit().await.unwrap();
}

async fn contact(db: &Db, customer_id: &str) -> (Option<String>, Option<String>) {
    retentiond::with_pool!(db, p => sqlx::query_as::<_, (Option<String>, Option<String>)>("SELECT email, phone FROM customers WHERE customer_id = $1").bind(customer_id).fetch_one(p).await.unwrap())
}

fn secrets() -> Secrets {
    Secrets {
        unsubscribe: Some(b"test-unsubscribe-secret-0123456789".to_vec()),
        code: Some(b"test-code-secret-0123456789".to_vec()),
    }
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.brand.timezone = "Asia/Kolkata".into();
    s.campaigns.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/campaigns");
    s
}

// ---------------------------------------------------------------------------------------------
// Suppressions

async fn imported_suppressions_stop_selection_and_dispatch(t: TestDb) {
    import(&t.db, &brand(2000)).await;
    let m = ModelSettings {
        max_train_rows: 20_000,
        ..ModelSettings::default()
    };
    retentiond::models::training::train(&t.db, &m, chrono_tz::UTC, end())
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    retentiond::scoring::score(&t.db, end(), &day.to_string(), 200, 90.0, 90)
        .await
        .unwrap();
    let (s, set) = (
        settings(),
        CampaignSet::load(&settings().campaigns.dir).unwrap(),
    );
    let now = chrono_tz::Asia::Kolkata
        .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);

    let before = plan(&t.db, &s, &set, None, day, now, &secrets())
        .await
        .unwrap();
    let selected: Vec<_> = before.planned.iter().filter(|p| !p.held_out).collect();
    let by_email = selected
        .iter()
        .find(|p| p.channel.as_deref() == Some("email"))
        .expect("someone selected on email");
    let by_phone = selected
        .iter()
        .find(|p| matches!(p.channel.as_deref(), Some("sms" | "whatsapp")))
        .expect("someone selected on a phone channel");
    let email = contact(&t.db, &by_email.customer_id).await.0.unwrap();
    let phone = contact(&t.db, &by_phone.customer_id).await.1.unwrap();
    // Their phone, as another tool writes it: spaces after the country code.
    let spaced = format!("{} {}", &phone[..3], &phone[3..]);

    // Another tool's export: odd header names, CRLF line ends, its own reason words, one bad
    // address, a row without any, and a repeat.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old-tool-unsubscribes.csv");
    let csv = format!(
        "\u{feff}Email Address,Mobile,Type\r\n{},,Unsubscribed\r\n,{spaced},bounce\r\nnot-an-email,,unsubscribed\r\n,,complaint\r\n{email},,unsubscribed\r\n",
        email.to_uppercase()
    );
    std::fs::write(&file, csv).unwrap();
    let r = suppressions::import(&t.db, &file, Reason::Unsubscribe, None, 1)
        .await
        .unwrap();
    assert_eq!((r.added, r.already_present), (2, 1), "{r:?}");
    let rejected: Vec<(u64, &str)> = r
        .rejected
        .iter()
        .map(|x| (x.line, x.column.as_str()))
        .collect();
    assert_eq!(
        rejected,
        [(4, "email_address"), (5, "email_address / mobile")],
        "{r:?}"
    );
    assert_eq!(r.rejected[0].value, "not-an-email");
    assert!(r.rejected[0].why.contains("not an email address"), "{r:?}");
    // Stored normalized, with the reasons mapped; the phone on both of its channels.
    assert_eq!(scalar(&t.db, &format!("SELECT COUNT(*) FROM suppressions WHERE customer_id = '' AND address = '{email}' AND channel = 'email' AND reason = 'unsubscribe'")).await, 1);
    assert_eq!(scalar(&t.db, &format!("SELECT COUNT(*) FROM suppressions WHERE customer_id = '' AND address = '{phone}' AND reason = 'hard_bounce'")).await, 2);

    // Idempotent: the same file again adds nothing.
    let again = suppressions::import(&t.db, &file, Reason::Unsubscribe, None, 2)
        .await
        .unwrap();
    assert_eq!((again.added, again.already_present), (0, 3), "{again:?}");

    // Selection no longer picks either customer on those channels.
    let after = plan(&t.db, &s, &set, None, day, now, &secrets())
        .await
        .unwrap();
    for victim in [by_email, by_phone] {
        assert!(
            !after
                .planned
                .iter()
                .any(|p| p.customer_id == victim.customer_id && p.channel == victim.channel),
            "{} still selected on {:?}",
            victim.customer_id,
            victim.channel
        );
    }

    // Dispatch: queue the day, then suppress two queued customers' addresses. `add` marks the
    // first one's queued message at once; the second arrives as a bare address row (as an
    // import racing the dispatcher would leave it), which the dispatcher's re-check catches.
    run(&t.db, &s, &set, None, day, now, &secrets())
        .await
        .unwrap();
    let queued: Vec<(String, String)> = retentiond::with_pool!(&t.db, p => sqlx::query_as::<_, (String, String)>(
        "SELECT customer_id, recipient FROM outbox WHERE status = 'queued' AND channel = 'email' ORDER BY customer_id LIMIT 2").fetch_all(p).await.unwrap());
    assert_eq!(queued.len(), 2);
    let (added_address, added) =
        suppressions::add(&t.db, &queued[0].1.to_uppercase(), None, Reason::Manual, 3)
            .await
            .unwrap();
    assert!(added);
    assert_eq!(added_address.as_str(), queued[0].1);
    exec(&t.db, "INSERT INTO suppressions (customer_id, channel, address, reason, source, created_at) VALUES ('', 'email', $1, 'manual', 'test', 4)", &[Val::Text(Some(queued[1].1.clone()))]).await;
    let status_of = |c: String| {
        format!(
            "SELECT COUNT(*) FROM outbox WHERE customer_id = '{c}' AND channel = 'email' AND status = 'suppressed'"
        )
    };
    assert_eq!(
        scalar(&t.db, &status_of(queued[0].0.clone())).await,
        1,
        "add marks the queued message"
    );
    assert_eq!(scalar(&t.db, &status_of(queued[1].0.clone())).await, 0);
    // Everything due now, through the file sink.
    exec(
        &t.db,
        "UPDATE outbox SET not_before = 0, expires_at = 9999999999 WHERE status = 'queued'",
        &[],
    )
    .await;
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(FileSink::new(
        &retentiond::delivery::providers::config::FileSettings {
            dir: sink_dir.path().to_path_buf(),
            ..Default::default()
        },
    ));
    let limits = Limits {
        rate_per_second: 0,
        concurrency: 8,
        timeout: std::time::Duration::from_secs(5),
    };
    let mut providers = Providers::default();
    for ch in [Channel::Email, Channel::Sms, Channel::Whatsapp] {
        providers = providers.with_channel(ch, sink.clone(), limits);
    }
    let d = Dispatcher::new(
        t.db.clone(),
        Arc::new(providers),
        DispatchSettings::default(),
        None,
    );
    let stats = d.drain().await.unwrap();
    assert!(stats.suppressed >= 1 && stats.sent > 0, "{stats:?}");
    assert_eq!(
        scalar(&t.db, &status_of(queued[1].0.clone())).await,
        1,
        "the dispatcher's re-check matches the address"
    );
    let sent_to: HashSet<String> = std::fs::read_dir(sink_dir.path())
        .unwrap()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(
                &std::fs::read_to_string(e.unwrap().path()).unwrap(),
            )
            .unwrap()["to"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for (_, to) in &queued {
        assert!(!sent_to.contains(to), "{to} was sent to");
    }
    assert!(!sent_to.contains(&email) && !sent_to.contains(&phone));
}
on_both_backends!(
    imported_suppressions_stop_selection_and_dispatch_sqlite,
    imported_suppressions_stop_selection_and_dispatch_postgres,
    imported_suppressions_stop_selection_and_dispatch
);

async fn suppression_list_add_remove_export_round_trip(t: TestDb) {
    exec(&t.db, "INSERT INTO customers (customer_id, email, phone, email_opt_in, sms_opt_in, whatsapp_opt_in) VALUES ('c1', 'asha@example.com', '+919800000001', TRUE, TRUE, TRUE)", &[]).await;
    // A one-click unsubscribe recorded for the customer (no address on the row).
    exec(&t.db, "INSERT INTO suppressions (customer_id, channel, address, reason, source, created_at) VALUES ('c1', 'email', NULL, 'unsubscribe', 'link', 10)", &[]).await;

    let (a, added) = suppressions::add(&t.db, " Ravi@Example.COM ", None, Reason::Manual, 20)
        .await
        .unwrap();
    assert_eq!((a.as_str(), added), ("ravi@example.com", true));
    assert!(
        !suppressions::add(&t.db, "ravi@example.com", None, Reason::Complaint, 21)
            .await
            .unwrap()
            .1,
        "already present"
    );
    let (p, added) = suppressions::add(&t.db, "+91 98000-00002", None, Reason::Stop, 22)
        .await
        .unwrap();
    assert_eq!((p.as_str(), added), ("+919800000002", true));
    let (_, added) = suppressions::add(
        &t.db,
        "+919800000003",
        Some(Channel::Whatsapp),
        Reason::Stop,
        23,
    )
    .await
    .unwrap();
    assert!(added);
    // Bad input is a usage error that names the value.
    let e = suppressions::add(&t.db, "ravi@", None, Reason::Manual, 24)
        .await
        .unwrap_err();
    assert!(e.is_usage() && e.to_string().contains("\"ravi@\""), "{e}");
    let e = suppressions::add(
        &t.db,
        "ravi@example.com",
        Some(Channel::Sms),
        Reason::Manual,
        24,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, SuppressionError::BadChannel(_)), "{e}");

    let list = suppressions::list(&t.db).await.unwrap();
    let rows: Vec<(Option<&str>, Option<&str>, &str, Option<&str>)> = list
        .iter()
        .map(|e| {
            (
                e.address.as_deref(),
                e.channel.as_deref(),
                e.reason.as_str(),
                e.customer_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                Some("asha@example.com"),
                Some("email"),
                "unsubscribe",
                Some("c1")
            ),
            (Some("ravi@example.com"), Some("email"), "manual", None),
            (Some("+919800000002"), Some("sms"), "stop", None),
            (Some("+919800000002"), Some("whatsapp"), "stop", None),
            (Some("+919800000003"), Some("whatsapp"), "stop", None),
        ]
    );

    // Export: spreadsheet-safe cells (a phone number gets its `'`); import reads it back.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("suppressions.csv");
    assert_eq!(suppressions::export(&t.db, &out).await.unwrap(), 5);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "address,channel,reason,source,customer_id,created_at"
    );
    assert_eq!(
        lines[1],
        "asha@example.com,email,unsubscribe,link,c1,1970-01-01T00:00:10Z"
    );
    assert_eq!(
        lines[3],
        "'+919800000002,sms,stop,cli,,1970-01-01T00:00:22Z"
    );
    let back = suppressions::import(&t.db, &out, Reason::Unsubscribe, None, 30)
        .await
        .unwrap();
    assert!(back.rejected.is_empty(), "{back:?}");
    // asha's customer-level row becomes an address row too; the rest were there already.
    assert_eq!((back.added, back.already_present), (1, 4), "{back:?}");

    // A file without an address column is refused, naming the headers it has.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "name,when\nAsha,2024-01-01\n").unwrap();
    let e = suppressions::import(&t.db, &bad, Reason::Unsubscribe, None, 31)
        .await
        .unwrap_err();
    assert!(
        e.is_usage()
            && e.to_string().contains("no email or phone column")
            && e.to_string().contains("`name`, `when`"),
        "{e}"
    );

    // Remove lifts the address everywhere: its own rows and the customer's link unsubscribe.
    let (_, n) = suppressions::remove(&t.db, "ASHA@example.com", None)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let (_, n) = suppressions::remove(&t.db, "+919800000002", Some(Channel::Sms))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let left: Vec<(Option<String>, Option<String>)> = suppressions::list(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.address, e.channel))
        .collect();
    assert_eq!(
        left,
        [
            (Some("ravi@example.com".into()), Some("email".into())),
            (Some("+919800000002".into()), Some("whatsapp".into())),
            (Some("+919800000003".into()), Some("whatsapp".into())),
        ]
    );
}
on_both_backends!(
    suppression_round_trip_sqlite,
    suppression_round_trip_postgres,
    suppression_list_add_remove_export_round_trip
);

// ---------------------------------------------------------------------------------------------
// The binary: `suppressions`, `campaigns preview`, check-config warnings.

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RETENTIOND_DATABASE_URL")
        .env_remove("RETENTIOND_UNSUBSCRIBE_SECRET")
        .env_remove("RETENTIOND_CODE_SECRET")
        .env("RUST_LOG", "warn");
    c
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_bin(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = bin();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// A config with the brand, the shipped campaigns, and `delivery` as given.
fn config(dir: &Path, delivery: &str) -> PathBuf {
    let path = dir.join("r.toml");
    let campaigns = concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns");
    std::fs::write(&path, format!("[brand]\nname = \"Veda Roots\"\ncurrency = \"INR\"\ntimezone = \"Asia/Kolkata\"\n[campaigns]\ndir = {campaigns:?}\n{delivery}")).unwrap();
    path
}

/// A small brand whose products carry links: c1 bought p1 (hair care).
fn linked_brand() -> tempfile::TempDir {
    write_dir(&[
        (
            "products.csv",
            "product_id,category,name,price,in_stock,url,image_url\n\
             p1,hair care,Bhringraj Oil,450,true,https://shop.example/p/bhringraj-oil,https://cdn.example/p1.jpg\n\
             p2,hair care,Amla Shampoo,1399,true,https://shop.example/p/amla-shampoo,https://cdn.example/p2.jpg\n\
             p3,hair care,Neem Comb,199,true,,\n",
        ),
        (
            "customers.csv",
            "customer_id,email,phone,first_name,email_opt_in,sms_opt_in\nc1,asha@example.com,+919800000001,Asha,true,true\n",
        ),
        (
            "orders.csv",
            "order_id,customer_id,ordered_at,total_amount\no1,c1,2026-01-05,450\n",
        ),
        (
            "order_items.csv",
            "order_id,product_id,quantity,unit_price\no1,p1,1,450\n",
        ),
    ])
}

async fn product_links_and_preview(t: TestDb) {
    // A bad link is an invalid optional value: dropped from its row with file, line, column,
    // value and why; the product itself is imported.
    let bad = write_dir(&[
        (
            "products.csv",
            "product_id,category,url\np1,hair care,https://shop.example/p/1\np2,hair care,shop.example/p/2\n",
        ),
        (
            "orders.csv",
            "order_id,customer_id,ordered_at\no1,c1,2026-01-05\n",
        ),
    ]);
    let reports = tempfile::tempdir().unwrap();
    match retentiond::ingest::import_dir(&t.db, &crate::import::options(bad.path(), reports.path()))
        .await
    {
        Ok(r) => {
            let e = &r.dropped[0];
            assert_eq!(
                (e.file.as_str(), e.line, e.column.as_str(), e.value.as_str()),
                ("products.csv", 3, "url", "shop.example/p/2"),
                "{r:?}"
            );
            assert!(e.reason.contains("absolute http(s) URL"), "{e:?}");
        }
        other => panic!("a relative product URL is dropped, the product kept: {other:?}"),
    }
    assert_eq!(
        scalar(
            &t.db,
            "SELECT COUNT(*) FROM products WHERE product_id = 'p2' AND url IS NULL"
        )
        .await,
        1
    );

    let brand = linked_brand();
    import(&t.db, brand.path()).await;
    assert_eq!(scalar(&t.db, "SELECT COUNT(*) FROM products WHERE url LIKE 'https://shop.example/p/%' AND image_url LIKE 'https://cdn.example/%'").await, 2);

    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink");
    let cfg = config(
        dir.path(),
        &format!("[delivery.file]\ndir = {:?}\n", sink.display().to_string()),
    );
    let cfg = cfg.to_str().unwrap();
    let db = t.url.as_str();

    // The HTML for a browser, for customer c1: the product cards carry the image and the
    // product's own page (the landing page when it has none); prices are grouped; the
    // per-customer code in the landing URL keeps its dash.
    let html = dir.path().join("out/preview.html");
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "campaigns",
            "preview",
            "--campaign",
            "slipping-away",
            "--customer",
            "c1",
            "--html",
            html.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains(r#"<img src="https://cdn.example/p2.jpg""#),
        "{page}"
    );
    assert!(
        page.contains(r#"href="https://shop.example/p/amla-shampoo""#),
        "{page}"
    );
    assert!(page.contains("₹1,399"), "{page}");
    assert!(
        !page.contains("Bhringraj"),
        "slipping-away picks what c1 has not bought: {page}"
    );
    assert!(
        page.contains("discount=BACK-") && !page.contains("%2D"),
        "{page}"
    );
    assert_eq!(
        page.matches("Amla Shampoo").count(),
        1,
        "the picks are listed once: {page}"
    );
    // The restock reminder recommends what c1 bought.
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "campaigns",
            "preview",
            "--campaign",
            "due-soon",
            "--customer",
            "c1",
            "--html",
            html.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Bhringraj Oil")
            && page.contains(r#"href="https://shop.example/p/bhringraj-oil""#),
        "{page}"
    );
    assert!(!page.contains("Amla Shampoo"), "{page}");

    // A test send to a seed address through the configured provider (the file sink here).
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "campaigns",
            "preview",
            "--campaign",
            "due-soon",
            "--to",
            "QA@Brand.example",
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("not recorded in the outbox"),
        "{}",
        o.stdout
    );
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "campaigns",
            "preview",
            "--campaign",
            "slipping-away",
            "--to",
            "+91 98000 00009",
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let files: Vec<serde_json::Value> = std::fs::read_dir(&sink)
        .unwrap()
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(files.len(), 2);
    let email = files.iter().find(|f| f["channel"] == "email").unwrap();
    assert_eq!(
        (email["to"].as_str(), email["test"].as_bool()),
        (Some("qa@brand.example"), Some(true))
    );
    assert!(
        email["content"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("[TEST] "),
        "{email}"
    );
    let sms = files.iter().find(|f| f["channel"] == "sms").unwrap();
    assert_eq!(sms["to"], "+919800000009");
    assert!(
        sms["content"]["text"]
            .as_str()
            .unwrap()
            .starts_with("[TEST] Veda Roots: "),
        "{sms}"
    );
    // Nothing counted: no outbox row, no attempt, no suppression, no campaign run.
    for table in [
        "outbox",
        "delivery_attempts",
        "campaign_runs",
        "suppressions",
    ] {
        assert_eq!(t.db.count(table).await.unwrap(), 0, "{table}");
    }

    // Usage errors exit 2 with a clear message.
    for (args, needle) in [
        (
            vec!["--campaign", "nope", "--html", "x.html"],
            "no campaign named \"nope\"",
        ),
        (
            vec!["--campaign", "due-soon", "--to", "nobody"],
            "--to \"nobody\" is not an email address or phone number",
        ),
        (vec!["--campaign", "due-soon"], "--to ADDRESS|PHONE"),
        (
            vec![
                "--campaign",
                "due-soon",
                "--customer",
                "c404",
                "--html",
                "x.html",
            ],
            "no customer \"c404\"",
        ),
    ] {
        let mut full = vec!["--config", cfg, "--database", db, "campaigns", "preview"];
        full.extend(args);
        let o = run_bin(&full, &[]);
        assert_eq!(o.code, Some(2), "{full:?}: {}", o.stderr);
        assert!(o.stderr.contains(needle), "{full:?}: {}", o.stderr);
    }

    // The suppressions commands end to end.
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "suppressions",
            "add",
            "Asha@Example.com",
            "--reason",
            "hard_bounce",
        ],
        &[],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("asha@example.com suppressed on email"),
        "{}",
        o.stdout
    );
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "suppressions",
            "list",
            "--json",
        ],
        &[],
    );
    let list: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(list[0]["reason"], "hard_bounce");
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "suppressions",
            "add",
            "asha@",
        ],
        &[],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    let o = run_bin(
        &[
            "--config",
            cfg,
            "--database",
            db,
            "suppressions",
            "remove",
            "asha@example.com",
        ],
        &[],
    );
    assert!(
        o.stdout.contains("1 suppression(s) removed"),
        "{}",
        o.stdout
    );
}
on_both_backends!(
    product_links_and_preview_sqlite,
    product_links_and_preview_postgres,
    product_links_and_preview
);

/// Through a real HTTP provider (SendGrid against a local server): the test is tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_send_through_sendgrid_is_tagged_as_a_test() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-1"))
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[delivery]\nemail = \"sendgrid\"\n[delivery.sendgrid]\nbase_url = {:?}\napi_key_env = \"TOOLS_TEST_SENDGRID_KEY\"\nfrom_email = \"crm@example.com\"\n",
            server.uri()
        ),
    );
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let args: Vec<String> = [
        "--config",
        cfg.to_str().unwrap(),
        "--database",
        &db,
        "campaigns",
        "preview",
        "--campaign",
        "slipping-away",
        "--to",
        "qa@brand.example",
    ]
    .map(String::from)
    .into();
    let o = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bin(
            &args,
            &[("TOOLS_TEST_SENDGRID_KEY", "SG.tools-test-key-0123456789")],
        )
    })
    .await
    .unwrap();
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("through sendgrid (id sg-1)"),
        "{}",
        o.stdout
    );
    let req = &server.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        body["personalizations"][0]["to"][0]["email"],
        "qa@brand.example"
    );
    assert_eq!(body["custom_args"]["test"], "true");
    assert_eq!(body["categories"], serde_json::json!(["test"]));
    assert!(
        body["subject"].as_str().unwrap().starts_with("[TEST] "),
        "{body}"
    );
}

#[test]
fn check_config_warns_about_copy_that_repeats_itself() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = dir.path().join("campaigns");
    std::fs::create_dir(&campaigns).unwrap();
    let due = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/campaigns/due-soon.toml"
    ))
    .unwrap();
    let due = due
        .replace(
            "sms = \"Hi {first_name},",
            "sms = \"{brand}: Hi {first_name},",
        )
        .replace(
            "one tap from your basket.",
            "one tap from your basket: {products}.",
        );
    std::fs::write(campaigns.join("due-soon.toml"), due).unwrap();
    let cfg = dir.path().join("r.toml");
    std::fs::write(
        &cfg,
        format!(
            "[brand]\nname = \"Veda Roots\"\n[campaigns]\ndir = {:?}\n",
            campaigns.display().to_string()
        ),
    )
    .unwrap();
    let o = run_bin(
        &["--config", cfg.to_str().unwrap(), "check-config"],
        &[
            (
                "RETENTIOND_UNSUBSCRIBE_SECRET",
                "tools-test-secret-0123456789",
            ),
            ("RETENTIOND_CODE_SECRET", "tools-test-secret-9876543210"),
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("due-soon.toml: copy.sms starts with the brand, but every SMS already begins with \"Veda Roots: \""), "{}", o.stderr);
    assert!(o.stderr.contains("due-soon.toml: copy.body lists {products} and the offer template shows the picks as product cards too"), "{}", o.stderr);
}

/// The shipped email copy names each pick once (the cards), and shipped SMS copy never
/// doubles the brand.
#[test]
fn shipped_copy_lists_picks_once() {
    let set = CampaignSet::load(&settings().campaigns.dir).unwrap();
    let mut s = settings();
    s.brand.name = "Veda Roots".into();
    let products: Vec<retentiond::selection::offer::CatalogProduct> = (1..=3)
        .map(|i| retentiond::selection::offer::CatalogProduct {
            product_id: format!("p{i}"),
            name: format!("Pick Number {i}"),
            price: Some(1399.0),
            url: None,
            image_url: None,
        })
        .collect();
    let sec = secrets();
    let env = retentiond::selection::offer::MessageEnv {
        brand_name: "Veda Roots",
        currency: "INR",
        settings: &s.campaigns,
        secrets: &sec,
        now: 0,
    };
    let cust = retentiond::selection::Customer {
        customer_id: "c1".into(),
        email: Some("a@example.com".into()),
        phone: Some("+919800000001".into()),
        first_name: Some("Asha".into()),
        ..Default::default()
    };
    for c in set
        .campaigns
        .iter()
        .filter(|c| c.email_family == retentiond::messages::EmailFamily::Offer)
    {
        let offer = retentiond::selection::offer::Offer {
            category: Some("hair care".into()),
            discount: Some("15%".into()),
            code: Some("BACK-1".into()),
            products: products.clone(),
            landing_url: "https://shop.example/c".into(),
        };
        let Rendered::Email { email, .. } =
            retentiond::selection::offer::render(c, &cust, Channel::Email, &offer, &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            email.html.matches("Pick Number 1").count(),
            1,
            "{}: {}",
            c.name,
            email.html
        );
        assert_eq!(
            email.text.matches("Pick Number 1").count(),
            1,
            "{}: {}",
            c.name,
            email.text
        );
        if c.copy.sms.is_some() {
            let Rendered::Sms { sms, .. } =
                retentiond::selection::offer::render(c, &cust, Channel::Sms, &offer, &env).unwrap()
            else {
                panic!()
            };
            assert_eq!(
                sms.text.matches("Veda Roots").count(),
                1,
                "{}: {}",
                c.name,
                sms.text
            );
        }
    }
}
