//! The protocol shared by `backtest` and `train`: training cutoffs before the as-of instant,
//! fitting, and the honest evaluation of a bundle on the later window [A, A + H) beside the
//! baselines the product is judged against.

use serde::Serialize;

use super::bundle::{BundleParams, ModelBundle, ModelKind, Predictions, TrainingSet};
use super::category::ranking;
use super::metrics::{self, CalibrationBin, RankMetrics};
use crate::config::ModelSettings;
use crate::db::Db;
use crate::features::labels::{Labels, labels};
use crate::features::{
    BROWSE_LOOKBACK_DAYS, BrandData, DAY, FeatureParams, LoadOptions, NO_CAT, Snapshot, snapshot,
};

/// Training cutoffs for a prediction as of `as_of`: T_k = A − H − k·step, newest first, kept
/// while some customer had purchased at least 30 days before T_k (so there is a history).
pub fn training_cutoffs(as_of: i64, m: &ModelSettings, first_order: i64) -> Vec<i64> {
    (0..m.cutoffs as i64)
        .map(|k| as_of - m.horizon_days as i64 * DAY - k * m.cutoff_step_days as i64 * DAY)
        .filter(|&t| t - 30 * DAY > first_order)
        .collect()
}

pub fn feature_params(m: &ModelSettings) -> FeatureParams {
    FeatureParams {
        horizon_days: m.horizon_days,
        category_half_life_days: m.category_half_life_days,
    }
}

pub fn bundle_params(m: &ModelSettings) -> BundleParams {
    let mut p = BundleParams::new(m.horizon_days, m.window_coverage);
    p.classifier.try_gbt = m.try_gbt;
    p
}

/// Loads what a run needs: orders until `until`, browsing from 90 days before the earliest
/// training cutoff of a fit as of `earliest_as_of`.
pub async fn load(
    db: &Db,
    m: &ModelSettings,
    earliest_as_of: i64,
    until: i64,
) -> anyhow::Result<BrandData> {
    let earliest = earliest_as_of
        - (m.horizon_days as i64 + m.cutoff_step_days as i64 * m.cutoffs as i64) * DAY;
    BrandData::load(
        db,
        LoadOptions {
            until,
            browse_from: earliest - BROWSE_LOOKBACK_DAYS * DAY,
            bot_events_per_day: m.bot_events_per_day,
            sales_from: None,
        },
    )
    .await
}

/// Why the cold-start rules are used instead of fitted models, if they are.
pub fn cold_start_reason(
    data: &BrandData,
    as_of: i64,
    m: &ModelSettings,
    cutoffs: &[i64],
) -> Option<String> {
    let Some((first, _)) = data.order_span() else {
        return Some("no completed orders".into());
    };
    let history_days = (as_of - first) / DAY;
    if history_days < m.min_history_days as i64 {
        return Some(format!(
            "{history_days} days of history, fewer than model.min_history_days = {}",
            m.min_history_days
        ));
    }
    let repeat = (0..data.customers())
        .filter(|&c| {
            let o = data.orders_before(c, as_of);
            o.len() >= 2 && data.order_at[o.end - 1] / DAY > data.order_at[o.start] / DAY
        })
        .count();
    if repeat < m.min_repeat_buyers as usize {
        return Some(format!(
            "{repeat} repeat buyers, fewer than model.min_repeat_buyers = {}",
            m.min_repeat_buyers
        ));
    }
    if cutoffs.is_empty() {
        return Some("no training cutoff fits in the history".into());
    }
    None
}

