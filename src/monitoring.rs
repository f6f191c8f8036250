//! Model monitoring: does the champion still describe the customers it scores, and did it keep
//! its promises?
//!
//! **Drift.** When a model is trained, the distribution of each base feature on its newest
//! training cutoff is kept with it as deciles ([`FeatureReference`]). Every scoring then
//! computes the population stability index of the scored population against it, per feature,
//! into `feature_drift` (in the scoring's own transaction). PSI above [`PSI_WARN`] is a shift
//! worth retraining for (the usual rule of thumb: < 0.1 stable, 0.1–0.2 moderate, > 0.2 major).
//!
//! **Realized performance.** Once a scoring day's horizon has passed, its scores are checked
//! against what happened, with the same label definitions training uses (a completed order in
//! `[T, T + H)`; the next order's main category): AUC, Brier score and calibration of
//! `p_return`, coverage of the predicted window among returners, and hit@3 of the recommended
//! categories. Each is stored in `score_evaluations` beside what the model promised at training
//! time (its backtest on the latest complete horizon).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::db::{Db, Val};
use crate::features::{BrandData, DAY, LoadOptions, NO_CAT};
use crate::models::metrics::{self, CalibrationBin};
use crate::scan::{Bind, scan_with};

/// A feature whose PSI is above this has shifted enough to warn.
pub const PSI_WARN: f64 = 0.2;
/// Reference bins per feature (deciles).
const BINS: usize = 10;
/// Share given to an empty bin, so PSI stays finite (the usual smoothing).
const EMPTY_SHARE: f64 = 1e-4;

/// One feature's reference distribution: the cut points between bins (ascending, distinct) and
/// the share of training rows in each bin (`edges.len() + 1` bins; a value equal to an edge
/// falls in the bin above it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureBins {
    pub name: String,
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

/// The training population's feature distributions, stored with the model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FeatureReference {
    /// Unix seconds of the snapshot it describes.
    pub cutoff: i64,
    pub rows: usize,
    pub features: Vec<FeatureBins>,
}

fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|&e| e <= v)
}

impl FeatureReference {
    /// Deciles of every column of a row-major `rows × names.len()` matrix. Ties collapse bins
    /// (a feature that is mostly 0 gets few), so each bin's share is measured, not assumed.
    pub fn build(cutoff: i64, names: &[String], matrix: &[f32]) -> FeatureReference {
        let nb = names.len();
        let rows = if nb == 0 { 0 } else { matrix.len() / nb };
        let mut features = Vec::with_capacity(nb);
        let mut col: Vec<f64> = Vec::with_capacity(rows);
        for (j, name) in names.iter().enumerate() {
            col.clear();
            col.extend(
                (0..rows)
                    .map(|i| matrix[i * nb + j] as f64)
                    .filter(|v| v.is_finite()),
            );
            col.sort_unstable_by(f64::total_cmp);
            let mut edges: Vec<f64> = Vec::new();
            if !col.is_empty() {
                for b in 1..BINS {
                    let q = col[(b * col.len() / BINS).min(col.len() - 1)];
                    // The minimum is no cut point: nothing would fall below it.
                    if q > col[0] && edges.last().is_none_or(|&l| q > l) {
                        edges.push(q);
                    }
                }
                edges = around_atoms(&col, edges);
            }
            let mut counts = vec![0usize; edges.len() + 1];
            for &v in &col {
                counts[bin_of(&edges, v)] += 1;
            }
            let total = col.len().max(1) as f64;
            features.push(FeatureBins {
                name: name.clone(),
                edges,
                shares: counts.iter().map(|&c| c as f64 / total).collect(),
            });
        }
        FeatureReference {
            cutoff,
            rows,
            features,
        }
    }

    /// PSI of every feature of `matrix` (same layout and columns) against the reference.
    pub fn psi(&self, matrix: &[f32]) -> Vec<(String, f64)> {
        let nb = self.features.len();
        if nb == 0 {
            return Vec::new();
        }
        let rows = matrix.len() / nb;
        self.features
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let mut counts = vec![0usize; f.shares.len()];
                let mut n = 0usize;
                for i in 0..rows {
                    let v = matrix[i * nb + j] as f64;
                    if v.is_finite() {
                        counts[bin_of(&f.edges, v)] += 1;
                        n += 1;
                    }
                }
                let actual: Vec<f64> = counts.iter().map(|&c| c as f64 / n.max(1) as f64).collect();
                (f.name.clone(), psi(&f.shares, &actual))
            })
            .collect()
    }
}

