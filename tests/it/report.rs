//! Model monitoring and the report, on both backends: drift against the training data (none on
//! the training day, flagged when browsing tracking breaks), realized metrics of matured scores
//! beside the promised ones, `/metrics`, `GET /` and `retentiond report`. On SQLite the page is
//! also opened in a real headless Chromium: no script errors, every plot laid out and drawn
//! (coloured data pixels inside each plot's box on a screenshot).

use std::path::{Path, PathBuf};

use axum::body::Body;
use chrono::{NaiveDate, TimeZone, Utc};
use http_body_util::BodyExt as _;
use retentiond::campaigns::{CampaignSet, SharedCampaigns};
use retentiond::config::{ModelSettings, Settings};
use retentiond::db::Db;
use retentiond::features::NB;
use retentiond::http::{AppState, ReportContext, WebhookSecrets, install_metrics_recorder, router};
use retentiond::models::training;
use retentiond::monitoring::{PSI_WARN, evaluate_matured};
use retentiond::selection::offer::Secrets;
use tower::ServiceExt as _;

use crate::helpers::TestDb;
use crate::models::{brand, end, import};

/// The plots the page must show (`data-plot` ids).
const PLOTS: [&str; 7] = [
    "uplift",
    "funnel",
    "metrics",
    "calibration",
    "gain",
    "coverage",
    "categories",
];

async fn count(db: &Db, sql: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(p).await.unwrap())
}

fn day_start(d: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
        .timestamp()
}

