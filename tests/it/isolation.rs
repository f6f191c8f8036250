//! One bad campaign does not stop the others (issue 19): a campaign that fails at run time is
//! skipped and recorded (job stats, `campaign_runs`, `status`, `/metrics`, the report) while
//! the rest run; `check-config` checks campaign files against the imported data; config type
//! errors say in words what is expected.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use http_body_util::BodyExt as _;
use retentiond::campaigns::{
    Campaign, CampaignSet, Channel, OfferCategory, SharedCampaigns, parse_campaign,
};
use retentiond::config::{ModelSettings, Settings};
use retentiond::models::training;
use retentiond::scheduler::jobs::{self, Done, JobContext};
use retentiond::scheduler::{JobKind, Trigger};
use retentiond::selection::offer::Secrets;
use retentiond::selection::run::{PlanReport, plan};
use tower::ServiceExt as _;

use crate::helpers::TestDb;
use crate::models::{brand, end, import};
use crate::on_both_backends;

const UNSUB: &str = "isolation-unsubscribe-secret-0123456789";
const CODE: &str = "isolation-code-secret-0123456789";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RETENTIOND_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("RETENTIOND_UNSUBSCRIBE_SECRET", UNSUB)
        .env("RETENTIOND_CODE_SECRET", CODE);
    c
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_bin(args: &[&str]) -> Out {
    let o = bin().args(args).output().unwrap();
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn secrets() -> Secrets {
    Secrets {
        unsubscribe: Some(UNSUB.as_bytes().to_vec()),
        code: Some(CODE.as_bytes().to_vec()),
    }
}

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/campaigns")
}

fn settings(dir: &Path) -> Settings {
    let mut s = Settings::default();
    s.brand.timezone = "Asia/Kolkata".into();
    s.campaigns.dir = dir.to_path_buf();
    s
}

