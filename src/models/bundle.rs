//! The three predictions fitted together on one training set: what `train` stores in the
//! registry and `score` loads.

use serde::{Deserialize, Serialize};

use super::category::{CategoryParams, Example, FittedCategory};
use super::return_classifier::{Candidate, FittedReturnClassifier, ReturnClassifierParams};
use super::return_time::{FittedReturnTime, ReturnTimeParams};
use super::rules::RulesModel;
use crate::features::labels::Labels;
use crate::features::{BrandData, FeatureSchema, NB, NO_CAT, Snapshot, keep_customer, salt};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Fitted models.
    Model,
    /// The cold-start rules (too little history to fit).
    Rules,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Model => "model",
            ModelKind::Rules => "rules",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleParams {
    pub horizon_days: u32,
    pub window_coverage: f64,
    pub classifier: ReturnClassifierParams,
    pub timing: ReturnTimeParams,
    pub category: CategoryParams,
    /// Returners used to fit the timing model (deterministic sample). Default 10 000: the hazard has ~45 coefficients; on the 20 k synthetic backtest, 20 000 rows instead moved the MAE by 0.04 days and the C-index by 0.001 at twice the cost.
    pub max_timing_rows: usize,
    /// Returners used to fit the category model. Default 30 000.
    pub max_category_rows: usize,
}