async fn get(app: &axum::Router, uri: &str) -> (u16, String) {
    let resp = app
        .clone()
        .oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Builds the whole state and returns the report file and the settings it was written with.
async fn monitoring_and_report(t: &TestDb, out_dir: &Path) -> PathBuf {
    import(&t.db, &brand(6000)).await;
    // Train and score on 1 July: its 90-day horizon ends before the brand's history does.
    let a_day = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
    let a = day_start(a_day);
    let m = ModelSettings {
        max_train_rows: 30_000,
        ..ModelSettings::default()
    };
    training::train(&t.db, &m, chrono_tz::UTC, a).await.unwrap();
    let s1 = retentiond::scoring::score(&t.db, a, "2026-07-01", 200, 90.0, 90)
        .await
        .unwrap();
    // The scored population on the training day is the training population: no drift.
    assert!(s1.drifted_features.is_empty(), "{:?}", s1.drifted_features);
    assert!(
        s1.max_psi.unwrap() < 0.1,
        "max PSI on the training day {:?}",
        s1.max_psi
    );
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM feature_drift WHERE as_of_date = '2026-07-01'"
        )
        .await,
        NB as i64
    );

    // A later scoring whose horizon has not passed by the end of the data is not evaluated.
    let later = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    retentiond::scoring::score(&t.db, day_start(later), "2026-10-01", 200, 90.0, 90)
        .await
        .unwrap();
    let ev = evaluate_matured(&t.db, 200, end(), 7).await.unwrap();
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0];
    assert_eq!(e.as_of_date, "2026-07-01");
    // Realized against promised: the backtest one horizon earlier is what training promised;
    // on a stationary synthetic brand the realized figures must land close to it.
    let promised = e
        .promised_auc
        .expect("the model's backtest AUC is recorded");
    eprintln!(
        "realized ({}): AUC {:.3} vs {promised:.3}; coverage {:.3} vs {:?}; hit@3 {:.3} vs {:?}; {} customers, base rate {:.3}",
        t.name,
        e.auc,
        e.window_coverage,
        e.promised_window_coverage,
        e.hit_at_3,
        e.promised_hit_at_3,
        e.customers,
        e.base_rate
    );
    assert!(
        e.auc > 0.65 && (e.auc - promised).abs() < 0.05,
        "realized AUC {} vs promised {promised}",
        e.auc
    );
    assert!(
        (e.window_coverage - e.promised_window_coverage.unwrap()).abs() < 0.12,
        "{e:?}"
    );
    assert!(
        (e.hit_at_3 - e.promised_hit_at_3.unwrap()).abs() < 0.1,
        "{e:?}"
    );
    assert!(
        e.customers as i64
            == count(
                &t.db,
                "SELECT COUNT(*) FROM scores WHERE as_of_date = '2026-07-01'"
            )
            .await
    );
    // Calibrated model: deciles' observed rates track their predictions.
    let worst = e
        .calibration
        .iter()
        .map(|b| (b.mean_predicted - b.observed_rate).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 0.15,
        "calibration off by {worst}: {:?}",
        e.calibration
    );
    // Evaluated once.
    assert!(
        evaluate_matured(&t.db, 200, end(), 7)
            .await
            .unwrap()
            .is_empty()
    );

    // Outreach on 1 July with a 50% holdout, every message sent, responses simulated.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("winback.toml"),
        crate::measurement::CAMPAIGN,
    )
    .unwrap();
    let set = CampaignSet::load(dir.path()).unwrap();
    let mut s = Settings::default();
    s.brand.timezone = "UTC".into();
    s.campaigns.dir = dir.path().to_path_buf();
    s.measurement.report_days = 400;
    let secrets = Secrets {
        unsubscribe: Some(b"report-test-unsubscribe-secret".to_vec()),
        code: Some(b"report-test-code-secret".to_vec()),
    };
    let noon = Utc.from_utc_datetime(&a_day.and_hms_opt(12, 0, 0).unwrap());
    retentiond::selection::run::run(&t.db, &s, &set, None, a_day, noon, &secrets)
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
    retentiond::simulate::simulate_responses(&t.db, &s.measurement, &set, a_day, 0.08, 7)
        .await
        .unwrap();

    // Browsing tracking breaks: no sessions or events any more. The next scoring flags it (and
    // the report shows the latest scoring day's drift).
    let mut tx = t.db.begin().await.unwrap();
    tx.execute("DELETE FROM events", &[]).await.unwrap();
    tx.execute("DELETE FROM sessions", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let broken_day = NaiveDate::from_ymd_opt(2026, 10, 2).unwrap();
    let broken =
        retentiond::scoring::score(&t.db, day_start(broken_day), "2026-10-02", 200, 90.0, 90)
            .await
            .unwrap();
    for f in [
        "sessions_30d_log",
        "sessions_90d_log",
        "days_since_session_log",
    ] {
        assert!(
            broken.drifted_features.iter().any(|d| d == f),
            "{f} not flagged: {:?}",
            broken.drifted_features
        );
    }
    assert!(
        !broken
            .drifted_features
            .iter()
            .any(|d| d.starts_with("monetary") || d.starts_with("purchase")),
        "{:?}",
        broken.drifted_features
    );

    // `retentiond report` (the library call behind it).
    let out = out_dir.join("report.html");
    let line = retentiond::report::write(&t.db, &s, &set, &out, Some(a_day), Some(a_day))
        .await
        .unwrap();
    eprintln!("{line}");
    let html = std::fs::read_to_string(&out).unwrap();
    for id in PLOTS {
        assert!(
            html.contains(&format!("data-plot=\"{id}\"")),
            "plot {id} missing"
        );
    }
    assert_eq!(html.matches("<svg").count(), PLOTS.len());
    assert!(
        html.contains("id=\"realized\"") && html.contains("2026-07-01"),
        "realized table missing"
    );
    assert!(
        html.contains("sessions_90d_log") && html.contains("above 0.2"),
        "drift table missing"
    );
    assert!(html.contains("Feature drift:"), "drift warning missing");
    // An 8-point effect on ~1,500 per group is detected and reported as significant.
    assert!(
        html.contains("significant increase"),
        "uplift verdict missing"
    );
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "the page must be self-contained"
    );
    assert!(
        line.contains("report:") && line.contains("treated"),
        "{line}"
    );

    // The daemon's `GET /` and `/metrics`.
    let state = |report: Option<ReportContext>| AppState {
        db: t.db.clone(),
        unsubscribe_secret: b"x".to_vec(),
        webhooks: WebhookSecrets::default(),
        public_base_url: "http://127.0.0.1:1".into(),
        metrics: install_metrics_recorder(),
        brand_name: "Veda Roots".into(),
        report,
        auth_token: None,
    };
    let app = router(state(Some(ReportContext {
        settings: s.clone(),
        campaigns: SharedCampaigns::new(set.clone()),
    })));
    let (status, page) = get(&app, "/").await;
    assert_eq!(status, 200);
    for id in PLOTS {
        assert!(
            page.contains(&format!("data-plot=\"{id}\"")),
            "GET /: plot {id} missing"
        );
    }
    assert!(page.contains("significant increase"));
    let (status, metrics) = get(&app, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("retentiond_feature_psi{feature=\"sessions_90d_log\"}"),
        "{metrics}"
    );
    let psi: f64 = metrics
        .lines()
        .find(|l| l.starts_with("retentiond_feature_psi{feature=\"sessions_90d_log\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(psi > PSI_WARN, "{psi}");
    assert!(
        metrics.contains(&format!(
            "retentiond_model_realized{{metric=\"auc\"}} {}",
            e.auc
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "retentiond_model_promised{{metric=\"auc\"}} {promised}"
        )),
        "{metrics}"
    );
    let (status, _) = get(&router(state(None)), "/").await;
    assert_eq!(status, 404);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_sqlite_in_a_real_browser() {
    let t = crate::helpers::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let page = monitoring_and_report(&t, dir.path()).await;
    let Some(chromium) = chromium() else { return };
    check_in_browser(&chromium, &page, dir.path(), &[], "monitoring");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_postgres() {
    if let Some(t) = crate::helpers::postgres().await {
        let dir = tempfile::tempdir().unwrap();
        monitoring_and_report(&t, dir.path()).await;
    }
}

/// Debian's chromium (or RETENTIOND_TEST_CHROMIUM); required when CI is set.
pub(crate) fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("RETENTIOND_TEST_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    for c in candidates {
        if c.exists() {
            return Some(c);
        }
    }
    let why = "no chromium at /usr/bin/chromium (Debian: apt-get install chromium; or set RETENTIOND_TEST_CHROMIUM)";
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so the browser test is required, but {why}");
    }
    crate::helpers::skipped(&format!("the report in a real browser: {why}"));
    None
}

const WINDOW: (u32, u32) = (1400, 4200);

fn headless(chromium: &Path, profile: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(chromium);
    // The flags that keep Chromium off the (closed) network and away from a GPU; root needs
    // --no-sandbox.
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c.arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
    c
}

#[derive(serde::Deserialize, Debug)]
struct Rect {
    id: String,
    /// The page marks a plot with no data yet (it draws a note instead).
    #[serde(default)]
    empty: bool,
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

fn attr<'a>(dom: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("{name} not in the rendered DOM"))
        + key.len();
    &dom[start..start + dom[start..].find('"').unwrap()]
}

/// Opens the page in Chromium: no script errors, every plot laid out, and every plot either
/// drawn in colour or (only those named in `may_be_empty`) marked empty with its note shown.
/// The screenshot is kept as `report-screenshot-NAME.png`.
pub(crate) fn check_in_browser(
    chromium: &Path,
    page: &Path,
    dir: &Path,
    may_be_empty: &[&str],
    name: &str,
) {
    let url = format!("file://{}", page.display());
    let out = headless(chromium, &dir.join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        attr(&dom, "data-errors"),
        "0",
        "the page raised script errors"
    );
    assert_eq!(
        attr(&dom, "data-plots-rendered"),
        PLOTS.len().to_string(),
        "plots laid out with a visible size"
    );
    let rects: Vec<Rect> =
        serde_json::from_str(&attr(&dom, "data-plot-rects").replace("&quot;", "\"")).unwrap();
    assert_eq!(
        rects.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        PLOTS
    );

    let shot = dir.join("report.png");
    let out = headless(chromium, &dir.join("profile-shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success() && shot.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), WINDOW);
    let channels = info.color_type.samples();
    let pixel = |x: i64, y: i64| {
        let i = (y as usize * info.width as usize + x as usize) * channels;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    for r in &rects {
        assert!(
            r.x >= 0 && r.y >= 0 && r.x + r.w <= WINDOW.0 as i64 && r.y + r.h <= WINDOW.1 as i64,
            "plot {} outside the screenshot: {r:?}",
            r.id
        );
        // Axes and text are grey; series, bars and intervals are drawn in saturated colours.
        let (mut coloured, mut total) = (0u64, 0u64);
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                let (red, green, blue) = pixel(x, y);
                let (hi, lo) = (red.max(green).max(blue), red.min(green).min(blue));
                coloured += u64::from(hi - lo > 60);
                total += 1;
            }
        }
        let share = coloured as f64 / total as f64;
        eprintln!(
            "{name}: plot {:<12} {}x{} at ({}, {}): {:.2}% coloured pixels{}",
            r.id,
            r.w,
            r.h,
            r.x,
            r.y,
            share * 100.0,
            if r.empty { " (marked empty)" } else { "" }
        );
        if r.empty {
            assert!(
                may_be_empty.contains(&r.id.as_str()),
                "{name}: plot {} has no data",
                r.id
            );
            continue;
        }
        // An empty plot (axes and text only) has next to none; a single data point has ~0.1%.
        assert!(
            share > 0.0005,
            "{name}: plot {} looks empty on the screenshot ({coloured} coloured pixels)",
            r.id
        );
    }
    // Kept for a person to look at.
    let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-screenshot-{name}.png"));
    std::fs::copy(&shot, &keep).unwrap();
    std::fs::copy(page, keep.with_extension("html")).unwrap();
    eprintln!("screenshot: {}", keep.display());
}

/// The SVG of one plot of the page.
fn plot_svg<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("data-plot=\"{id}\""))
        .unwrap_or_else(|| panic!("plot {id} missing"));
    let rest = &html[start..];
    &rest[..rest.find("</figure>").unwrap()]
}

