//! 1 — Will they return: P(a completed order within H days).
//!
//! Candidates: L2 logistic regression on robust-scaled features over a grid of regularization
//! strengths and class weights, and gradient-boosted trees. Each is fitted on the older
//! training cutoffs and judged on the newest one (a later time window), by log loss; the
//! winner is refitted on all training rows. Class weights are applied by replicating the
//! minority class with an exact intercept correction, so probabilities stay calibrated.

use serde::{Deserialize, Serialize};

use super::calibration::Isotonic;
use super::gbt::{FittedGbt, GbtParams};
use super::linear::{Logistic, RobustScaler};
use super::metrics;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnClassifierParams {
    /// L2 strengths tried (linfa's `alpha`, on a summed loss). Default [0.1, 1, 10, 100].
    pub alphas: Vec<f64>,
    /// Try the "balanced" class weight besides none. Default true.
    pub try_class_weights: bool,
    /// Try gradient-boosted trees. Default true.
    pub try_gbt: bool,
    pub gbt: GbtParams,
    /// Candidates are compared on at most this many fit rows (a deterministic stride sample;
    /// the winner is refitted on all rows). Default 100000.
    pub max_search_rows: usize,
    /// Trees are only tried with at least this many training rows: on small brands their
    /// variance across time windows outweighs their gain (on CDNOW, 9 k rows, they won the
    /// validation window and lost the next one). Default 20000.
    pub min_gbt_rows: usize,
    /// Skip the search and fit this candidate (e.g. the one an evaluation fit chose).
    pub fixed: Option<Choice>,
}

/// A candidate recipe.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub enum Choice {
    Logistic { alpha: f64, positive_weight: usize },
    Gbt,
}