impl BundleParams {
    pub fn new(horizon_days: u32, window_coverage: f64) -> Self {
        BundleParams {
            horizon_days,
            window_coverage,
            classifier: ReturnClassifierParams::default(),
            timing: ReturnTimeParams::default(),
            category: CategoryParams::default(),
            max_timing_rows: 10_000,
            max_category_rows: 30_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelBundle {
    pub kind: ModelKind,
    pub schema: FeatureSchema,
    pub horizon_days: u32,
    pub window_coverage: f64,
    /// Training cutoffs (Unix seconds), newest first.
    pub trained_cutoffs: Vec<i64>,
    pub train_rows: usize,
    pub classifier: Option<FittedReturnClassifier>,
    /// Every classifier candidate's score on the validation fold.
    pub candidates: Vec<Candidate>,
    pub timing: Option<FittedReturnTime>,
    pub category: Option<FittedCategory>,
    pub rules: Option<RulesModel>,
    /// Deciles of each base feature on the newest training cutoff: what scoring measures drift
    /// against (absent in models stored before monitoring existed).
    #[serde(default)]
    pub feature_reference: Option<crate::monitoring::FeatureReference>,
}

/// A training cutoff's snapshot and its labels.
pub struct TrainingSet {
    pub snap: Snapshot,
    pub labels: Labels,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no training cutoff has both returners and non-returners")]
    NoTrainingData,
    #[error(
        "the model was trained on feature schema {model} but the data has {data} (categories changed?): run `retentiond train`"
    )]
    SchemaMismatch { model: String, data: String },
    #[error(transparent)]
    Classifier(#[from] super::return_classifier::ReturnClassifierError),
    #[error(transparent)]
    Linear(#[from] super::linear::LinearError),
}

fn reference(s: &Snapshot) -> crate::monitoring::FeatureReference {
    let names: Vec<String> = crate::features::BASE_FEATURES
        .iter()
        .map(|s| s.to_string())
        .collect();
    crate::monitoring::FeatureReference::build(s.cutoff, &names, &s.base)
}

fn base_f64(s: &Snapshot, rows: impl Iterator<Item = usize>, out: &mut Vec<f64>) {
    for i in rows {
        out.extend(s.row(i).iter().map(|&v| v as f64));
    }
}

impl BundleParams {
    /// Fits on `sets` (newest cutoff first). The newest cutoff is the validation fold of the
    /// classifier; with a single cutoff a fifth of its customers (by id hash) is.
    pub fn fit(&self, data: &BrandData, sets: &[TrainingSet]) -> Result<ModelBundle, BundleError> {
        let sets: Vec<&TrainingSet> = sets.iter().filter(|t| !t.snap.is_empty()).collect();
        if sets.is_empty() {
            return Err(BundleError::NoTrainingData);
        }
        let (mut fit_x, mut fit_y, mut val_x, mut val_y) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (n, t) in sets.iter().enumerate() {
            for i in 0..t.snap.len() {
                let id = &data.customer_ids[t.snap.customers[i] as usize];
                let is_val = if sets.len() > 1 {
                    n == 0
                } else {
                    !keep_customer(id, 0.8, salt::FOLD)
                };
                let (x, y) = if is_val {
                    (&mut val_x, &mut val_y)
                } else {
                    (&mut fit_x, &mut fit_y)
                };
                base_f64(&t.snap, std::iter::once(i), x);
                y.push(t.labels.returned[i]);
            }
        }
        let has_both = |y: &[bool]| y.iter().any(|&b| b) && y.iter().any(|&b| !b);
        if !has_both(&fit_y) || !has_both(&val_y) {
            return Err(BundleError::NoTrainingData);
        }
        // The classifier (GBT uses both cores itself) runs beside the timing and category fits
        // (single-threaded linfa): two cores, two lanes.
        let (classifier_result, rest) = std::thread::scope(|scope| {
            let lane = scope.spawn(|| -> Result<_, BundleError> {
                let timing = self.fit_timing(data, &sets)?;
                let category = self.fit_category(data, &sets)?;
                Ok((timing, category))
            });
            let clock = std::time::Instant::now();
            let c = self.classifier.fit(&fit_x, &fit_y, &val_x, &val_y, NB);
            if let Ok((m, _)) = &c {
                tracing::info!(
                    chosen = m.name(),
                    rows = fit_y.len() + val_y.len(),
                    secs = clock.elapsed().as_secs_f32(),
                    "return classifier fitted"
                );
            }
            (c, lane.join().expect("fit lane panicked"))
        });
        let (classifier, candidates) = classifier_result?;
        let (timing, category) = rest?;

        Ok(ModelBundle {
            kind: ModelKind::Model,
            schema: FeatureSchema::new(&data.categories),
            horizon_days: self.horizon_days,
            window_coverage: self.window_coverage,
            trained_cutoffs: sets.iter().map(|t| t.snap.cutoff).collect(),
            train_rows: fit_y.len() + val_y.len(),
            classifier: Some(classifier),
            candidates,
            timing: Some(timing),
            category,
            rules: None,
            feature_reference: Some(reference(&sets[0].snap)),
        })
    }

    fn fit_timing(
        &self,
        data: &BrandData,
        sets: &[&TrainingSet],
    ) -> Result<FittedReturnTime, BundleError> {
        let clock = std::time::Instant::now();
        // Returners only (see return_time.rs), a deterministic sample.
        let returners: usize = sets
            .iter()
            .map(|t| t.labels.returned.iter().filter(|&&r| r).count())
            .sum();
        let share = self.max_timing_rows as f64 / returners.max(1) as f64;
        let (mut tx, mut td) = (Vec::new(), Vec::new());
        for t in sets {
            for i in 0..t.snap.len() {
                if t.labels.returned[i]
                    && keep_customer(
                        &data.customer_ids[t.snap.customers[i] as usize],
                        share,
                        salt::TIMING,
                    )
                {
                    base_f64(&t.snap, std::iter::once(i), &mut tx);
                    td.push(t.labels.days_to_return[i]);
                }
            }
        }
        let timing = self.timing.fit(&tx, &td, self.horizon_days as f64)?;
        tracing::info!(
            rows = td.len(),
            secs = clock.elapsed().as_secs_f32(),
            "timing model fitted"
        );
        Ok(timing)
    }

    fn fit_category(
        &self,
        data: &BrandData,
        sets: &[&TrainingSet],
    ) -> Result<Option<FittedCategory>, BundleError> {
        let clock = std::time::Instant::now();
        let k = data.categories.len();
        let with_cat: usize = sets
            .iter()
            .map(|t| {
                t.labels
                    .next_category
                    .iter()
                    .filter(|&&c| c != NO_CAT)
                    .count()
            })
            .sum();
        let share = self.max_category_rows as f64 / with_cat.max(1) as f64;
        let mut examples = Vec::new();
        for t in sets {
            for i in 0..t.snap.len() {
                let id = &data.customer_ids[t.snap.customers[i] as usize];
                if t.labels.next_category[i] != NO_CAT && keep_customer(id, share, salt::CATEGORY) {
                    examples.push(Example {
                        snap: &t.snap,
                        i,
                        truth: t.labels.next_category[i],
                        customer_id: id,
                    });
                }
            }
        }
        if k == 0 || examples.is_empty() {
            return Ok(None);
        }
        let category = self.category.fit(k, &examples)?;
        tracing::info!(
            rows = examples.len(),
            secs = clock.elapsed().as_secs_f32(),
            "category model fitted"
        );
        Ok(Some(category))
    }

    /// The cold-start bundle: rules only, set from the latest snapshot.
    pub fn rules(&self, data: &BrandData, latest: &Snapshot) -> ModelBundle {
        ModelBundle {
            kind: ModelKind::Rules,
            schema: FeatureSchema::new(&data.categories),
            horizon_days: self.horizon_days,
            window_coverage: self.window_coverage,
            trained_cutoffs: vec![latest.cutoff],
            train_rows: 0,
            classifier: None,
            candidates: vec![],
            timing: None,
            category: None,
            rules: Some(RulesModel::from_snapshot(latest)),
            feature_reference: Some(reference(latest)),
        }
    }
}

/// Rows predicted at a time.
const PREDICT_CHUNK: usize = 65_536;

/// Predictions for every row of a snapshot.
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub p_return: Vec<f64>,
    pub p_alive: Vec<f64>,
    /// Predicted window (days from the as-of instant): conditional quantiles.
    pub lo: Vec<f64>,
    pub median: Vec<f64>,
    pub hi: Vec<f64>,
    /// P(return by the end of the window) = p_return · F(hi).
    pub p_by_hi: Vec<f64>,
    /// E[min(T, H)]: the time ranking used for concordance.
    pub restricted_mean: Vec<f64>,
    /// Row-major `rows × k` category probabilities (empty without a category model or items).
    pub category: Vec<f32>,
    pub k: usize,
}

impl ModelBundle {
    /// Deserialized models need a moment to rebuild (the GBT booster from its JSON).
    pub fn ready(&mut self) -> Result<(), BundleError> {
        if let Some(c) = &mut self.classifier {
            c.ready()?;
        }
        Ok(())
    }

    pub fn check_schema(&self, s: &FeatureSchema) -> Result<(), BundleError> {
        if self.schema != *s {
            return Err(BundleError::SchemaMismatch {
                model: self.schema.hash(),
                data: s.hash(),
            });
        }
        Ok(())
    }

    pub fn predict(&self, s: &Snapshot) -> Predictions {
        let n = s.len();
        let h = self.horizon_days as f64;
        let mut p = Predictions {
            p_return: vec![0.0; n],
            p_alive: s.p_alive.iter().map(|&v| v as f64).collect(),
            lo: vec![0.0; n],
            median: vec![0.0; n],
            hi: vec![0.0; n],
            p_by_hi: vec![0.0; n],
            restricted_mean: vec![0.0; n],
            category: Vec::new(),
            k: s.k,
        };
        // The category model runs on a second core beside the return and timing models: the
        // rows are the same, the outputs disjoint.
        let category = std::thread::scope(|scope| {
            let category = scope.spawn(|| self.predict_categories(s));
            match (&self.classifier, &self.timing, &self.rules) {
                (Some(classifier), Some(timing), _) => {
                    // In chunks: an f64 copy of the whole population (and the GBT's column-major
                    // copy of it) would be ~460 MB at 1 M customers. Rows are independent.
                    let mut x = Vec::with_capacity(PREDICT_CHUNK.min(n) * NB);
                    for start in (0..n).step_by(PREDICT_CHUNK) {
                        let end = (start + PREDICT_CHUNK).min(n);
                        x.clear();
                        base_f64(s, start..end, &mut x);
                        let pr = classifier.predict(&x, NB);
                        p.p_return[start..end].copy_from_slice(&pr);
                        for (j, i) in (start..end).enumerate() {
                            let cdf = timing.cdf(&x[j * NB..(j + 1) * NB]);
                            let t = timing.timing(&cdf, self.window_coverage);
                            p.lo[i] = t.lo;
                            p.median[i] = t.median;
                            p.hi[i] = t.hi;
                            let f_hi = timing.quantile_cdf(&cdf, t.hi);
                            p.p_by_hi[i] = p.p_return[i] * f_hi;
                            p.restricted_mean[i] = timing.restricted_mean(&cdf, p.p_return[i]);
                        }
                    }
                }
                (_, _, Some(rules)) => {
                    for i in 0..n {
                        let r = rules.predict(s, i, h);
                        p.p_return[i] = r.p_return;
                        p.p_alive[i] = r.p_alive;
                        p.lo[i] = r.lo;
                        p.median[i] = r.median;
                        p.hi[i] = r.hi;
                        p.p_by_hi[i] = r.p_return * if r.hi >= h { 1.0 } else { 0.75 };
                        // A point prediction: the return is at the median with probability p.
                        p.restricted_mean[i] = r.p_return * r.median + (1.0 - r.p_return) * h;
                    }
                }
                _ => unreachable!("a bundle has models or rules"),
            }
            category
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        });
        p.category = category;
        p
    }

    /// Per customer, the probability of each category next (`k` a row; empty without categories).
    fn predict_categories(&self, s: &Snapshot) -> Vec<f32> {
        let n = s.len();
        let mut out = Vec::new();
        if s.k > 0 {
            out.reserve(n * s.k);
            for i in 0..n {
                let probs = match (&self.category, &self.rules) {
                    (Some(c), _) => c.predict(s, i),
                    (None, Some(r)) => r.categories(s, i),
                    (None, None) => s.popularity.iter().map(|&v| v as f64).collect(),
                };
                out.extend(probs.iter().map(|&v| v as f32));
            }
        }
        out
    }
}
