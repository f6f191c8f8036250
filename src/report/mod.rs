//! `retentiond report` and the daemon's `GET /`: one self-contained HTML page that shows the
//! state of retention at a glance — uplift with its intervals, the campaign funnel, the model's
//! metrics over time, calibration, lift/gain, predicted-window coverage, category hit rates and
//! feature drift. Plots are SVG drawn by plotters and inlined; the page loads nothing else.

pub mod charts;

use askama::Template;
use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::Value;

use crate::campaigns::CampaignSet;
use crate::config::Settings;
use crate::db::Db;
use crate::measurement::{self, Comparison, UpliftReport};
use crate::monitoring::{self, ScoreEvaluation};

/// One plot on the page.
pub struct Plot {
    pub id: &'static str,
    pub title: String,
    pub caption: String,
    pub svg: String,
    /// The plot has no data yet (its note is drawn in it and repeated in the caption).
    pub empty: bool,
}

/// A row of the uplift table, formatted.
pub struct UpliftRow {
    pub campaign: String,
    pub treated: String,
    pub holdout: String,
    pub lift: String,
    pub lift_ci: String,
    pub relative: String,
    pub p_value: String,
    pub revenue_lift: String,
    pub verdict: String,
    pub class: &'static str,
}

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    brand: &'a str,
    generated: String,
    period: String,
    /// What on the page comes from `retentiond demo`'s simulation (empty: nothing).
    simulation: Vec<String>,
    headline: Vec<(String, String)>,
    uplift: Vec<UpliftRow>,
    still_open: u64,
    plots: Vec<Plot>,
    warnings: Vec<String>,
    champion: String,
    drift: Vec<(String, String, bool)>,
    drift_day: String,
    realized: Vec<Vec<String>>,
    /// (day, campaign, reason) of campaign runs that failed and were skipped.
    skipped: Vec<(String, String, String)>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn pts(x: f64) -> String {
    format!("{:+.1} pts", x * 100.0)
}

fn row(c: &Comparison) -> UpliftRow {
    let l = &c.return_lift;
    let (verdict, class) = match (&c.warning, l.significant, l.absolute > 0.0) {
        (Some(w), _, _) => (w.clone(), "muted"),
        (None, true, true) => ("significant increase".to_string(), "good"),
        (None, true, false) => ("significant decrease".to_string(), "bad"),
        (None, false, _) => ("no significant difference".to_string(), "muted"),
    };
    UpliftRow {
        campaign: c.campaign.clone(),
        treated: format!(
            "{} of {} ({})",
            c.treated.converted,
            c.treated.n,
            pct(c.treated.rate())
        ),
        holdout: format!(
            "{} of {} ({})",
            c.holdout.converted,
            c.holdout.n,
            pct(c.holdout.rate())
        ),
        lift: pts(l.absolute),
        lift_ci: format!("{} to {}", pts(l.absolute_ci.0), pts(l.absolute_ci.1)),
        relative: l
            .relative
            .map_or("-".into(), |r| format!("{:+.0}%", r * 100.0)),
        p_value: format!("{:.3}", l.p_value),
        revenue_lift: format!(
            "{:+.0} ({:+.0} to {:+.0}) per customer",
            c.revenue_lift.absolute, c.revenue_lift.absolute_ci.0, c.revenue_lift.absolute_ci.1
        ),
        verdict,
        class,
    }
}

/// Everything the page shows, gathered from the database.
pub struct ReportInput {
    pub uplift: UpliftReport,
    /// Model versions, oldest first.
    pub versions: Vec<Version>,
    /// The latest scoring day's PSI per feature (largest first) and that day.
    pub drift: Vec<(String, f64)>,
    pub drift_day: Option<String>,
    /// Matured scoring days checked against what happened, oldest first.
    pub evaluations: Vec<ScoreEvaluation>,
    /// Campaign days of the period whose run failed and was skipped, newest first.
    pub campaign_failures: Vec<crate::selection::run::RecordedFailure>,
    /// Sends and orders that `retentiond demo` simulated.
    pub simulation: crate::simulate::SimulationFootprint,
}