/// Values held by at least this share of rows are atoms (see [`around_atoms`]).
const ATOM_SHARE: f64 = 0.5 / BINS as f64;

/// Moves cut points off atoms. A feature can give many customers the very same value, derived
/// from the whole population: `gap_mean_log` of a one-order customer is the brand's mean gap
/// between orders, for a third or more of the customers. A decile cut point then sits exactly
/// on that value, and the next day's mean gap, a hair lower, moves the whole atom into the bin
/// below: a PSI of 0.7 for a population that did not change. Each atom instead gets a bin of
/// its own reaching halfway to the neighbouring cut points (or values), so it can drift a
/// little without changing bin. `col` is sorted and finite; `edges` ascending.
fn around_atoms(col: &[f64], edges: Vec<f64>) -> Vec<f64> {
    let min_count = ((col.len() as f64 * ATOM_SHARE).ceil() as usize).max(2);
    let mut atoms = Vec::new();
    let mut i = 0;
    while i < col.len() {
        let j = col.partition_point(|&v| v <= col[i]);
        if j - i >= min_count {
            atoms.push(col[i]);
        }
        i = j;
    }
    if atoms.is_empty() {
        return edges;
    }
    let (lo, hi) = (col[0], col[col.len() - 1]);
    let mut out: Vec<f64> = edges
        .iter()
        .copied()
        .filter(|e| !atoms.contains(e))
        .collect();
    // Neighbours: the other cut points and atoms.
    let points: Vec<f64> = out.iter().chain(&atoms).copied().collect();
    for &a in &atoms {
        // The nearest neighbour (or the extreme value) on each side.
        let below = points
            .iter()
            .copied()
            .filter(|&e| e < a)
            .fold(f64::NAN, f64::max);
        let below = if below.is_nan() && lo < a { lo } else { below };
        let above = points
            .iter()
            .copied()
            .filter(|&e| e > a)
            .fold(f64::NAN, f64::min);
        let above = if above.is_nan() && hi > a { hi } else { above };
        if below.is_finite() {
            out.push((below + a) / 2.0);
        }
        if above.is_finite() {
            out.push((a + above) / 2.0);
        }
    }
    out.sort_unstable_by(f64::total_cmp);
    out.dedup();
    // A cut point at or below the minimum would leave an empty first bin.
    out.retain(|&e| e > lo);
    out
}

/// Population stability index of `actual` shares against `expected` shares (same bins):
/// Σ (a − e) · ln(a / e), with empty bins given a small share.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(EMPTY_SHARE), a.max(EMPTY_SHARE));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Writes a scoring day's drift rows (inside the scoring's transaction).
pub async fn store_drift(
    tx: &mut crate::db::Tx,
    as_of_date: &str,
    model_version_id: i64,
    reference_cutoff: i64,
    drift: &[(String, f64)],
) -> sqlx::Result<()> {
    tx.execute(
        "DELETE FROM feature_drift WHERE as_of_date = $1",
        &[Val::Text(Some(as_of_date.into()))],
    )
    .await?;
    let rows: Vec<Vec<Val>> = drift
        .iter()
        .map(|(f, p)| {
            vec![
                Val::Text(Some(as_of_date.into())),
                Val::Text(Some(f.clone())),
                Val::Int(Some(model_version_id)),
                Val::Int(Some(reference_cutoff)),
                Val::Real(Some(*p)),
            ]
        })
        .collect();
    tx.insert_rows(
        "feature_drift",
        &[
            "as_of_date",
            "feature",
            "model_version_id",
            "reference_cutoff",
            "psi",
        ],
        &rows,
    )
    .await?;
    Ok(())
}

/// The latest scoring day's drift, largest PSI first.
pub async fn latest_drift(db: &Db) -> anyhow::Result<Option<(String, Vec<(String, f64)>)>> {
    let mut day: Option<String> = None;
    scan_with(db, "SELECT MAX(as_of_date) FROM feature_drift", &[], |r| {
        day = r.text(0)?.map(str::to_string);
        Ok(())
    })
    .await?;
    let Some(day) = day else { return Ok(None) };
    let mut rows = Vec::new();
    scan_with(
        db,
        "SELECT feature, psi FROM feature_drift WHERE as_of_date = $1",
        &[Bind::Text(&day)],
        |r| {
            rows.push((
                r.text(0)?.unwrap_or_default().to_string(),
                r.real(1)?.unwrap_or(0.0),
            ));
            Ok(())
        },
    )
    .await?;
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Some((day, rows)))
}