/// The text of every `<text>` element of an SVG.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            Some(
                t.split_once('>')?
                    .1
                    .split_once("</text>")?
                    .0
                    .trim()
                    .to_string(),
            )
        })
        .collect()
}

/// A small new brand: a year of orders from a few hundred customers, trained and scored five
/// months in (so the champion is the rule-based fallback), before any outreach. What the page
/// showed then: x axes at "01 Jan 70", "0.3 0.3 0.3", gain from -100%, an all-zero funnel axis,
/// "window coverage 0.000" and no word of the fallback.
async fn small_rules_fallback_brand(t: &TestDb, out_dir: &Path) -> PathBuf {
    let brand = tempfile::tempdir().unwrap();
    let end_day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let mut params = retentiond::generate::GenerateParams::new(300, 5, end_day);
    params.years = 1;
    retentiond::generate::generate(&params, brand.path(), &|_| {}).unwrap();
    import(&t.db, brand.path()).await;
    // Five months after the first orders: too little history for fitted models.
    let as_of_day = end_day - chrono::Days::new(365 - 150);
    let (_, report) = training::train(
        &t.db,
        &ModelSettings::default(),
        chrono_tz::UTC,
        day_start(as_of_day),
    )
    .await
    .unwrap();
    assert_eq!(
        report.model_kind,
        retentiond::models::bundle::ModelKind::Rules,
        "{:?}",
        report.cold_start_reason
    );
    retentiond::scoring::score(
        &t.db,
        day_start(as_of_day),
        &as_of_day.to_string(),
        200,
        90.0,
        90,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("winback.toml"),
        crate::measurement::CAMPAIGN,
    )
    .unwrap();
    let set = CampaignSet::load(dir.path()).unwrap();
    let mut s = Settings::default();
    s.brand.timezone = "UTC".into();
    s.campaigns.dir = dir.path().to_path_buf();
    let out = out_dir.join("small.html");
    retentiond::report::write(&t.db, &s, &set, &out, Some(as_of_day), Some(as_of_day))
        .await
        .unwrap();
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        !html.contains(" 70<") && !html.contains(" 70\n"),
        "an axis at 1970"
    );
    assert!(
        html.contains("rule-based fallback") && html.contains("not a fitted model"),
        "no word of the rules fallback"
    );
    assert!(
        !html.contains("window coverage 0.000"),
        "a coverage of nothing"
    );
    // Probability axes run 0 to 1, whatever the bins: no "0.3 0.3 0.3", no gain from -100%.
    let calibration = svg_texts(plot_svg(&html, "calibration"));
    assert!(
        calibration.iter().filter(|t| *t == "0.3").count() <= 1
            && calibration.iter().any(|t| t == "1.0"),
        "{calibration:?}"
    );
    let gain = svg_texts(plot_svg(&html, "gain"));
    assert!(
        !gain.iter().any(|t| t.starts_with('-'))
            && gain.iter().any(|t| t == "100%")
            && gain.iter().any(|t| t == "random targeting"),
        "{gain:?}"
    );
    assert!(
        !gain.iter().any(|t| t == "perfect"),
        "the gain chart's diagonal is random, not perfect: {gain:?}"
    );
    let funnel = svg_texts(plot_svg(&html, "funnel"));
    assert!(
        funnel.iter().any(|t| t == "no outreach in this period yet"),
        "{funnel:?}"
    );
    assert_eq!(
        funnel.iter().filter(|t| *t == "0").count(),
        1,
        "an all-zero funnel axis: {funnel:?}"
    );
    let uplift = svg_texts(plot_svg(&html, "uplift"));
    assert!(
        !uplift.iter().any(|t| t.contains("0.001")),
        "a +-0.001 uplift axis: {uplift:?}"
    );
    assert!(
        html.contains("data-plot=\"uplift\" data-empty=\"true\""),
        "the empty uplift plot is not marked"
    );
    let metrics = svg_texts(plot_svg(&html, "metrics"));
    assert!(!metrics.iter().any(|t| t.ends_with(" 70")), "{metrics:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rules_fallback_brand_report_in_a_real_browser() {
    let t = crate::helpers::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let page = small_rules_fallback_brand(&t, dir.path()).await;
    let Some(chromium) = chromium() else { return };
    check_in_browser(
        &chromium,
        &page,
        dir.path(),
        &[
            "uplift",
            "funnel",
            "metrics",
            "calibration",
            "gain",
            "categories",
        ],
        "small-rules-fallback",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rules_fallback_brand_report_postgres() {
    if let Some(t) = crate::helpers::postgres().await {
        let dir = tempfile::tempdir().unwrap();
        small_rules_fallback_brand(&t, dir.path()).await;
    }
}