/// A model version as the page shows it.
pub struct Version {
    /// The training as-of instant (Unix seconds).
    pub as_of: i64,
    pub metrics: Value,
    pub status: String,
    pub id: i64,
    /// "model" or "rules" (the cold-start fallback).
    pub kind: String,
}

/// Attributes conversions, then gathers the period's uplift and the models' history.
pub async fn gather(
    db: &Db,
    settings: &Settings,
    campaigns: &CampaignSet,
    from: NaiveDate,
    to: NaiveDate,
    attribute_first: bool,
) -> anyhow::Result<ReportInput> {
    let m = &settings.measurement;
    if attribute_first {
        measurement::attribute(db, m, campaigns).await?;
    }
    let uplift = measurement::uplift(db, m, campaigns, from, to, measurement::now()).await?;
    let mut versions: Vec<Version> = crate::models::registry::list(db)
        .await?
        .into_iter()
        .map(|v| Version {
            as_of: v.as_of,
            metrics: v.metrics,
            status: v.status,
            id: v.model_version_id,
            kind: v.kind,
        })
        .collect();
    versions.reverse();
    let (drift_day, drift) = match monitoring::latest_drift(db).await? {
        Some((d, rows)) => (Some(d), rows),
        None => (None, Vec::new()),
    };
    let evaluations = monitoring::evaluations(db).await?;
    let campaign_failures =
        crate::selection::run::failures_between(db, &from.to_string(), &to.to_string()).await?;
    let simulation = crate::simulate::footprint(db).await?;
    Ok(ReportInput {
        uplift,
        versions,
        drift,
        drift_day,
        evaluations,
        campaign_failures,
        simulation,
    })
}