/// A matured scoring day checked against what happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoreEvaluation {
    pub as_of_date: String,
    pub as_of: i64,
    pub model_version_id: i64,
    pub horizon_days: i64,
    pub customers: usize,
    pub returners: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub base_rate: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub auc: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub brier: f64,
    /// Share of returners whose first order fell inside `[window_lo_days, window_hi_days]`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub window_coverage: f64,
    /// Share of returners with a categorised next order whose category was in the top 3.
    #[serde(deserialize_with = "f64_or_nan")]
    pub hit_at_3: f64,
    pub calibration: Vec<CalibrationBin>,
    /// The model's backtest figures when it was trained (None when not recorded).
    pub promised_auc: Option<f64>,
    pub promised_window_coverage: Option<f64>,
    pub promised_hit_at_3: Option<f64>,
}

/// Evaluates every scoring day whose horizon has passed by `now`, that has not been evaluated
/// yet and whose scores housekeeping has not pruned (newest first, at most `max_days` per call,
/// so a first run over a long history stays bounded). Returns what it evaluated.
pub async fn evaluate_matured(
    db: &Db,
    bot_events_per_day: u32,
    now: i64,
    max_days: usize,
) -> anyhow::Result<Vec<ScoreEvaluation>> {
    let mut due: Vec<(String, i64, i64, i64)> = Vec::new();
    scan_with(
        db,
        // The horizon comes from the model that scored the day (one row), not from its scores.
        "SELECT r.as_of_date, r.as_of, r.model_version_id, v.horizon_days \
         FROM scoring_runs r JOIN model_versions v ON v.model_version_id = r.model_version_id \
         WHERE NOT EXISTS (SELECT 1 FROM score_evaluations e WHERE e.as_of_date = r.as_of_date) \
           AND EXISTS (SELECT 1 FROM scores s WHERE s.as_of_date = r.as_of_date) \
         ORDER BY r.as_of_date DESC",
        &[],
        |r| {
            if let (Some(d), Some(at), Some(v), Some(h)) =
                (r.text(0)?, r.int(1)?, r.int(2)?, r.int(3)?)
            {
                if at + h * DAY <= now {
                    due.push((d.to_string(), at, v, h));
                }
            }
            Ok(())
        },
    )
    .await?;
    due.truncate(max_days);
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let until = due.iter().map(|d| d.1 + d.3 * DAY).max().unwrap_or(now);
    // Orders only: browsing is not needed for labels (an empty browsing window).
    let data = BrandData::load(
        db,
        LoadOptions {
            until,
            browse_from: until,
            bot_events_per_day,
            sales_from: None,
        },
    )
    .await?;
    let index: HashMap<&str, usize> = data
        .customer_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let cat_index: HashMap<&str, u16> = data
        .categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u16))
        .collect();
    let promised: HashMap<i64, serde_json::Value> = crate::models::registry::list(db)
        .await?
        .into_iter()
        .map(|v| (v.model_version_id, v.metrics))
        .collect();
    let mut out = Vec::new();
    for (day, as_of, version, h) in due {
        let end = as_of + h * DAY;
        let (mut p, mut y) = (Vec::new(), Vec::new());
        let (mut returners, mut inside, mut with_cat, mut hits) = (0usize, 0usize, 0usize, 0usize);
        scan_with(
            db,
            "SELECT customer_id, p_return, window_lo_days, window_hi_days, category_1, category_2, category_3 FROM scores WHERE as_of_date = $1",
            &[Bind::Text(&day)],
            |r| {
                let Some(&c) = index.get(r.text(0)?.unwrap_or_default()) else { return Ok(()) };
                let first = data.orders_before(c, as_of).end;
                let returned = first < data.orders_of(c).end && data.order_at[first] < end;
                p.push(r.real(1)?.unwrap_or(0.0));
                y.push(returned);
                if returned {
                    returners += 1;
                    let days = (data.order_at[first] - as_of) as f64 / DAY as f64;
                    let (lo, hi) = (r.int(2)?.unwrap_or(0) as f64, r.int(3)?.unwrap_or(0) as f64);
                    inside += usize::from(days >= lo && days <= hi);
                    let truth = data.main_category(first);
                    if truth != NO_CAT {
                        with_cat += 1;
                        let top = [r.text(4)?, r.text(5)?, r.text(6)?];
                        hits += usize::from(top.iter().flatten().any(|name| cat_index.get(name) == Some(&truth)));
                    }
                }
                Ok(())
            },
        )
        .await?;
        let m = promised.get(&version).map(|v| &v["evaluation"]);
        let pick = |path: [&str; 2]| m.and_then(|v| v[path[0]][path[1]].as_f64());
        let share = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        let e = ScoreEvaluation {
            as_of_date: day,
            as_of,
            model_version_id: version,
            horizon_days: h,
            customers: p.len(),
            returners,
            base_rate: share(returners, p.len()),
            auc: metrics::roc_auc(&p, &y),
            brier: metrics::brier(&p, &y),
            window_coverage: share(inside, returners),
            hit_at_3: share(hits, with_cat),
            calibration: metrics::calibration_table(&p, &y, BINS),
            promised_auc: pick(["return", "auc"]),
            promised_window_coverage: pick(["timing", "window_coverage"]),
            promised_hit_at_3: pick(["category", "hit_at_3"]),
        };
        store_evaluation(db, &e, now).await?;
        tracing::info!(day = %e.as_of_date, auc = e.auc, coverage = e.window_coverage, hit_at_3 = e.hit_at_3, "matured scores evaluated");
        out.push(e);
    }
    Ok(out)
}