impl Default for ReturnClassifierParams {
    fn default() -> Self {
        ReturnClassifierParams {
            alphas: vec![0.1, 1.0, 10.0, 100.0],
            try_class_weights: true,
            try_gbt: true,
            gbt: GbtParams::default(),
            max_search_rows: 100_000,
            min_gbt_rows: 20_000,
            fixed: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Learner {
    Logistic {
        scaler: RobustScaler,
        model: Logistic,
        alpha: f64,
        positive_weight: usize,
    },
    Gbt(FittedGbt),
}

/// The chosen learner refitted on all rows, with the isotonic calibration learned on the
/// validation fold from the same recipe fitted without it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FittedReturnClassifier {
    pub learner: Learner,
    pub calibration: Option<Isotonic>,
}

/// One candidate's score on the validation fold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Candidate {
    pub name: String,
    pub validation_auc: f64,
    pub validation_log_loss: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReturnClassifierError {
    #[error(transparent)]
    Linear(#[from] super::linear::LinearError),
    #[error(transparent)]
    Gbt(#[from] super::gbt::GbtError),
}

impl ReturnClassifierParams {
    /// `fit_*` rows train candidates, `val_*` rows judge them, then the winner is refitted on
    /// fit + validation rows. Matrices are row-major with `cols` columns, unscaled. With
    /// `fixed`, the search is skipped.
    pub fn fit(
        &self,
        fit_x: &[f64],
        fit_y: &[bool],
        val_x: &[f64],
        val_y: &[bool],
        cols: usize,
    ) -> Result<(FittedReturnClassifier, Vec<Candidate>), ReturnClassifierError> {
        let (choice, candidates, val_p) = match self.fixed {
            Some(c) => {
                let m = fit_one(&c, &self.gbt, fit_x, fit_y, cols)?;
                (c, vec![], m.predict(val_x, cols))
            }
            None => self.search(fit_x, fit_y, val_x, val_y, cols)?,
        };
        let calibration = choose_calibration(&val_p, val_y);
        let learner = fit_one(
            &choice,
            &self.gbt,
            &[fit_x, val_x].concat(),
            &[fit_y, val_y].concat(),
            cols,
        )?;
        Ok((
            FittedReturnClassifier {
                learner,
                calibration,
            },
            candidates,
        ))
    }

    fn search(
        &self,
        fit_x: &[f64],
        fit_y: &[bool],
        val_x: &[f64],
        val_y: &[bool],
        cols: usize,
    ) -> Result<(Choice, Vec<Candidate>, Vec<f64>), ReturnClassifierError> {
        // Candidates are compared on a stride sample of the fit rows.
        let stride = fit_y.len().div_ceil(self.max_search_rows.max(1)).max(1);
        let search_y: Vec<bool> = fit_y.iter().step_by(stride).copied().collect();
        let search_x: Vec<f64> = fit_x
            .chunks(cols)
            .step_by(stride)
            .flatten()
            .copied()
            .collect();
        let (fit_x, fit_y) = (&search_x[..], &search_y[..]);
        let pos = fit_y.iter().filter(|&&b| b).count().max(1);
        let neg = fit_y.len() - pos.min(fit_y.len());
        // "Balanced": positives weigh as much as negatives in total (capped: heavy replication
        // buys little and costs memory).
        let balanced = ((neg as f64 / pos as f64).round() as usize).clamp(1, 10);
        let mut specs = Vec::new();
        for &alpha in &self.alphas {
            specs.push(Choice::Logistic {
                alpha,
                positive_weight: 1,
            });
            if self.try_class_weights && balanced > 1 {
                specs.push(Choice::Logistic {
                    alpha,
                    positive_weight: balanced,
                });
            }
        }
        if self.try_gbt && fit_y.len() * stride + val_y.len() >= self.min_gbt_rows {
            specs.push(Choice::Gbt);
        }
        let mut candidates = Vec::new();
        let mut best: Option<(f64, usize)> = None;
        let mut best_p = Vec::new();
        for (s, spec) in specs.iter().enumerate() {
            let model = fit_one(spec, &self.gbt, fit_x, fit_y, cols)?;
            let p = model.predict(val_x, cols);
            let (auc, ll) = (metrics::roc_auc(&p, val_y), metrics::log_loss(&p, val_y));
            tracing::debug!(
                candidate = model.name(),
                auc,
                log_loss = ll,
                "return classifier candidate"
            );
            candidates.push(Candidate {
                name: model.name(),
                validation_auc: auc,
                validation_log_loss: ll,
            });
            if best.is_none_or(|(b, _)| ll < b) {
                best = Some((ll, s));
                best_p = p;
            }
        }
        let (_, s) = best.expect("at least one candidate");
        Ok((specs[s], candidates, best_p))
    }
}

/// Isotonic calibration only when it helps: learned on half of the validation rows, it must
/// lower the log loss on the other half; then it is refitted on all of them. (On a cohort that
/// changes between windows, a map learned on one window can hurt the next.)
fn choose_calibration(p: &[f64], y: &[bool]) -> Option<Isotonic> {
    let half = |keep: usize| -> (Vec<f64>, Vec<bool>) {
        (0..p.len())
            .filter(|i| i % 2 == keep)
            .map(|i| (p[i], y[i]))
            .unzip()
    };
    let ((p0, y0), (p1, y1)) = (half(0), half(1));
    let iso = Isotonic::fit(&p0, &y0, (y0.len() / 50).max(50))?;
    let calibrated: Vec<f64> = p1.iter().map(|&v| iso.apply(v)).collect();
    let (before, after) = (
        metrics::log_loss(&p1, &y1),
        metrics::log_loss(&calibrated, &y1),
    );
    tracing::debug!(
        before,
        after,
        "isotonic calibration on held-out validation rows"
    );
    if after < before {
        Isotonic::fit(p, y, (y.len() / 50).max(50))
    } else {
        None
    }
}

fn fit_one(
    spec: &Choice,
    gbt: &GbtParams,
    x: &[f64],
    y: &[bool],
    cols: usize,
) -> Result<Learner, ReturnClassifierError> {
    Ok(match *spec {
        Choice::Logistic {
            alpha,
            positive_weight: weight,
        } => {
            let scaler = RobustScaler::fit(x, cols);
            let mut xs = x.to_vec();
            scaler.apply(&mut xs);
            let model = Logistic::fit(&xs, cols, y, alpha, weight)?;
            Learner::Logistic {
                scaler,
                model,
                alpha,
                positive_weight: weight,
            }
        }
        Choice::Gbt => Learner::Gbt(gbt.fit(x, cols, y)?),
    })
}

impl Learner {
    pub fn choice(&self) -> Choice {
        match self {
            Learner::Logistic {
                alpha,
                positive_weight,
                ..
            } => Choice::Logistic {
                alpha: *alpha,
                positive_weight: *positive_weight,
            },
            Learner::Gbt(_) => Choice::Gbt,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Learner::Logistic {
                alpha,
                positive_weight,
                ..
            } => {
                format!("logistic(alpha={alpha}, positive_weight={positive_weight})")
            }
            Learner::Gbt(g) => {
                format!(
                    "gbt(iterations={}, depth={})",
                    g.params.iterations, g.params.max_depth
                )
            }
        }
    }

    pub fn ready(&mut self) -> Result<(), ReturnClassifierError> {
        if let Learner::Gbt(g) = self {
            g.ready()?;
        }
        Ok(())
    }

    /// P(return within H) for each row of unscaled row-major `x`.
    pub fn predict(&self, x: &[f64], cols: usize) -> Vec<f64> {
        match self {
            Learner::Logistic { scaler, model, .. } => x
                .chunks(cols)
                .map(|r| {
                    let mut row = r.to_vec();
                    scaler.apply_row(&mut row);
                    model.predict(&row)
                })
                .collect(),
            Learner::Gbt(g) => g.predict(x, cols),
        }
    }
}

impl FittedReturnClassifier {
    pub fn choice(&self) -> Choice {
        self.learner.choice()
    }

    pub fn name(&self) -> String {
        let n = self.learner.name();
        if self.calibration.is_some() {
            format!("{n} + isotonic calibration")
        } else {
            n
        }
    }

    pub fn ready(&mut self) -> Result<(), ReturnClassifierError> {
        self.learner.ready()
    }

    /// Calibrated P(return within H) for each row of unscaled row-major `x`.
    pub fn predict(&self, x: &[f64], cols: usize) -> Vec<f64> {
        let mut p = self.learner.predict(x, cols);
        if let Some(c) = &self.calibration {
            p.iter_mut().for_each(|v| *v = c.apply(*v));
        }
        p
    }
}
