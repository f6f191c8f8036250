//! The binary as a user runs it: exit codes, config checking, and an import killed mid-way.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{TestDb, table_counts};
use crate::on_both_backends;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retentiond"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RETENTIOND_DATABASE_URL")
        .env("RUST_LOG", "warn");
    c
}

/// Strong secrets for the shipped config (its campaigns derive codes).
fn with_secrets(c: &mut Command) -> &mut Command {
    c.env(
        "RETENTIOND_UNSUBSCRIBE_SECRET",
        "cli-test-secret-0123456789",
    )
    .env("RETENTIOND_CODE_SECRET", "cli-test-secret-9876543210")
}

#[test]
fn shipped_config_is_valid() {
    let out = with_secrets(&mut bin())
        .args(["check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn bad_config_lists_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[database]\nurl = \"mysql://x\"\n[model]\nhorizon_days = -1\nwindow_coverge = 0.5\n[brand]\ntimezone = \"Nowhere\"\n").unwrap();
    let out = bin()
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad.toml: `database.url`",
        "`model.horizon_days`",
        "`model.window_coverge`: unknown key (fix: did you mean `model.window_coverage`?",
        "`brand.timezone`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn check_config_catches_campaign_mistakes_before_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = dir.path().join("campaigns");
    std::fs::create_dir(&campaigns).unwrap();
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/campaigns/due-soon.toml"
    ))
    .unwrap();
    std::fs::write(campaigns.join("a.toml"), &good).unwrap();
    // Same name twice, an unknown key, a bad threshold, an unknown template and channel.
    std::fs::write(campaigns.join("b.toml"), &good).unwrap();
    let bad = good
        .replace("name = \"due-soon\"", "name = \"broken\"")
        .replace(
            "min_lapse_risk = 0.35",
            "min_lapse_risk = 1.35\nmin_lapse_riks = 0.3",
        )
        .replace("template = \"offer\"", "template = \"fancy\"")
        .replace(
            "[\"whatsapp\", \"email\", \"sms\"]",
            "[\"whatsapp\", \"fax\"]",
        );
    std::fs::write(campaigns.join("c.toml"), bad).unwrap();
    let config = dir.path().join("r.toml");
    std::fs::write(
        &config,
        format!("[campaigns]\ndir = {:?}\n", campaigns.display().to_string()),
    )
    .unwrap();
    let out = bin()
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "b.toml: `name`: campaign name \"due-soon\" is also used by",
        "c.toml: `trigger.min_lapse_risk`: 1.35 is not a probability",
        "c.toml: `trigger.min_lapse_riks`: unknown key (fix: did you mean `trigger.min_lapse_risk`?",
        "c.toml: `email.template`: unknown email template \"fancy\" (fix: use one of: offer, plain)",
        "c.toml: `channels[1]`: unknown channel \"fax\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // `campaigns list` refuses the same files with the same errors.
    let out = bin()
        .args(["--config", config.to_str().unwrap(), "campaigns", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A campaign folder with the shipped `due-soon` campaign and one copy of it per landing URL,
/// as `NAME.toml` with `name = "NAME"`.
fn campaigns_with_landing_urls(dir: &std::path::Path, urls: &[(&str, &str)]) -> std::path::PathBuf {
    let campaigns = dir.join("campaigns");
    std::fs::create_dir_all(&campaigns).unwrap();
    let good = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/campaigns/due-soon.toml"
    ))
    .unwrap();
    std::fs::write(campaigns.join("due-soon.toml"), &good).unwrap();
    for (name, url) in urls {
        let text = good
            .replace("name = \"due-soon\"", &format!("name = \"{name}\""))
            .replace(
                "landing_url = \"https://shop.vedaroots.example/collections/{category}\"",
                &format!("landing_url = {url}"),
            );
        std::fs::write(campaigns.join(format!("{name}.toml")), text).unwrap();
    }
    campaigns
}