/// serde_json writes NaN (a metric with nothing to measure) as `null`; read it back as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn real(v: f64) -> Val {
    Val::Real(v.is_finite().then_some(v))
}

async fn store_evaluation(db: &Db, e: &ScoreEvaluation, now: i64) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    tx.execute(
        "DELETE FROM score_evaluations WHERE as_of_date = $1",
        &[Val::Text(Some(e.as_of_date.clone()))],
    )
    .await?;
    tx.insert_rows(
        "score_evaluations",
        &[
            "as_of_date",
            "model_version_id",
            "evaluated_at",
            "customers",
            "auc",
            "brier",
            "window_coverage",
            "hit_at_3",
            "promised_auc",
            "promised_window_coverage",
            "promised_hit_at_3",
            "detail",
        ],
        &[vec![
            Val::Text(Some(e.as_of_date.clone())),
            Val::Int(Some(e.model_version_id)),
            Val::Int(Some(now)),
            Val::Int(Some(e.customers as i64)),
            real(e.auc),
            real(e.brier),
            real(e.window_coverage),
            real(e.hit_at_3),
            Val::Real(e.promised_auc),
            Val::Real(e.promised_window_coverage),
            Val::Real(e.promised_hit_at_3),
            Val::Text(Some(serde_json::to_string(e)?)),
        ]],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Every stored evaluation, oldest scoring day first.
pub async fn evaluations(db: &Db) -> anyhow::Result<Vec<ScoreEvaluation>> {
    let mut out = Vec::new();
    scan_with(
        db,
        "SELECT detail FROM score_evaluations ORDER BY as_of_date",
        &[],
        |r| {
            if let Some(e) = r
                .text(0)?
                .and_then(|j| serde_json::from_str::<ScoreEvaluation>(j).ok())
            {
                out.push(e);
            }
            Ok(())
        },
    )
    .await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_matches_a_hand_computed_value() {
        // (0.3 − 0.5)·ln(0.3/0.5) + (0.7 − 0.5)·ln(0.7/0.5)
        let want = -0.2 * (0.6f64).ln() + 0.2 * (1.4f64).ln();
        assert!((psi(&[0.5, 0.5], &[0.3, 0.7]) - want).abs() < 1e-12);
        assert_eq!(psi(&[0.2, 0.8], &[0.2, 0.8]), 0.0);
        // An emptied bin stays finite and large.
        assert!(psi(&[0.5, 0.5], &[0.0, 1.0]).is_finite() && psi(&[0.5, 0.5], &[0.0, 1.0]) > 2.0);
    }

    fn matrix(cols: &[Vec<f32>]) -> Vec<f32> {
        let rows = cols[0].len();
        (0..rows)
            .flat_map(|i| cols.iter().map(move |c| c[i]))
            .collect()
    }

    #[test]
    fn same_population_is_stable_and_a_shift_is_flagged() {
        let names = vec!["x".to_string(), "mostly_zero".to_string()];
        let x: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 10_000) as f32 / 100.0)
            .collect();
        let z: Vec<f32> = (0..10_000)
            .map(|i| if i % 10 == 0 { 1.0 } else { 0.0 })
            .collect();
        let r = FeatureReference::build(0, &names, &matrix(&[x.clone(), z.clone()]));
        assert_eq!(r.rows, 10_000);
        assert_eq!(r.features[0].shares.len(), 10, "{:?}", r.features[0]);
        // Ties collapse the mostly-zero feature to two bins, with measured shares.
        assert_eq!(r.features[1].shares, vec![0.9, 0.1]);
        let same = r.psi(&matrix(&[x.clone(), z.clone()]));
        assert!(same.iter().all(|(_, p)| *p < 1e-9), "{same:?}");
        // Shift x by a fifth of its range; make the rare value common.
        let shifted: Vec<f32> = x.iter().map(|v| v + 20.0).collect();
        let common: Vec<f32> = (0..10_000)
            .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
            .collect();
        let d = r.psi(&matrix(&[shifted, common]));
        assert!(d[0].1 > PSI_WARN && d[1].1 > PSI_WARN, "{d:?}");
        // A small sample of the same distribution stays under the warning level.
        let sample: Vec<f32> = x.iter().step_by(7).copied().collect();
        let zs: Vec<f32> = z.iter().step_by(7).copied().collect();
        let s = r.psi(&matrix(&[sample, zs]));
        assert!(s.iter().all(|(_, p)| *p < 0.05), "{s:?}");
    }

    /// `gap_mean_log` in miniature: 40% of the customers (one order each) share the brand's
    /// mean gap; the others spread around it. The next day the brand's mean gap is a hair
    /// lower: the population did not change, and PSI must not say it did (it said 0.7+ when a
    /// decile cut point sat on the atom).
    #[test]
    fn an_atom_that_moves_a_hair_is_not_drift() {
        let prior = 4.1f32;
        let col = |atom: f32| -> Vec<f32> {
            (0..20_000)
                .map(|i| {
                    if i % 5 < 2 {
                        atom
                    } else {
                        3.0 + ((i * 7919) % 20_000) as f32 / 20_000.0 * 2.5
                    }
                })
                .collect()
        };
        let r = FeatureReference::build(0, &["gap_mean_log".into()], &col(prior));
        for atom in [
            prior - 0.01,
            prior - 0.001,
            prior,
            prior + 0.001,
            prior + 0.01,
        ] {
            let p = r.psi(&col(atom))[0].1;
            assert!(
                p < 0.01,
                "atom at {atom} (trained at {prior}): PSI {p}; bins {:?}",
                r.features[0]
            );
        }
        // A real move of the atom (the mean gap doubling) is still drift.
        let p = r.psi(&col(prior + 0.7))[0].1;
        assert!(p > PSI_WARN, "{p}");
    }

    #[test]
    fn an_evaluation_with_nothing_to_measure_round_trips() {
        let e = ScoreEvaluation {
            as_of_date: "2026-07-01".into(),
            as_of: 1,
            model_version_id: 2,
            horizon_days: 90,
            customers: 3,
            returners: 0,
            base_rate: 0.0,
            auc: f64::NAN,
            brier: 0.1,
            window_coverage: f64::NAN,
            hit_at_3: f64::NAN,
            calibration: vec![],
            promised_auc: Some(0.7),
            promised_window_coverage: None,
            promised_hit_at_3: None,
        };
        let back: ScoreEvaluation =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(
            back.auc.is_nan()
                && back.hit_at_3.is_nan()
                && back.brier == 0.1
                && back.promised_auc == Some(0.7)
        );
    }

    #[test]
    fn values_on_an_edge_fall_in_the_bin_above() {
        assert_eq!(bin_of(&[1.0, 2.0], 0.5), 0);
        assert_eq!(bin_of(&[1.0, 2.0], 1.0), 1);
        assert_eq!(bin_of(&[1.0, 2.0], 2.5), 2);
        let r = FeatureReference::build(0, &["c".into()], &[3.0; 50]);
        assert!(r.features[0].edges.is_empty());
        assert_eq!(r.psi(&[3.0; 20])[0].1, 0.0);
    }
}