/// Builds the training sets at `cutoffs` (each capped so all together stay under the row budget).
pub fn training_sets(
    data: &BrandData,
    cutoffs: &[i64],
    m: &ModelSettings,
) -> anyhow::Result<Vec<TrainingSet>> {
    let per_cutoff = (m.max_train_rows as usize / cutoffs.len().max(1)).max(1);
    let fp = feature_params(m);
    let mut sets = Vec::new();
    for &t in cutoffs {
        let snap = match snapshot(data, t, &fp, Some(per_cutoff)) {
            Ok(s) => s,
            Err(crate::features::FeatureError::EmptyPopulation { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        let labels = labels(data, &snap, m.horizon_days)?;
        tracing::info!(
            cutoff = t,
            rows = snap.len(),
            base_rate = labels.base_rate(),
            "training cutoff"
        );
        sets.push(TrainingSet { snap, labels });
    }
    Ok(sets)
}

/// Fits a bundle as of `as_of` on data that must end at or before it (labels of the training
/// cutoffs end at `as_of`). Falls back to the labelled rules on a cold start.
/// `fixed` reuses a classifier recipe chosen earlier (the production fit of `train` reuses the
/// evaluation fit's choice instead of searching again).
pub fn fit_as_of(
    data: &BrandData,
    as_of: i64,
    m: &ModelSettings,
    fixed: Option<super::return_classifier::Choice>,
) -> anyhow::Result<(ModelBundle, Option<String>)> {
    let first = data.order_span().map_or(as_of, |s| s.0);
    let cutoffs = training_cutoffs(as_of, m, first);
    let mut params = bundle_params(m);
    params.classifier.fixed = fixed;
    if let Some(reason) = cold_start_reason(data, as_of, m, &cutoffs) {
        tracing::warn!(%reason, "cold start: using the rule-based fallback");
        let latest = snapshot(
            data,
            as_of,
            &feature_params(m),
            Some(m.max_train_rows as usize),
        )?;
        return Ok((params.rules(data, &latest), Some(reason)));
    }
    let sets = training_sets(data, &cutoffs, m)?;
    match params.fit(data, &sets) {
        Ok(b) => Ok((b, None)),
        Err(super::bundle::BundleError::NoTrainingData) => {
            let reason = "no training cutoff had both returners and non-returners".to_string();
            let latest = snapshot(
                data,
                as_of,
                &feature_params(m),
                Some(m.max_train_rows as usize),
            )?;
            Ok((params.rules(data, &latest), Some(reason)))
        }
        Err(e) => Err(e.into()),
    }
}

// ---- the report -------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct AucOnly {
    pub auc: f64,
    pub pr_auc: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReturnBaselines {
    pub recency: AucOnly,
    pub frequency: AucOnly,
    pub bgnbd: ProbabilityMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbabilityMetrics {
    pub auc: f64,
    pub pr_auc: f64,
    pub brier: f64,
    pub log_loss: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReturnReport {
    pub model: String,
    pub base_rate: f64,
    pub auc: f64,
    pub pr_auc: f64,
    pub brier: f64,
    pub log_loss: f64,
    pub accuracy: f64,
    pub calibration: Vec<CalibrationBin>,
    pub candidates: Vec<super::return_classifier::Candidate>,
    pub baselines: ReturnBaselines,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimingBaseline {
    pub mae_days: f64,
    pub c_index: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimingBaselines {
    pub last_plus_mean_gap: TimingBaseline,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimingReport {
    pub returners: usize,
    /// Mean absolute error of the conditional median, in days, on returners.
    pub mae_days: f64,
    /// Share of returners whose actual day fell inside their predicted window.
    pub window_coverage: f64,
    pub window_nominal: f64,
    /// Harrell's C of the predicted time (restricted mean within H) vs. the observed time
    /// censored at H.
    pub c_index: f64,
    /// Harrell's C of the conditional median alone.
    pub c_index_median: f64,
    pub baselines: TimingBaselines,
}

#[derive(Debug, Clone, Serialize)]
pub struct RankSplit {
    pub n: usize,
    pub hit_at_1: f64,
    pub hit_at_3: f64,
    pub mrr: f64,
    /// The true category was one the customer had bought before.
    pub repeat: RankMetrics,
    /// A category new to the customer.
    pub explore: RankMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryBaselines {
    pub popular: RankSplit,
    pub most_frequent: RankSplit,
    pub last: RankSplit,
}

#[derive(Debug, Clone, Serialize)]
pub struct CategoryReport {
    pub categories: usize,
    pub n: usize,
    pub hit_at_1: f64,
    pub hit_at_3: f64,
    pub mrr: f64,
    pub repeat: RankMetrics,
    pub explore: RankMetrics,
    pub baselines: CategoryBaselines,
}

#[derive(Debug, Clone, Serialize)]
pub struct BgNbdReport {
    pub r: f64,
    pub alpha_days: f64,
    pub a: f64,
    pub b: f64,
    pub log_likelihood: f64,
    pub fitted_on: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// The as-of day in the brand's time zone (see [`BacktestReport::localize`]).
    pub as_of: String,
    #[serde(skip)]
    pub as_of_unix: i64,
    #[serde(skip)]
    pub cutoffs_unix: Vec<i64>,
    pub horizon_days: u32,
    pub customers: usize,
    pub train_rows: usize,
    pub model_kind: ModelKind,
    pub cold_start_reason: Option<String>,
    pub training_cutoffs: Vec<String>,
    #[serde(rename = "return")]
    pub ret: ReturnReport,
    pub timing: TimingReport,
    pub category: Option<CategoryReport>,
    pub bgnbd: BgNbdReport,
}

/// The day of instant `t` (UTC; see [`local_day`] for the brand's days).
pub fn day_string(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

pub fn local_day(t: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp(t, 0).map_or_else(
        || t.to_string(),
        |d| d.with_timezone(&tz).format("%Y-%m-%d").to_string(),
    )
}

/// Scores `bundle` on the snapshot at A against what happened in [A, A + H).
pub fn evaluate(
    bundle: &ModelBundle,
    s: &Snapshot,
    l: &Labels,
    cold_start_reason: Option<String>,
) -> BacktestReport {
    let p = bundle.predict(s);
    report(bundle, s, l, &p, cold_start_reason)
}

fn report(
    bundle: &ModelBundle,
    s: &Snapshot,
    l: &Labels,
    p: &Predictions,
    cold: Option<String>,
) -> BacktestReport {
    let h = l.horizon_days as f64;
    let y = &l.returned;
    let neg_recency: Vec<f64> = s.recency_days.iter().map(|&r| -(r as f64)).collect();
    let freq: Vec<f64> = s.purchase_days.iter().map(|&f| f as f64).collect();
    let bg: Vec<f64> = s.p_return_bgnbd.iter().map(|&v| v as f64).collect();
    let auc_only = |v: &[f64]| AucOnly {
        auc: metrics::roc_auc(v, y),
        pr_auc: metrics::pr_auc(v, y),
    };
    let ret = ReturnReport {
        model: match &bundle.classifier {
            Some(c) => c.name(),
            None => "rules".into(),
        },
        base_rate: l.base_rate(),
        auc: metrics::roc_auc(&p.p_return, y),
        pr_auc: metrics::pr_auc(&p.p_return, y),
        brier: metrics::brier(&p.p_return, y),
        log_loss: metrics::log_loss(&p.p_return, y),
        accuracy: metrics::accuracy(&p.p_return, y),
        calibration: metrics::calibration_table(&p.p_return, y, 10),
        candidates: bundle.candidates.clone(),
        baselines: ReturnBaselines {
            recency: auc_only(&neg_recency),
            frequency: auc_only(&freq),
            bgnbd: ProbabilityMetrics {
                auc: metrics::roc_auc(&bg, y),
                pr_auc: metrics::pr_auc(&bg, y),
                brier: metrics::brier(&bg, y),
                log_loss: metrics::log_loss(&bg, y),
            },
        },
    };

    // Timing: returners for MAE and coverage; everyone (censored at H) for concordance.
    let observed: Vec<f64> = l
        .days_to_return
        .iter()
        .map(|&d| if d.is_nan() { h } else { d })
        .collect();
    let returners: Vec<usize> = (0..s.len()).filter(|&i| y[i]).collect();
    let brand_gap = s.mean_own_gap_days();
    let baseline_day: Vec<f64> = (0..s.len())
        .map(|i| {
            let gap = if s.own_gap_days[i].is_finite() {
                s.own_gap_days[i] as f64
            } else {
                brand_gap
            };
            (gap - s.recency_days[i] as f64).clamp(0.0, h)
        })
        .collect();
    let pick = |v: &[f64]| returners.iter().map(|&i| v[i]).collect::<Vec<_>>();
    let actual = pick(&observed);
    let inside = returners
        .iter()
        .filter(|&&i| observed[i] >= p.lo[i] && observed[i] <= p.hi[i])
        .count();
    let timing = TimingReport {
        returners: returners.len(),
        mae_days: metrics::mae(&pick(&p.median), &actual),
        window_coverage: inside as f64 / returners.len().max(1) as f64,
        window_nominal: bundle.window_coverage,
        c_index: metrics::c_index(&p.restricted_mean, &observed, y),
        c_index_median: metrics::c_index(&p.median, &observed, y),
        baselines: TimingBaselines {
            last_plus_mean_gap: TimingBaseline {
                mae_days: metrics::mae(&pick(&baseline_day), &actual),
                c_index: metrics::c_index(&baseline_day, &observed, y),
            },
        },
    };

    let category = category_report(s, l, p);
    BacktestReport {
        as_of: day_string(s.cutoff),
        as_of_unix: s.cutoff,
        cutoffs_unix: bundle.trained_cutoffs.clone(),
        horizon_days: l.horizon_days,
        customers: s.len(),
        train_rows: bundle.train_rows,
        model_kind: bundle.kind,
        cold_start_reason: cold,
        training_cutoffs: bundle
            .trained_cutoffs
            .iter()
            .map(|&t| day_string(t))
            .collect(),
        ret,
        timing,
        category,
        bgnbd: BgNbdReport {
            r: s.bgnbd.r,
            alpha_days: s.bgnbd.alpha,
            a: s.bgnbd.a,
            b: s.bgnbd.b,
            log_likelihood: s.bgnbd.log_likelihood,
            fitted_on: s.bgnbd.n,
        },
    }
}

fn category_report(s: &Snapshot, l: &Labels, p: &Predictions) -> Option<CategoryReport> {
    let k = s.k;
    let rows: Vec<usize> = (0..s.len())
        .filter(|&i| l.next_category[i] != NO_CAT)
        .collect();
    if k == 0 || rows.is_empty() || p.category.is_empty() {
        return None;
    }
    let repeat: Vec<bool> = rows
        .iter()
        .map(|&i| s.cat_row(&s.cat_orders, i)[l.next_category[i] as usize] > 0.0)
        .collect();
    let split = |ranks: Vec<Option<usize>>| {
        let all = metrics::rank_metrics(&ranks);
        let sub = |want: bool| {
            let r: Vec<Option<usize>> = ranks
                .iter()
                .zip(&repeat)
                .filter(|(_, rp)| **rp == want)
                .map(|(r, _)| *r)
                .collect();
            metrics::rank_metrics(&r)
        };
        RankSplit {
            n: all.n,
            hit_at_1: all.hit_at_1,
            hit_at_3: all.hit_at_3,
            mrr: all.mrr,
            repeat: sub(true),
            explore: sub(false),
        }
    };
    let rank_by = |score: &dyn Fn(usize) -> Vec<f64>| -> Vec<Option<usize>> {
        rows.iter()
            .map(|&i| {
                let sc = score(i);
                let truth = l.next_category[i];
                ranking(&sc).iter().position(|&c| c == truth)
            })
            .collect()
    };
    let pop: Vec<f64> = s.popularity.iter().map(|&v| v as f64).collect();
    // Baselines break ties by popularity (a tiny fraction of it).
    let model = split(rank_by(&|i| {
        p.category[i * k..(i + 1) * k]
            .iter()
            .map(|&v| v as f64)
            .collect()
    }));
    let popular = split(rank_by(&|_| pop.clone()));
    let most_frequent = split(rank_by(&|i| {
        let o = s.cat_row(&s.cat_orders, i);
        (0..k).map(|c| o[c] as f64 + pop[c] * 1e-3).collect()
    }));
    let last = split(rank_by(&|i| {
        (0..k)
            .map(|c| (s.last_cat[i] as usize == c) as u8 as f64 + pop[c] * 1e-3)
            .collect()
    }));
    Some(CategoryReport {
        categories: k,
        n: model.n,
        hit_at_1: model.hit_at_1,
        hit_at_3: model.hit_at_3,
        mrr: model.mrr,
        repeat: model.repeat,
        explore: model.explore,
        baselines: CategoryBaselines {
            popular,
            most_frequent,
            last,
        },
    })
}

/// `retentiond backtest`: train with the protocol on data before A, evaluate on [A, A + H).
pub async fn backtest(
    db: &Db,
    m: &ModelSettings,
    as_of: i64,
) -> anyhow::Result<(BacktestReport, ModelBundle)> {
    let data = load(db, m, as_of, as_of + m.horizon_days as i64 * DAY).await?;
    backtest_on(&data, m, as_of)
}

pub fn backtest_on(
    data: &BrandData,
    m: &ModelSettings,
    as_of: i64,
) -> anyhow::Result<(BacktestReport, ModelBundle)> {
    if as_of + m.horizon_days as i64 * DAY > data.until {
        anyhow::bail!("the evaluation window ends after the loaded data");
    }
    let (bundle, cold) = fit_as_of(data, as_of, m, None)?;
    let eval = snapshot(data, as_of, &feature_params(m), None)?;
    let l = labels(data, &eval, m.horizon_days)?;
    Ok((evaluate(&bundle, &eval, &l, cold), bundle))
}

impl BacktestReport {
    /// Renders the dates as days of the brand's time zone.
    pub fn localize(&mut self, tz: chrono_tz::Tz) {
        self.as_of = local_day(self.as_of_unix, tz);
        self.training_cutoffs = self
            .cutoffs_unix
            .iter()
            .map(|&t| local_day(t, tz))
            .collect();
    }

    /// The readable table `backtest` prints.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let r = &self.ret;
        let _ = writeln!(
            o,
            "Backtest as of {} · horizon {} days · {} customers · {} training rows · {}{}",
            self.as_of,
            self.horizon_days,
            self.customers,
            self.train_rows,
            self.model_kind.as_str(),
            self.cold_start_reason
                .as_ref()
                .map(|r| format!(" (cold start: {r})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "\nWill they return? ({}; base rate {:.3})",
            r.model, r.base_rate
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>7} {:>7} {:>7} {:>8} {:>8}",
            "", "AUC", "PR AUC", "Brier", "log loss", "accuracy"
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>7.3} {:>7.3} {:>7.4} {:>8.4} {:>8.3}",
            "model", r.auc, r.pr_auc, r.brier, r.log_loss, r.accuracy
        );
        let b = &r.baselines;
        let _ = writeln!(
            o,
            "  {:<22} {:>7.3} {:>7.3}",
            "recency", b.recency.auc, b.recency.pr_auc
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>7.3} {:>7.3}",
            "frequency", b.frequency.auc, b.frequency.pr_auc
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>7.3} {:>7.3} {:>7.4} {:>8.4}",
            "BG/NBD", b.bgnbd.auc, b.bgnbd.pr_auc, b.bgnbd.brier, b.bgnbd.log_loss
        );
        let _ = writeln!(o, "  calibration (decile: mean predicted → observed):");
        for (d, c) in r.calibration.iter().enumerate() {
            let _ = writeln!(
                o,
                "    {:>2}  {:.3} → {:.3}  (n={})",
                d + 1,
                c.mean_predicted,
                c.observed_rate,
                c.n
            );
        }
        let t = &self.timing;
        let _ = writeln!(o, "\nWhen? ({} returners)", t.returners);
        let _ = writeln!(
            o,
            "  {:<22} {:>9} {:>9} {:>9}",
            "", "MAE days", "C-index", "coverage"
        );
        let _ = writeln!(
            o,
            "  {:<22} {:>9.2} {:>9.3} {:>9.3}  (nominal {:.2})",
            "model", t.mae_days, t.c_index, t.window_coverage, t.window_nominal
        );
        let lb = &t.baselines.last_plus_mean_gap;
        let _ = writeln!(
            o,
            "  {:<22} {:>9.2} {:>9.3}",
            "last order + mean gap", lb.mae_days, lb.c_index
        );
        match &self.category {
            None => {
                let _ = writeln!(o, "\nWhich category? n/a (no order items)");
            }
            Some(c) => {
                let _ = writeln!(
                    o,
                    "\nWhich category? ({} categories, {} next orders)",
                    c.categories, c.n
                );
                let _ = writeln!(
                    o,
                    "  {:<22} {:>7} {:>7} {:>7} {:>13} {:>13}",
                    "", "hit@1", "hit@3", "MRR", "repeat hit@1", "explore hit@1"
                );
                let line = |o: &mut String,
                            name: &str,
                            h1: f64,
                            h3: f64,
                            mrr: f64,
                            rp: &RankMetrics,
                            ex: &RankMetrics| {
                    let _ = writeln!(
                        o,
                        "  {name:<22} {h1:>7.3} {h3:>7.3} {mrr:>7.3} {:>13.3} {:>13.3}",
                        rp.hit_at_1, ex.hit_at_1
                    );
                };
                line(
                    &mut o, "model", c.hit_at_1, c.hit_at_3, c.mrr, &c.repeat, &c.explore,
                );
                for (name, b) in [
                    ("popular", &c.baselines.popular),
                    ("most frequent", &c.baselines.most_frequent),
                    ("last", &c.baselines.last),
                ] {
                    line(
                        &mut o, name, b.hit_at_1, b.hit_at_3, b.mrr, &b.repeat, &b.explore,
                    );
                }
            }
        }
        let g = &self.bgnbd;
        let _ = writeln!(
            o,
            "\nBG/NBD (days): r={:.3} alpha={:.2} a={:.3} b={:.3} LL={:.1} (n={})",
            g.r, g.alpha_days, g.a, g.b, g.log_likelihood, g.fitted_on
        );
        o
    }
}