/// Landing URLs that used to pass `check-config` and then failed every campaign of `campaigns
/// run` (a quote or a space), or shipped broken links (`{first_name}` as literal text, no host):
/// each is refused by `check-config` with its file and key, and `campaigns run` refuses them the
/// same way (exit 2) before writing anything, on both backends.
async fn landing_urls_that_cannot_work_fail_the_config_check(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = campaigns_with_landing_urls(
        dir.path(),
        &[
            ("quote", r#""https://shop.example/c/{category}?x=\"y\"""#),
            ("space", r#""https://shop.example/c/{category} sale""#),
            (
                "name",
                r#""https://shop.example/c/{category}?hi={first_name}""#,
            ),
            ("nohost", r#""https://""#),
            ("relative", r#""/collections/{category}""#),
        ],
    );
    let config = dir.path().join("r.toml");
    std::fs::write(
        &config,
        format!("[campaigns]\ndir = {:?}\n", campaigns.display().to_string()),
    )
    .unwrap();
    let out = bin()
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for (file, why) in [
        ("quote.toml", "contains '\"'"),
        ("space.toml", "contains ' '"),
        (
            "name.toml",
            "uses a placeholder other than {category} and {code} ({first_name})",
        ),
        ("nohost.toml", "offer.landing_url"),
        ("relative.toml", "is not an absolute URL"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no problem reported for {file}:\n{err}"));
        assert!(
            line.contains("`offer.landing_url`") && line.contains(why),
            "{file}: {line}"
        );
    }
    assert!(
        !err.contains("due-soon.toml"),
        "the sound campaign is not blamed:\n{err}"
    );
    let out = bin()
        .args([
            "--config",
            config.to_str().unwrap(),
            "--database",
            &t.url,
            "campaigns",
            "run",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("quote.toml"));
    assert_eq!(t.db.count("outbox").await.unwrap(), 0, "nothing written");
}
on_both_backends!(
    landing_urls_sqlite,
    landing_urls_postgres,
    landing_urls_that_cannot_work_fail_the_config_check
);

/// `check-config` renders every campaign's messages for a sample customer: a setting that
/// breaks every message at run time (here a public base URL with a space, which every
/// unsubscribe link carries) fails the check, with the main config file and its key.
#[test]
fn check_config_renders_every_campaign_before_saying_ok() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = campaigns_with_landing_urls(dir.path(), &[]);
    let config = dir.path().join("r.toml");
    std::fs::write(
        &config,
        format!(
            "[campaigns]\ndir = {:?}\npublic_base_url = \"https://crm example.com\"\n",
            campaigns.display().to_string()
        ),
    )
    .unwrap();
    let out = with_secrets(&mut bin())
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("r.toml: `campaigns.public_base_url`"), "{err}");
    assert!(err.contains("does not render"), "{err}");
}

/// One type error in a campaign file is reported once: the key is not also reported as missing
/// or invalid by the checks that read it after it was set aside.
#[test]
fn one_type_error_reports_one_problem() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = campaigns_with_landing_urls(dir.path(), &[]);
    let text = std::fs::read_to_string(campaigns.join("due-soon.toml")).unwrap();
    std::fs::write(
        campaigns.join("due-soon.toml"),
        text.replace("products = 3 ", "products = \"three\" "),
    )
    .unwrap();
    let config = dir.path().join("r.toml");
    std::fs::write(
        &config,
        format!("[campaigns]\ndir = {:?}\n", campaigns.display().to_string()),
    )
    .unwrap();
    let out = with_secrets(&mut bin())
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("1 configuration error(s)"), "{err}");
    assert!(err.contains("`offer.products`"), "{err}");
    assert!(!err.contains("landing_url"), "{err}");
}

#[test]
fn missing_explicit_config_is_a_config_error() {
    let out = bin()
        .args(["--config", "/nonexistent/retentiond.toml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_usage_exits_2_and_help_lists_commands() {
    assert_eq!(
        bin().args(["frobnicate"]).output().unwrap().status.code(),
        Some(2)
    );
    let help = bin().args(["--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "import",
        "generate",
        "migrate",
        "check-config",
        "demo",
        "backtest",
        "train",
        "models",
        "score",
        "campaigns",
    ] {
        assert!(text.contains(cmd), "{cmd} not in help:\n{text}");
    }
}

#[test]
fn default_config_prints_valid_toml() {
    let out = bin().args(["default-config"]).output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = with_secrets(&mut bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn rejected_import_exits_1_with_the_problem_on_stdout() {
    let data = crate::helpers::write_dir(&[(
        "orders.csv",
        "order_id,customer_id,ordered_at\nO1,C1,someday\n",
    )]);
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db.path().join("x.db").display());
    let out = bin()
        .args([
            "--database",
            &url,
            "import",
            data.path().to_str().unwrap(),
            "--quiet",
            "--report-dir",
            db.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("orders.csv:2: column `ordered_at`, value \"someday\": not a timestamp"),
        "{stdout}"
    );
}

fn write_orders(dir: &std::path::Path, prefix: &str, rows: usize) {
    let mut orders = String::from("order_id,customer_id,ordered_at,total_amount\n");
    for i in 0..rows {
        orders.push_str(&format!(
            "{prefix}{i},C{},2024-01-{:02} 10:00:00,{}.50\n",
            i % 20_000,
            1 + i % 28,
            i % 500
        ));
    }
    std::fs::write(dir.join("orders.csv"), orders).unwrap();
}

fn import_cmd(url: &str, data: &std::path::Path, reports: &std::path::Path) -> Command {
    let mut c = bin();
    c.args([
        "--database",
        url,
        "import",
        data.to_str().unwrap(),
        "--quiet",
        "--report-dir",
        reports.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// Kills `retentiond import` with SIGKILL at random moments; the database must hold what it
/// held before, never part of the import.
async fn killed_import_leaves_database_as_before(t: TestDb) {
    const ROWS: usize = 200_000;
    let reports = tempfile::tempdir().unwrap();
    // SQLite: with no other connection open the import writes through the rollback journal
    // (a kill leaves a hot journal that the next connection rolls back); this test's own pool
    // is emptied before each run so that it is that path which is killed.
    let journal = t
        .url
        .strip_prefix("sqlite://")
        .map(|p| std::path::PathBuf::from(format!("{p}-journal")));
    // A first, complete import of the same size tells how long one takes here.
    let first = tempfile::tempdir().unwrap();
    write_orders(first.path(), "A", ROWS);
    t.db.close_idle().await;
    let started = std::time::Instant::now();
    assert!(
        import_cmd(&t.url, first.path(), reports.path())
            .status()
            .unwrap()
            .success()
    );
    let full_ms = started.elapsed().as_millis() as u64;
    if journal.is_some() {
        let report = std::fs::read_dir(reports.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("report.json");
        let report = std::fs::read_to_string(report).unwrap();
        assert!(
            report.contains("\"sqlite_journal\": \"rollback\""),
            "the import had the database to itself: {report}"
        );
    }
    let before = table_counts(&t.db).await;

    let data = tempfile::tempdir().unwrap();
    write_orders(data.path(), "B", ROWS);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (mut killed_mid_way, mut hot_journals) = (0, 0);
    for round in 0..4 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Somewhere between 5% and 85% of a full import's duration.
        let delay_ms = full_ms * (5 + (seed >> 33) % 81) / 100;
        t.db.close_idle().await;
        let mut child = import_cmd(&t.url, data.path(), reports.path())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let hot = journal.as_ref().is_some_and(|j| j.exists());
        hot_journals += hot as u32;
        let after = table_counts(&t.db).await;
        eprintln!(
            "[{}] round {round}: killed after {delay_ms} of ~{full_ms} ms (finished first: {finished}, hot journal: {hot}); counts {after:?}",
            t.name
        );
        // A kill can land after the commit but before exit: then the whole import is there.
        let complete = after.iter().find(|c| c.0 == "orders").unwrap().1 == 2 * ROWS as i64;
        if finished || complete {
            break;
        }
        assert_eq!(
            after, before,
            "[{}] a killed import left part of itself in the database",
            t.name
        );
        killed_mid_way += 1;
    }
    assert!(
        killed_mid_way > 0,
        "no kill landed mid-import; the test proved nothing"
    );
    assert!(
        journal.is_none() || hot_journals > 0,
        "no kill left a hot rollback journal: the rollback-journal path was not tested"
    );
    // And the same import then completes.
    assert!(
        import_cmd(&t.url, data.path(), reports.path())
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(t.db.count("orders").await.unwrap(), 2 * ROWS as i64);
}
on_both_backends!(
    killed_import_sqlite,
    killed_import_postgres,
    killed_import_leaves_database_as_before
);

#[test]
fn demo_runs_the_main_job_and_models_lists_the_champion() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let brand = dir.path().join("brand");
    let out = bin()
        .args(["--database", &url, "demo", "--customers", "1500", "--out"])
        .arg(&brand)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    // One daemon cycle, one line per job.
    assert!(
        stdout.contains("retrain      ok")
            && stdout.contains("model version 1 promoted (first model); backtest AUC 0."),
        "{stdout}"
    );
    assert!(
        stdout.contains("score        ok") && stdout.contains("customers scored as of"),
        "{stdout}"
    );
    assert!(
        stdout.contains("campaigns    ok") && stdout.contains("new outbox rows"),
        "{stdout}"
    );
    assert!(stdout.contains("housekeeping ok"), "{stdout}");
    assert!(
        stdout.contains("sent ") && stdout.contains("message(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("throw-away secret"),
        "the demo says its links are signed with a throw-away secret: {stdout}"
    );
    // A dry run afterwards: the demo's rows are already in today's outbox, the CSV lists nothing
    // new, and nothing is written.
    let csv = dir.path().join("plan.csv");
    let plan = bin()
        .args(["--database", &url, "campaigns", "plan", "--csv"])
        .arg(&csv)
        .env(
            "RETENTIOND_UNSUBSCRIBE_SECRET",
            "cli-test-secret-0123456789",
        )
        .env("RETENTIOND_CODE_SECRET", "cli-test-secret-9876543210")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        text.contains("already in the outbox today (re-run)")
            && text.contains("dry run: nothing was written"),
        "{text}"
    );
    assert!(
        text.contains("note: today's run already wrote these"),
        "a plan right after a run says why it selects nobody: {text}"
    );
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert!(
        rows.starts_with("campaign,customer_id,group,channel"),
        "{rows}"
    );
    // Without secrets, a clear error naming the variable (a configuration problem: exit 2).
    let plan = bin()
        .args(["--database", &url, "campaigns", "plan"])
        .env_remove("RETENTIOND_UNSUBSCRIBE_SECRET")
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains("RETENTIOND_UNSUBSCRIBE_SECRET is not set")
    );
    let models = bin()
        .args(["--database", &url, "models", "--json"])
        .output()
        .unwrap();
    assert!(models.status.success());
    let v: serde_json::Value = serde_json::from_slice(&models.stdout).unwrap();
    assert_eq!(v[0]["status"], "champion");
    for key in ["trained_at", "as_of"] {
        let t = v[0][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is an RFC 3339 string: {}", v[0][key]));
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{key}: {t}"
        );
    }
    assert!(
        v[0]["metrics"]["evaluation"]["return"]["auc"]
            .as_f64()
            .unwrap()
            > 0.7
    );
    // A backtest prints the documented JSON.
    let date = (chrono::Utc::now().date_naive() - chrono::Days::new(120)).to_string();
    let bt = bin()
        .args([
            "--database",
            &url,
            "--log",
            "warn",
            "backtest",
            "--as-of",
            &date,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        bt.status.success(),
        "{}",
        String::from_utf8_lossy(&bt.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&bt.stdout).unwrap();
    assert_eq!(r["as_of"], date.as_str());
    assert_eq!(r["horizon_days"], 90);
    assert!(r["category"]["hit_at_1"].is_f64());
}

#[test]
fn score_without_a_model_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let out = bin().args(["--database", &url, "score"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `retentiond train` first"));
}

/// `check-config` reports what `run` would refuse (missing or weak unsubscribe and code secrets,
/// an `http.auth_token_env` without its token) as errors with key and fix, exit 2, and a weak
/// secret `run` accepts (a short provider key) as a warning. No secret value is printed.
#[test]
fn check_config_reports_missing_and_weak_secrets() {
    let clear = |c: &mut Command| {
        for v in [
            "RETENTIOND_UNSUBSCRIBE_SECRET",
            "RETENTIOND_CODE_SECRET",
            "CLI_TEST_HTTP_TOKEN",
            "CLI_TEST_SENDGRID_KEY",
        ] {
            c.env_remove(v);
        }
    };
    // The shipped config without the secrets in the environment.
    let mut c = bin();
    clear(&mut c);
    let out = c.args(["check-config"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "config/retentiond.toml: `campaigns.unsubscribe_secret_env`: environment variable RETENTIOND_UNSUBSCRIBE_SECRET is not set: it holds the secret that signs unsubscribe links (fix: set it to a long random value, e.g. `openssl rand -hex 32`)",
        "`campaigns.code_secret_env`: environment variable RETENTIOND_CODE_SECRET is not set",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    // Weak values: too short, one character repeated.
    let mut c = bin();
    clear(&mut c);
    let out = c
        .args(["check-config"])
        .env("RETENTIOND_UNSUBSCRIBE_SECRET", "hunter2")
        .env("RETENTIOND_CODE_SECRET", "zzzzzzzzzzzzzzzzzzzzzzzz")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`campaigns.unsubscribe_secret_env`: the secret in RETENTIOND_UNSUBSCRIBE_SECRET is shorter than 16 bytes (7 bytes)"), "{err}");
    assert!(err.contains("`campaigns.code_secret_env`: the secret in RETENTIOND_CODE_SECRET is one character repeated"), "{err}");
    assert!(
        !err.contains("hunter2") && !err.contains("zzzzzzzz"),
        "{err}"
    );

    // A token asked for but not set is an error; a short provider key only a warning.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("r.toml");
    let campaigns = concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns");
    std::fs::write(
        &config,
        format!("[http]\nauth_token_env = \"CLI_TEST_HTTP_TOKEN\"\n[delivery]\nemail = \"sendgrid\"\n[delivery.sendgrid]\napi_key_env = \"CLI_TEST_SENDGRID_KEY\"\nfrom_email = \"crm@example.com\"\n[campaigns]\ndir = {campaigns:?}\n"),
    )
    .unwrap();
    let mut c = bin();
    clear(&mut c);
    let out = with_secrets(&mut c)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("CLI_TEST_SENDGRID_KEY", "SG.x")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "r.toml: `http.auth_token_env`: environment variable CLI_TEST_HTTP_TOKEN is not set"
        ),
        "{err}"
    );
    assert!(err.contains("warning: ") && err.contains("`delivery.sendgrid.api_key_env`: the secret in CLI_TEST_SENDGRID_KEY is shorter than 16 bytes"), "{err}");
    let mut c = bin();
    clear(&mut c);
    let out = with_secrets(&mut c)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("CLI_TEST_SENDGRID_KEY", "SG.x")
        .env("CLI_TEST_HTTP_TOKEN", "cli-test-http-token-0123456789")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: ") && err.contains("CLI_TEST_SENDGRID_KEY"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

/// A configuration problem exits 2 in every command, as `check-config` does: `campaigns run`
/// and `plan` without the secret or with an unknown campaign, `run` with a weak secret, `serve`
/// without the token it was told to require, `dispatch` without a provider's key.
async fn config_problems_exit_2_in_every_command(t: TestDb) {
    let db = ["--database", t.url.as_str()];
    let code = |c: &mut Command| {
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for action in ["run", "plan"] {
        let (status, err) = code(
            bin()
                .args(db)
                .args(["campaigns", action])
                .env_remove("RETENTIOND_UNSUBSCRIBE_SECRET"),
        );
        assert_eq!(status, Some(2), "campaigns {action}: {err}");
        assert!(
            err.contains("RETENTIOND_UNSUBSCRIBE_SECRET is not set"),
            "{err}"
        );
        let (status, err) = code(with_secrets(&mut bin()).args(db).args([
            "campaigns",
            action,
            "--campaign",
            "nope",
        ]));
        assert_eq!(status, Some(2), "campaigns {action} --campaign nope: {err}");
        assert!(err.contains("no campaign named \"nope\""), "{err}");
    }
    let (status, err) = code(
        bin()
            .args(db)
            .args(["run", "--once"])
            .env("RETENTIOND_UNSUBSCRIBE_SECRET", "aaaaaaaaaaaaaaaaaaaaaaaa")
            .env("RETENTIOND_CODE_SECRET", "cli-test-secret-9876543210"),
    );
    assert_eq!(status, Some(2), "run with a weak secret: {err}");
    assert!(
        err.contains("RETENTIOND_UNSUBSCRIBE_SECRET is one character repeated"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("r.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "[http]\nbind = \"127.0.0.1:{port}\"\nauth_token_env = \"CLI_TEST_HTTP_TOKEN\"\n[delivery]\nemail = \"sendgrid\"\n[delivery.sendgrid]\napi_key_env = \"CLI_TEST_SENDGRID_KEY\"\nfrom_email = \"crm@example.com\"\n[campaigns]\ndir = {:?}\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns")
        ),
    )
    .unwrap();
    let cfg = ["--config", config.to_str().unwrap()];
    for cmd in [&["serve"][..], &["run"], &["run", "--once"]] {
        let (status, err) = code(
            with_secrets(&mut bin())
                .args(cfg)
                .args(db)
                .args(cmd)
                .env_remove("CLI_TEST_HTTP_TOKEN")
                .env("CLI_TEST_SENDGRID_KEY", "SG.cli-test-key-0123456789"),
        );
        assert_eq!(status, Some(2), "{cmd:?} without the HTTP token: {err}");
        assert!(
            err.contains(
                "`http.auth_token_env`: environment variable CLI_TEST_HTTP_TOKEN is not set"
            ),
            "{err}"
        );
    }
    let (status, err) = code(
        with_secrets(&mut bin())
            .args(cfg)
            .args(db)
            .args(["dispatch", "--once"])
            .env_remove("CLI_TEST_SENDGRID_KEY"),
    );
    assert_eq!(status, Some(2), "dispatch without the provider key: {err}");
    assert!(err.contains("CLI_TEST_SENDGRID_KEY is not set"), "{err}");
}
on_both_backends!(
    config_exit_codes_sqlite,
    config_exit_codes_postgres,
    config_problems_exit_2_in_every_command
);

/// A failure is printed once (no log line repeating it) and without a backtrace even when
/// `RUST_BACKTRACE` asks for one; a one-shot command logs no INFO lines by default.
#[test]
fn a_failure_is_printed_once_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let out = bin()
        .args(["--database", &url, "score"])
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("run `retentiond train` first").count(),
        1,
        "{err}"
    );
    assert!(
        !err.to_lowercase().contains("backtrace") && !err.contains("INFO"),
        "{err}"
    );
}

/// `run` refused for missing secrets names all of them at once, not one per attempt.
#[test]
fn run_names_every_missing_secret_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let out = bin()
        .args(["--database", &url, "run", "--once"])
        .env_remove("RETENTIOND_UNSUBSCRIBE_SECRET")
        .env_remove("RETENTIOND_CODE_SECRET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("RETENTIOND_UNSUBSCRIBE_SECRET is not set")
            && err.contains("RETENTIOND_CODE_SECRET is not set"),
        "{err}"
    );
}

/// Run outside the repository (no config at the default path), a command says which built-in
/// defaults it uses instead of silently using UTC and a database in the current folder.
#[test]
fn a_command_without_a_config_file_says_it_uses_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retentiond"))
        .current_dir(dir.path())
        .env_remove("RETENTIOND_DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(["models"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no config file at config/retentiond.toml")
            && err.contains("brand.timezone UTC")
            && err.contains("created in this folder"),
        "{err}"
    );
}

/// On a PostgreSQL server without the named database, the error says how to create it.
#[tokio::test]
async fn a_missing_postgres_database_says_how_to_create_it() {
    let Some(t) = crate::helpers::postgres().await else {
        return;
    };
    let absent = format!("{}_absent", t.url);
    let out = bin()
        .args(["--database", &absent, "migrate"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("create it first") && err.contains("createdb"),
        "{err}"
    );
}