/// `retentiond report`: attributes conversions, evaluates matured scores, renders the page into
/// `out` (written to a temporary file and renamed, so a reader never sees half a page), and
/// says what it wrote.
pub async fn write(
    db: &Db,
    settings: &Settings,
    campaigns: &CampaignSet,
    out: &std::path::Path,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let m = &settings.measurement;
    let today = crate::scheduler::schedule::local_day(Utc::now(), settings.timezone());
    let to = to.unwrap_or(today);
    let from = from.unwrap_or_else(|| measurement::default_period(m, to).0);
    if from > to {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    let evaluated = monitoring::evaluate_matured(
        db,
        settings.model.bot_events_per_day,
        measurement::now(),
        m.max_evaluations_per_run,
    )
    .await?;
    let input = gather(db, settings, campaigns, from, to, true).await?;
    let html = render(settings, &input)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
    }
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, &html).with_context(|| format!("Failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("Failed to write {}", out.display()))?;
    let o = &input.uplift.overall;
    Ok(format!(
        "report: {} ({} KB) — outreach {from} to {to}: {} selection(s) still inside their attribution window; measured {} treated, {} held out, return-rate lift {:+.1} pts (95% CI {:+.1} to {:+.1}, p = {:.3}){}; {} matured scoring day(s) evaluated now, {} in all; drift on {} feature(s)",
        out.display(),
        html.len() / 1024,
        input.uplift.still_open,
        o.treated.n,
        o.holdout.n,
        o.return_lift.absolute * 100.0,
        o.return_lift.absolute_ci.0 * 100.0,
        o.return_lift.absolute_ci.1 * 100.0,
        o.return_lift.p_value,
        o.warning
            .as_ref()
            .map_or(String::new(), |w| format!(" [{w}]")),
        evaluated.len(),
        input.evaluations.len(),
        input
            .drift
            .iter()
            .filter(|d| d.1 > monitoring::PSI_WARN)
            .count(),
    ))
}

/// Renders the page.
pub fn render(settings: &Settings, input: &ReportInput) -> anyhow::Result<String> {
    use charts::{XAxis, YScale};
    let tz = settings.timezone();
    let u = &input.uplift;
    let mut warnings = Vec::new();
    let mut plots = Vec::new();
    let champion = input.versions.iter().rev().find(|v| v.status == "champion");
    let eval = |v: &Value| v["evaluation"].clone();
    let chart = |r: Result<String, String>| r.map_err(anyhow::Error::msg);
    let measured = u.overall.treated.n + u.overall.holdout.n > 0;
    let no_uplift_yet = if u.still_open > 0 {
        format!(
            "too early: {} selection(s) still inside their attribution window",
            u.still_open
        )
    } else {
        "no outreach in this period".to_string()
    };

    // 1. Uplift with intervals: only comparisons that have both groups (an empty one has no
    // interval to draw).
    let has_groups = |c: &Comparison| c.treated.n > 0 && c.holdout.n > 0;
    let item = |name: &str, c: &Comparison| {
        (
            name.to_string(),
            c.return_lift.absolute * 100.0,
            c.return_lift.absolute_ci.0 * 100.0,
            c.return_lift.absolute_ci.1 * 100.0,
        )
    };
    let mut items: Vec<(String, f64, f64, f64)> = u
        .campaigns
        .iter()
        .filter(|c| has_groups(c))
        .map(|c| item(&c.campaign, c))
        .collect();
    // With a single campaign, "all" would repeat it.
    if items.len() > 1 && has_groups(&u.overall) {
        items.push(item("all", &u.overall));
    }
    plots.push(Plot {
        id: "uplift",
        title: "Uplift: return rate, treated minus holdout".into(),
        caption: if items.is_empty() {
            format!("Nothing to compare yet ({no_uplift_yet}).")
        } else {
            "Percentage points with 95% confidence intervals; green excludes zero.".into()
        },
        svg: chart(charts::intervals(
            "Return-rate uplift (95% CI)",
            "percentage points",
            &items,
            &no_uplift_yet,
        ))?,
        empty: items.is_empty(),
    });
    // 2. Funnel, counted as `campaigns plan` does: "selected" are the customers messaged (not
    // held out); the held-out control group is its own bar. One colour per campaign name.
    let stages = ["held out", "selected", "sent", "delivered", "converted"]
        .map(String::from)
        .to_vec();
    let colours = charts::campaign_colours(u.funnel.iter().map(|f| f.campaign.as_str()));
    let series: Vec<(String, Vec<f64>, _)> = u
        .funnel
        .iter()
        .map(|f| {
            let c = colours
                .iter()
                .find(|(n, _)| *n == f.campaign)
                .map_or(charts::series_colour(0), |x| x.1);
            let selected = f.selected.saturating_sub(f.held_out);
            (
                f.campaign.clone(),
                vec![
                    f.held_out as f64,
                    selected as f64,
                    f.sent as f64,
                    f.delivered as f64,
                    f.converted as f64,
                ],
                c,
            )
        })
        .collect();
    let funnel_empty = series.iter().all(|s| s.1.iter().all(|&v| v <= 0.0));
    plots.push(Plot {
        id: "funnel",
        title: "Campaign funnel".into(),
        caption: "Held out (the random control group, never messaged) and selected (messaged), as `retentiond campaigns plan` counts them → sent → delivered (provider webhooks) → converted within the channel's window.".into(),
        svg: chart(charts::bars("Campaign funnel", "customers", &stages, &series, YScale::Counts, "no outreach in this period yet"))?,
        empty: funnel_empty,
    });
    // 3. Model metrics over time (backtests of every version; realized AUC when matured).
    let mut auc = Vec::new();
    let mut cidx = Vec::new();
    let mut hit = Vec::new();
    for v in &input.versions {
        let e = eval(&v.metrics);
        let x = v.as_of as f64;
        if let Some(m) = e["return"]["auc"].as_f64() {
            auc.push((x, m));
        }
        if let Some(m) = e["timing"]["c_index"].as_f64() {
            cidx.push((x, m));
        }
        if let Some(m) = e["category"]["hit_at_1"].as_f64() {
            hit.push((x, m));
        }
    }
    let mut series = vec![
        ("return AUC (backtest)".to_string(), auc),
        ("timing C-index".to_string(), cidx),
        ("category hit@1".to_string(), hit),
    ];
    let realized = |f: fn(&ScoreEvaluation) -> f64| -> Vec<(f64, f64)> {
        input
            .evaluations
            .iter()
            .map(|e| (e.as_of as f64, f(e)))
            .filter(|p| p.1.is_finite())
            .collect()
    };
    for (name, f) in [
        (
            "return AUC (realized)",
            (|e: &ScoreEvaluation| e.auc) as fn(&ScoreEvaluation) -> f64,
        ),
        ("window coverage (realized)", |e| e.window_coverage),
        ("category hit@3 (realized)", |e| e.hit_at_3),
    ] {
        let pts = realized(f);
        if !pts.is_empty() {
            series.push((name.to_string(), pts));
        }
    }
    let metrics_empty = series.iter().all(|s| s.1.is_empty());
    plots.push(Plot {
        id: "metrics",
        title: "Model metrics over time".into(),
        caption: "Each model version's backtest on the latest complete horizon when it was trained; realized AUC of past scores once their horizon passed.".into(),
        svg: chart(charts::lines("Model metrics over time", "metric", &series, (0.0, 1.0), XAxis::Days(tz), None, "no backtest metrics yet"))?,
        empty: metrics_empty,
    });
    let (bins, coverage, nominal, category, timing_returners) = match champion {
        Some(c) => {
            let e = eval(&c.metrics);
            (
                e["return"]["calibration"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                e["timing"]["window_coverage"].as_f64(),
                e["timing"]["window_nominal"].as_f64(),
                e["category"].clone(),
                e["timing"]["returners"].as_u64().unwrap_or(0),
            )
        }
        None => {
            warnings.push("No champion model yet: the daemon trains one at start.".into());
            (Vec::new(), None, None, Value::Null, 0)
        }
    };
    // 4. Calibration: probabilities on both axes, always 0 to 1.
    let cal: Vec<(f64, f64)> = bins
        .iter()
        .filter_map(|b| Some((b["mean_predicted"].as_f64()?, b["observed_rate"].as_f64()?)))
        .collect();
    let mut series = vec![("backtest".to_string(), cal)];
    let latest_eval = input.evaluations.last();
    if let Some(e) = latest_eval {
        series.push((
            format!("realized ({})", e.as_of_date),
            e.calibration
                .iter()
                .map(|b| (b.mean_predicted, b.observed_rate))
                .collect(),
        ));
    }
    let one_decimal = |x: &f64| format!("{x:.1}");
    let calibration_empty = series.iter().all(|s| s.1.is_empty());
    plots.push(Plot {
        id: "calibration",
        title: "Calibration of P(return)".into(),
        caption: "Predicted probability (deciles) against the observed return rate; on the diagonal is perfectly calibrated.".into(),
        svg: chart(charts::lines("Calibration", "observed return rate", &series, (0.0, 1.0), XAxis::Fixed((0.0, 1.0), &one_decimal), Some("perfectly calibrated"), "no backtest yet"))?,
        empty: calibration_empty,
    });
    // 5. Cumulative gain from the same deciles, highest predicted first; the diagonal is what
    // contacting customers at random finds.
    let mut gain = Vec::new();
    let total_n: f64 = bins.iter().filter_map(|b| b["n"].as_f64()).sum();
    let total_pos: f64 = bins
        .iter()
        .filter_map(|b| Some(b["n"].as_f64()? * b["observed_rate"].as_f64()?))
        .sum();
    if total_n > 0.0 && total_pos > 0.0 {
        gain.push((0.0, 0.0));
        let (mut cn, mut cp) = (0.0, 0.0);
        for b in bins.iter().rev() {
            let n = b["n"].as_f64().unwrap_or(0.0);
            cn += n;
            cp += n * b["observed_rate"].as_f64().unwrap_or(0.0);
            gain.push((cn / total_n, cp / total_pos));
        }
    }
    let percent = |x: &f64| format!("{:.0}%", x * 100.0);
    let gain_empty = gain.is_empty();
    plots.push(Plot {
        id: "gain",
        title: "Lift / cumulative gain".into(),
        caption: "Share of returners found when contacting the customers with the highest P(return) first (backtest); the diagonal is random targeting.".into(),
        svg: chart(charts::lines("Cumulative gain", "share of returners", &[("model".to_string(), gain)], (0.0, 1.0), XAxis::Fixed((0.0, 1.0), &percent), Some("random targeting"), "no returners in the backtest window yet"))?,
        empty: gain_empty,
    });
    // 6. Predicted-window coverage (a backtest without returners has none to show).
    let mut names = vec!["nominal".to_string()];
    let mut vals = vec![nominal.unwrap_or(settings.model.window_coverage)];
    if let Some(c) = coverage.filter(|c| c.is_finite() && timing_returners > 0) {
        names.push("backtest".to_string());
        vals.push(c);
    }
    if let Some(e) = latest_eval.filter(|e| e.window_coverage.is_finite()) {
        names.push(format!("realized ({})", e.as_of_date));
        vals.push(e.window_coverage);
    }
    plots.push(Plot {
        id: "coverage",
        title: "Predicted-window coverage".into(),
        caption: "Share of returners whose next order fell inside their predicted window, against the window's nominal coverage.".into(),
        svg: chart(charts::bars("Predicted-window coverage", "share of returners", &names, &[("coverage".to_string(), vals, charts::series_colour(0))], YScale::Share, "no returners yet"))?,
        empty: false,
    });
    // 7. Category hit rates against the baselines.
    let cats = ["model", "popular", "most frequent", "last"]
        .map(String::from)
        .to_vec();
    let pick = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let b = &category["baselines"];
    let series = vec![
        (
            "hit@1".to_string(),
            vec![
                pick(&category, "hit_at_1"),
                pick(&b["popular"], "hit_at_1"),
                pick(&b["most_frequent"], "hit_at_1"),
                pick(&b["last"], "hit_at_1"),
            ],
            charts::series_colour(0),
        ),
        (
            "hit@3".to_string(),
            vec![
                pick(&category, "hit_at_3"),
                pick(&b["popular"], "hit_at_3"),
                pick(&b["most_frequent"], "hit_at_3"),
                pick(&b["last"], "hit_at_3"),
            ],
            charts::series_colour(1),
        ),
    ];
    let categories_empty = series.iter().all(|s| s.1.iter().all(|&v| v <= 0.0));
    plots.push(Plot {
        id: "categories",
        title: "Next-category hit rates".into(),
        caption: "Share of returners whose next category was the top (hit@1) or among the top three (hit@3) recommended, against simple baselines (backtest).".into(),
        svg: chart(charts::bars("Category hit rates", "share of returners", &cats, &series, YScale::Share, "no category model yet"))?,
        empty: categories_empty,
    });

    let rules = champion.filter(|c| c.kind == crate::models::bundle::ModelKind::Rules.as_str());
    if let Some(c) = rules {
        let reason = eval(&c.metrics)["cold_start_reason"]
            .as_str()
            .map_or(String::new(), |r| format!(" ({r})"));
        warnings.push(format!(
            "The champion is the rule-based fallback, not a fitted model{reason}: its probabilities and windows are rules of thumb, and its backtest figures are thin. Fitted models replace it once the history allows (model.min_history_days, model.min_repeat_buyers)."
        ));
    }
    if !measured && u.still_open > 0 {
        warnings.push(format!("Uplift: all {} selections of the period are still inside their attribution window; the comparison starts as their windows close.", u.still_open));
    } else if let Some(w) = &u.overall.warning {
        warnings.push(format!("Uplift: {w}."));
    }
    let drift: Vec<(String, String, bool)> = input
        .drift
        .iter()
        .map(|(f, p)| (f.clone(), format!("{p:.3}"), *p > monitoring::PSI_WARN))
        .collect();
    let drifted: Vec<&str> = drift.iter().filter(|d| d.2).map(|d| d.0.as_str()).collect();
    if !drifted.is_empty() {
        warnings.push(format!(
            "Feature drift: {} shifted since training (PSI above {}); consider retraining.",
            drifted.join(", "),
            monitoring::PSI_WARN
        ));
    }
    let f3 = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "-".into()
        }
    };
    let vs = |real: f64, promised: Option<f64>| match promised {
        Some(p) => format!("{} (promised {})", f3(real), f3(p)),
        None => f3(real),
    };
    let realized: Vec<Vec<String>> = input
        .evaluations
        .iter()
        .rev()
        .take(12)
        .map(|e| {
            vec![
                e.as_of_date.clone(),
                e.model_version_id.to_string(),
                e.customers.to_string(),
                pct(e.base_rate),
                vs(e.auc, e.promised_auc),
                f3(e.brier),
                vs(e.window_coverage, e.promised_window_coverage),
                vs(e.hit_at_3, e.promised_hit_at_3),
            ]
        })
        .collect();
    if let Some(e) = latest_eval {
        if let Some(p) = e
            .promised_auc
            .filter(|p| e.auc.is_finite() && e.auc < p - 0.05)
        {
            warnings.push(format!("Realized AUC of the {} scores is {:.3}, below the {:.3} promised at training: the model has degraded.", e.as_of_date, e.auc, p));
        }
    }
    let o = &u.overall;
    let uplift_value = match &o.warning {
        None => format!(
            "{} (95% CI {} to {})",
            pts(o.return_lift.absolute),
            pts(o.return_lift.absolute_ci.0),
            pts(o.return_lift.absolute_ci.1)
        ),
        Some(_) if !measured => "too early to tell".into(),
        Some(_) => format!("{} (too little data to tell)", pts(o.return_lift.absolute)),
    };
    let headline = vec![
        ("Return-rate uplift".into(), uplift_value),
        (
            "Conversion, treated vs holdout".into(),
            if measured {
                format!("{} vs {}", pct(o.treated.rate()), pct(o.holdout.rate()))
            } else {
                "-".into()
            },
        ),
        (
            "Revenue per customer lift".into(),
            if measured {
                format!("{:+.0}", o.revenue_lift.absolute)
            } else {
                "-".into()
            },
        ),
        (
            "Customers reached".into(),
            u.funnel.iter().map(|f| f.sent).sum::<u64>().to_string(),
        ),
    ];
    let champion = champion.map_or("none yet".to_string(), |c| {
        let e = eval(&c.metrics);
        let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
        let what = if rules.is_some() { " (rule-based fallback)" } else { "" };
        // Without returners in the backtest window there is no coverage to speak of.
        let coverage = if timing_returners > 0 { f(&e["timing"]["window_coverage"]) } else { "-".into() };
        format!(
            "model version {}{what} trained as of {}: backtest AUC {}, C-index {}, window coverage {}, hit@3 {}",
            c.id,
            tz.timestamp_opt(c.as_of, 0).single().map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default(),
            f(&e["return"]["auc"]),
            f(&e["timing"]["c_index"]),
            coverage,
            f(&e["category"]["hit_at_3"])
        )
    });
    if !input.campaign_failures.is_empty() {
        warnings.push(format!("{} campaign run(s) in this period failed and were skipped (the other campaigns ran): see “Skipped campaigns”.", input.campaign_failures.len()));
    }
    let skipped = input
        .campaign_failures
        .iter()
        .take(30)
        .map(|f| (f.day.clone(), f.campaign.clone(), f.reason.clone()))
        .collect();
    let mut uplift: Vec<UpliftRow> = u.campaigns.iter().map(row).collect();
    uplift.push(row(&u.overall));
    let page = Page {
        brand: &settings.brand.name,
        generated: Utc::now()
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        period: format!("{} to {}", u.from, u.to),
        simulation: input.simulation.describe(),
        headline,
        uplift,
        still_open: u.still_open,
        plots,
        warnings,
        champion,
        drift,
        drift_day: input.drift_day.clone().unwrap_or_default(),
        realized,
        skipped,
    };
    Ok(page.render()?)
}