fn noon(day: NaiveDate) -> DateTime<Utc> {
    chrono_tz::Asia::Kolkata
        .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn shipped_file(name: &str) -> String {
    std::fs::read_to_string(shipped_dir().join(name)).unwrap()
}

/// The shipped campaign files plus the given extra files, in a fresh folder.
fn campaign_dir(extra: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["due-soon.toml", "slipping-away.toml", "cross-sell.toml"] {
        std::fs::write(dir.path().join(f), shipped_file(f)).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// `due-soon` renamed, at the highest priority, with `from` replaced by `to`.
fn variant(name: &str, from: &str, to: &str) -> String {
    let text = shipped_file("due-soon.toml");
    assert!(text.contains(from), "{from:?} not in due-soon.toml");
    text.replace("name = \"due-soon\"", &format!("name = \"{name}\""))
        .replace("priority = 30", "priority = 100")
        .replace(from, to)
}

/// A category typo (`hair-care` for `hair care`): the campaign can only fail at run time.
fn typo_campaign() -> String {
    variant(
        "hair-sale",
        "category = \"recommended\"",
        "category = \"hair-care\"",
    )
}

fn picks(p: &PlanReport) -> Vec<(String, String, bool)> {
    let mut v: Vec<(String, String, bool)> = p
        .planned
        .iter()
        .map(|x| (x.campaign.clone(), x.customer_id.clone(), x.held_out))
        .collect();
    v.sort();
    v
}

async fn body(app: &axum::Router, uri: &str) -> String {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned()
}

/// A campaign with a category the products table lacks, and one whose messages fail to render
/// (a landing URL with a space, which loading would refuse: the campaign is built in memory, as
/// a file changed under a running daemon could be), both at the highest priority: `plan`
/// skips both with their reasons and selects exactly what it selects without them (the
/// customers they would have taken go to the others); `campaigns plan`/`run` exit 1 naming
/// them, `run` writes the others' rows and records the failures; `status` (text and JSON),
/// `/metrics`, the report and the daemon's campaigns job show them.
async fn a_failing_campaign_is_skipped_and_recorded(t: TestDb) {
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
    let now = noon(day);

    // In process: plan with the shipped set, then with the two broken campaigns added.
    let shipped_only = CampaignSet::load(&shipped_dir()).unwrap();
    let s = settings(&shipped_dir());
    let baseline = plan(&t.db, &s, &shipped_only, None, day, now, &secrets())
        .await
        .unwrap();
    assert!(baseline.failed.is_empty());
    // The broken copies are made of the campaign that selects most, so they take its customers.
    let top = baseline
        .campaigns
        .iter()
        .max_by_key(|c| c.selected)
        .unwrap();
    assert!(top.selected > 0, "{:?}", baseline.campaigns);
    let top = top.campaign.clone();
    let mut broken_set = shipped_only.clone();
    let mut typo: Campaign = shipped_only.get(&top).unwrap().clone();
    typo.name = "hair-sale".into();
    typo.file = PathBuf::from("hair-sale.toml");
    typo.priority = 100;
    typo.offer.category = OfferCategory::Fixed("hair-care".into());
    let mut broken_link = shipped_only.get(&top).unwrap().clone();
    broken_link.name = "broken-link".into();
    broken_link.file = PathBuf::from("broken-link.toml");
    broken_link.priority = 90;
    broken_link.offer.landing_url = "https://shop.example/c/{category} sale".into();
    // Email carries the landing URL (a WhatsApp template may not).
    broken_link.channels = vec![Channel::Email];
    broken_set.campaigns.insert(0, broken_link);
    broken_set.campaigns.insert(0, typo);
    let p = plan(&t.db, &s, &broken_set, None, day, now, &secrets())
        .await
        .unwrap();
    let failed: Vec<&str> = p.failed.iter().map(|f| f.campaign.as_str()).collect();
    assert_eq!(failed, ["hair-sale", "broken-link"], "{:?}", p.failed);
    let typo_reason = &p.failed[0].reason;
    assert!(typo_reason.starts_with("hair-sale.toml: `offer.category`: \"hair-care\" is not a product category in the database"), "{typo_reason}");
    assert!(
        typo_reason.contains("did you mean \"hair care\"?"),
        "{typo_reason}"
    );
    assert!(
        p.failed[1].reason.contains("broken-link.toml")
            && p.failed[1].reason.contains("not a usable URL"),
        "{}",
        p.failed[1].reason
    );
    assert_eq!(
        picks(&p),
        picks(&baseline),
        "the other campaigns select exactly what they select without the failed ones"
    );
    let reported: Vec<(&str, bool)> = p
        .campaigns
        .iter()
        .map(|c| (c.campaign.as_str(), c.failure.is_some()))
        .collect();
    assert_eq!(
        reported,
        [
            ("hair-sale", true),
            ("broken-link", true),
            ("slipping-away", false),
            ("due-soon", false),
            ("cross-sell", false)
        ]
    );
    assert!(
        p.table(3, chrono_tz::UTC)
            .contains("== hair-sale (FAILED, skipped"),
        "{}",
        p.table(3, chrono_tz::UTC)
    );

    // The binary, with the typo in a campaign file.
    let dir = campaign_dir(&[("hair-sale.toml", typo_campaign())]);
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = cfg_dir.path().join("r.toml");
    std::fs::write(
        &config,
        format!(
            "[brand]\ntimezone = \"Asia/Kolkata\"\n[campaigns]\ndir = {:?}\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let (cfg, url) = (config.to_str().unwrap(), t.url.as_str());
    let at = now.to_rfc3339();
    let sel = ["--as-of", "2026-11-01", "--at", at.as_str()];
    let base = ["--config", cfg, "--database", url];
    let out = run_bin(&[&base[..], &["campaigns", "plan"][..], &sel[..]].concat());
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("== hair-sale (FAILED, skipped")
            && out.stdout.contains("is not a product category"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("== due-soon\n") && out.stdout.contains("dry run: nothing was written"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("error: campaign hair-sale failed and was skipped:")
            && out.stderr.contains("did you mean \"hair care\"?"),
        "{}",
        out.stderr
    );
    assert_eq!(
        t.db.count("campaign_runs").await.unwrap(),
        0,
        "plan records nothing"
    );

    let out = run_bin(&[&base[..], &["campaigns", "run"][..], &sel[..]].concat());
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("error: campaign hair-sale failed and was skipped:"),
        "{}",
        out.stderr
    );
    assert_eq!(
        t.db.count("outbox").await.unwrap() as usize,
        baseline.planned.len(),
        "the other campaigns' rows are written"
    );
    let recorded: Vec<(String, Option<String>)> = retentiond::with_pool!(&t.db, p => {
        sqlx::query_as("SELECT campaign, error FROM campaign_runs ORDER BY campaign").fetch_all(p).await.unwrap()
    });
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    for (c, e) in &recorded {
        assert_eq!(e.is_some(), c == "hair-sale", "{c}: {e:?}");
    }

    // status, text and JSON.
    let out = run_bin(&["--config", cfg, "--database", url, "status"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("campaigns that failed on 2026-11-01 (skipped; the others ran):"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("hair-sale")
                && l.contains("is not a product category")),
        "{}",
        out.stdout
    );
    let out = run_bin(&["--config", cfg, "--database", url, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let f = v["campaign_failures"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{v}");
    assert_eq!(
        (f[0]["campaign"].as_str(), f[0]["day"].as_str()),
        (Some("hair-sale"), Some("2026-11-01"))
    );
    assert!(f[0]["reason"].as_str().unwrap().contains("\"hair-care\""));

    // The daemon's campaigns job: the others ran (ok), the failure is in its stats and recorded.
    let set = retentiond::selection::preflight::load(&settings(dir.path()), "r.toml").unwrap();
    let ctx = JobContext {
        db: t.db.clone(),
        settings: settings(dir.path()),
        campaigns: SharedCampaigns::new(set.clone()),
        secrets: secrets(),
    };
    let Done::Ok(stats) = jobs::run(&ctx, JobKind::Campaigns, Trigger::Once, now)
        .await
        .unwrap()
    else {
        panic!("the campaigns job ran")
    };
    assert_eq!(stats["failed"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["failed"][0]["campaign"], "hair-sale");
    let per = stats["campaigns"].as_array().unwrap();
    assert!(
        per.iter().any(|c| c["campaign"] == "hair-sale"
            && c["error"].as_str().is_some_and(|e| e.contains("hair-care"))),
        "{stats}"
    );
    assert!(
        per.iter()
            .any(|c| c["campaign"] == "due-soon" && c["error"].is_null()),
        "{stats}"
    );

    // /metrics: failed runs in all (CLI run + job) and the latest run's state, per campaign.
    let app = retentiond::http::router(retentiond::http::AppState {
        db: t.db.clone(),
        unsubscribe_secret: UNSUB.as_bytes().to_vec(),
        webhooks: Default::default(),
        public_base_url: "http://127.0.0.1:8080".into(),
        metrics: retentiond::http::install_metrics_recorder(),
        brand_name: "Veda Roots".into(),
        report: None,
        auth_token: None,
    });
    let metrics = body(&app, "/metrics").await;
    for line in [
        "# TYPE retentiond_campaign_failures_total counter",
        "retentiond_campaign_failures_total{campaign=\"hair-sale\"} 2",
        "retentiond_campaign_last_run_failed{campaign=\"hair-sale\"} 1",
        "retentiond_campaign_last_run_failed{campaign=\"due-soon\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    // Campaigns that ran count 0 (a counter starts at zero, so a first failure is an increase).
    assert!(
        metrics
            .lines()
            .any(|l| l == "retentiond_campaign_failures_total{campaign=\"due-soon\"} 0"),
        "{metrics}"
    );

    // The report: a warning and the skipped campaigns table.
    let input = retentiond::report::gather(&t.db, &ctx.settings, &set, day, day, false)
        .await
        .unwrap();
    assert_eq!(input.campaign_failures.len(), 1);
    let html = retentiond::report::render(&ctx.settings, &input).unwrap();
    assert!(
        html.contains("<table id=\"skipped\">") && html.contains("<td>hair-sale</td>"),
        "no skipped table"
    );
    assert!(
        html.contains("is not a product category in the database"),
        "no reason"
    );
    assert!(
        html.contains("1 campaign run(s) in this period failed and were skipped"),
        "no warning"
    );
    // Outside the period: not shown.
    let other = day.pred_opt().unwrap();
    let input = retentiond::report::gather(&t.db, &ctx.settings, &set, other, other, false)
        .await
        .unwrap();
    assert!(input.campaign_failures.is_empty());
    assert!(
        !retentiond::report::render(&ctx.settings, &input)
            .unwrap()
            .contains("id=\"skipped\"")
    );

    // Fixed and run again: the campaign's latest run succeeded, so status lists no failure.
    std::fs::write(
        dir.path().join("hair-sale.toml"),
        variant(
            "hair-sale",
            "category = \"recommended\"",
            "category = \"hair care\"",
        ),
    )
    .unwrap();
    let out = run_bin(&[&base[..], &["campaigns", "run"][..], &sel[..]].concat());
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let out = run_bin(&["--config", cfg, "--database", url, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["campaign_failures"], serde_json::json!([]), "{v}");
    let metrics = body(&app, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "retentiond_campaign_last_run_failed{campaign=\"hair-sale\"} 0"),
        "{metrics}"
    );
}
on_both_backends!(
    failing_campaign_isolated_sqlite,
    failing_campaign_isolated_postgres,
    a_failing_campaign_is_skipped_and_recorded
);

fn config_for(dir: &Path, campaigns: &Path) -> PathBuf {
    let config = dir.join("r.toml");
    std::fs::write(
        &config,
        format!("[campaigns]\ndir = {:?}\n", campaigns.display().to_string()),
    )
    .unwrap();
    config
}

/// `check-config` with the database reachable: unknown categories (offer, audience) and
/// attribute keys are errors with "did you mean"; an attribute value no customer has is a
/// warning, as is a disabled campaign; case differences in values are fine (selection ignores
/// case there).
async fn check_config_checks_campaigns_against_imported_data(t: TestDb) {
    import(&t.db, &brand(300)).await;
    let typo = variant("typo", "category = \"recommended\"", "category = \"hair-care\"")
        .replace("[audience]\n", "[audience]\ncategories_bought = [\"Skin Care\", \"oils\"]\nattributes.loyality_tier = [\"gold\"]\n");
    let values = variant(
        "values",
        "[audience]\n",
        "[audience]\nattributes.loyalty_tier = [\"Gold\", \"platinum\"]\n",
    )
    .replace("enabled = true", "enabled = false");
    let dir = campaign_dir(&[("typo.toml", typo), ("values.toml", values.clone())]);
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = config_for(cfg_dir.path(), dir.path());
    let out = run_bin(&[
        "--config",
        config.to_str().unwrap(),
        "--database",
        &t.url,
        "check-config",
    ]);
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("database: campaign categories and attributes checked against")
            && out
                .stdout
                .contains("(10 product categories, 2 customer attribute(s))"),
        "{}",
        out.stdout
    );
    for needle in [
        "typo.toml: `offer.category`: \"hair-care\" is not a product category in the database (fix: did you mean \"hair care\"?",
        "typo.toml: `audience.categories_bought[0]`: \"Skin Care\" is not a product category in the database (fix: did you mean \"skin care\"?",
        "typo.toml: `audience.attributes.loyality_tier`: no imported customer has the attribute \"loyality_tier\": the campaign would select nobody (fix: did you mean `audience.attributes.loyalty_tier`?",
        "3 configuration error(s)",
    ] {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("categories_bought[1]"),
        "\"oils\" exists: {}",
        out.stderr
    );
    for needle in [
        "warning: ",
        "values.toml: `audience.attributes.loyalty_tier[1]`: no imported customer has loyalty_tier = \"platinum\" (fix: values seen: \"bronze\", \"gold\", \"silver\")",
        "values.toml: `enabled`: campaign \"values\" is disabled: it selects nobody",
    ] {
        assert!(
            out.stderr.contains(needle),
            "missing {needle:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("loyalty_tier[0]"),
        "\"Gold\" matches \"gold\": {}",
        out.stderr
    );

    // Without the errors: OK, with the warnings.
    std::fs::remove_file(dir.path().join("typo.toml")).unwrap();
    let out = run_bin(&[
        "--config",
        config.to_str().unwrap(),
        "--database",
        &t.url,
        "check-config",
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("configuration OK")
            && out.stdout.contains("4 campaign(s)")
            && out.stdout.contains("2 warning(s) above"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("no imported customer has loyalty_tier = \"platinum\""),
        "{}",
        out.stderr
    );
}
on_both_backends!(
    check_config_against_data_sqlite,
    check_config_against_data_postgres,
    check_config_checks_campaigns_against_imported_data
);

/// Without data to check against, `check-config` says so in one line and checks the rest: a
/// SQLite file that does not exist (and is not created), an unreachable server, a database
/// with nothing imported. An empty or missing campaigns folder is a warning, not OK in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_without_data_says_so_and_warns_on_no_campaigns() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere/none.db");
    let missing_url = format!("sqlite://{}", missing.display());
    let empty = crate::helpers::sqlite().await;
    for (url, says) in [
        (
            missing_url.as_str(),
            "does not exist yet (nothing imported): campaign categories and attributes not checked against imported data",
        ),
        ("postgres://postgres@127.0.0.1:1/none", "is unreachable ("),
        (
            empty.url.as_str(),
            "holds no imported data yet: campaign categories and attributes not checked",
        ),
    ] {
        let out = run_bin(&["--database", url, "check-config"]);
        assert_eq!(out.code, Some(0), "{url}: {}\n{}", out.stdout, out.stderr);
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("database: "))
            .unwrap_or_else(|| panic!("{url}: no database line in {}", out.stdout));
        assert!(line.contains(says), "{url}: {line}");
        assert!(out.stdout.contains("configuration OK"), "{}", out.stdout);
    }
    assert!(
        !missing.exists() && !missing.parent().unwrap().exists(),
        "check-config created the database"
    );

    let folder = tmp.path().join("campaigns");
    std::fs::create_dir(&folder).unwrap();
    let config = config_for(tmp.path(), &folder);
    let out = run_bin(&[
        "--config",
        config.to_str().unwrap(),
        "--database",
        &missing_url,
        "check-config",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("warning: ") && out.stderr.contains("`campaigns.dir`: the campaigns folder has no campaign files (*.toml): no campaign will select anyone"), "{}", out.stderr);
    assert!(
        out.stdout.contains("0 campaign(s)") && out.stdout.contains("1 warning(s) above"),
        "{}",
        out.stdout
    );
    std::fs::remove_dir(&folder).unwrap();
    let out = run_bin(&[
        "--config",
        config.to_str().unwrap(),
        "--database",
        &missing_url,
        "check-config",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`campaigns.dir`: the campaigns folder does not exist"),
        "{}",
        out.stderr
    );
}

/// Parses a campaign file; returns its problems as `key: message (fix: …)` lines.
fn campaign_issues(text: &str) -> Vec<String> {
    let mut issues = Vec::new();
    parse_campaign(text, Path::new("c.toml"), &mut issues);
    issues
        .iter()
        .map(|i| format!("{}: {} (fix: {})", i.key, i.message, i.fix))
        .collect()
}

/// Type errors say in words what is expected, with an example; a campaign file's point to the
/// README's table (`default-config` has no campaign keys), the main config's to
/// `default-config`. A type error is reported once, also when it sets aside a whole table
/// (`[offer]`) or a list (`channels[1]`): no false `landing_url` or "channels is empty".
#[test]
fn type_errors_say_what_is_expected_with_an_example() {
    let good = shipped_file("due-soon.toml");
    assert!(campaign_issues(&good).is_empty());
    for (from, to, want) in [
        (
            "min_lapse_risk = 0.35",
            "min_lapse_risk = \"high\"",
            "trigger.min_lapse_risk: expected a number, e.g. 0.5, found text \"high\" (fix: write a value of that type (see the \"Campaign file keys\" table in the README))",
        ),
        (
            "[\"whatsapp\", \"email\", \"sms\"]",
            "\"email\"",
            "channels: expected a list in brackets, e.g. [\"email\", \"sms\"], found text \"email\"",
        ),
        (
            "[\"whatsapp\", \"email\", \"sms\"]",
            "[\"whatsapp\", 5]",
            "channels[1]: expected text in double quotes, e.g. \"email\", found the number 5",
        ),
        (
            "products = 3 ",
            "products = \"three\" ",
            "offer.products: expected a whole number (0 or more), e.g. 3, found text \"three\"",
        ),
        (
            "products = 3 ",
            "products = -2 ",
            "offer.products: expected a whole number (0 or more), e.g. 3, found the number -2",
        ),
        (
            "enabled = true",
            "enabled = \"yes\"",
            "enabled: expected true or false (without quotes), found text \"yes\"",
        ),
    ] {
        assert!(good.contains(from), "{from:?}");
        let issues = campaign_issues(&good.replacen(from, to, 1));
        assert_eq!(issues.len(), 1, "{to}: {issues:#?}");
        assert!(
            issues[0].starts_with(want),
            "{to}:\n{}\nwanted\n{want}",
            issues[0]
        );
    }
    // A type error in [offer] (here the discount, with its code, so the offer is otherwise sound).
    let text = good.replacen(
        "products = 3 ",
        "products = 3 \ndiscount_percent = \"15%\"\ncode = \"SAVE15\"\n",
        1,
    );
    let issues = campaign_issues(&text);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert!(
        issues[0].starts_with(
            "offer.discount_percent: expected a number, e.g. 0.15, found text \"15%\""
        ),
        "{}",
        issues[0]
    );
    // `offer` that is not a table: one problem, not a false `offer.landing_url`.
    let start = good.find("[offer]").unwrap();
    let end = start + good[start..].find("\n[copy]").unwrap();
    let text = format!(
        "{}{}",
        &good[..start].replace("[audience]", "offer = \"recommended\"\n[audience]"),
        &good[end..]
    );
    let issues = campaign_issues(&text);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert!(issues[0].starts_with("offer: expected a table: a [offer] header with its keys on the lines below, found text \"recommended\""), "{}", issues[0]);

    // The main config points to `default-config`, with the key's default as the example.
    let mut issues = Vec::new();
    Settings::from_toml_str(
        "[model]\nhorizon_days = \"ninety\"\nwindow_coverage = \"half\"\n[campaigns]\npublic_base_url = 8080\n",
        "r.toml",
        &mut issues,
    );
    let lines: Vec<String> = issues
        .iter()
        .map(|i| format!("{}: {} (fix: {})", i.key, i.message, i.fix))
        .collect();
    assert_eq!(
        lines,
        [
            "model.horizon_days: expected a whole number (0 or more), e.g. 90, found text \"ninety\" (fix: write a value of that type (`retentiond default-config` prints every key with its default))",
            "model.window_coverage: expected a number, e.g. 0.5, found text \"half\" (fix: write a value of that type (`retentiond default-config` prints every key with its default))",
            "campaigns.public_base_url: expected text in double quotes, e.g. \"http://127.0.0.1:8080\", found the number 8080 (fix: write a value of that type (`retentiond default-config` prints every key with its default))",
        ]
    );
}
