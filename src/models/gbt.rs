//! Gradient-boosted trees (forust-ml, pure Rust, histogram splits like scikit-learn's
//! HistGradientBoosting): the stronger learner tried beside logistic regression for "will
//! they return". Stored as forust's own JSON so a saved model predicts without refitting.

use forust_ml::GradientBooster;
use forust_ml::data::Matrix;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct GbtParams {
    /// Boosting rounds. Default 200.
    pub iterations: usize,
    /// Default 0.1.
    pub learning_rate: f32,
    /// Default 4: shallow trees generalize on noisy behaviour.
    pub max_depth: usize,
    /// L2 on leaf weights. Default 1.
    pub l2: f32,
    /// Minimum hessian sum per leaf. Default 20 (guards against fitting a few noisy rows).
    pub min_leaf_weight: f32,
}

impl Default for GbtParams {
    fn default() -> Self {
        GbtParams {
            iterations: 200,
            learning_rate: 0.1,
            max_depth: 4,
            l2: 1.0,
            min_leaf_weight: 20.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gradient boosting failed: {0}")]
pub struct GbtError(String);

#[derive(Clone, Serialize, Deserialize)]
pub struct FittedGbt {
    pub params: GbtParams,
    /// forust's JSON dump of the booster.
    pub booster_json: String,
    #[serde(skip)]
    booster: Option<std::sync::Arc<GradientBooster>>,
}

impl std::fmt::Debug for FittedGbt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FittedGbt")
            .field("params", &self.params)
            .field("bytes", &self.booster_json.len())
            .finish()
    }
}

/// Row-major → column-major (forust's layout).
fn columns(x: &[f64], cols: usize) -> Vec<f64> {
    let rows = x.len() / cols;
    let mut out = vec![0.0; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = x[i * cols + j];
        }
    }
    out
}

impl GbtParams {
    pub fn fit(&self, x: &[f64], cols: usize, y: &[bool]) -> Result<FittedGbt, GbtError> {
        let rows = y.len();
        let data = columns(x, cols);
        let matrix = Matrix::new(&data, rows, cols);
        let yf: Vec<f64> = y.iter().map(|&b| b as u8 as f64).collect();
        let weights = vec![1.0; rows];
        let mut booster = GradientBooster::default()
            .set_iterations(self.iterations)
            .set_learning_rate(self.learning_rate)
            .set_max_depth(self.max_depth)
            .set_l2(self.l2)
            .set_min_leaf_weight(self.min_leaf_weight)
            .set_seed(7)
            .set_parallel(true);
        booster
            .fit(&matrix, &yf, &weights, None)
            .map_err(|e| GbtError(e.to_string()))?;
        let booster_json = booster.json_dump().map_err(|e| GbtError(e.to_string()))?;
        Ok(FittedGbt {
            params: *self,
            booster_json,
            booster: Some(std::sync::Arc::new(booster)),
        })
    }
}

impl FittedGbt {
    fn booster(&mut self) -> Result<&GradientBooster, GbtError> {
        if self.booster.is_none() {
            let b = GradientBooster::from_json(&self.booster_json)
                .map_err(|e| GbtError(e.to_string()))?;
            self.booster = Some(std::sync::Arc::new(b));
        }
        Ok(self.booster.as_ref().unwrap())
    }

    /// Loads the booster from its JSON (after deserialization); idempotent.
    pub fn ready(&mut self) -> Result<(), GbtError> {
        self.booster().map(|_| ())
    }

    /// P(positive) for row-major `x`. Call [`FittedGbt::ready`] first on a deserialized model.
    pub fn predict(&self, x: &[f64], cols: usize) -> Vec<f64> {
        let booster = self
            .booster
            .as_ref()
            .expect("FittedGbt::ready was not called");
        let rows = x.len() / cols;
        let data = columns(x, cols);
        let matrix = Matrix::new(&data, rows, cols);
        // forust returns log-odds for the log-loss objective.
        booster
            .predict(&matrix, true)
            .into_iter()
            .map(super::linear::sigmoid)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_an_interaction_logistic_cannot_and_round_trips() {
        // XOR-like: positive when both features agree.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..2000 {
            let a = (i % 2) as f64;
            let b = ((i / 2) % 2) as f64;
            x.extend([a + (i % 13) as f64 * 0.001, b]);
            y.push(a == b);
        }
        let m = GbtParams {
            iterations: 50,
            ..Default::default()
        }
        .fit(&x, 2, &y)
        .unwrap();
        let p = m.predict(&[0.0, 0.0, 1.0, 0.0], 2);
        assert!(p[0] > 0.9 && p[1] < 0.1, "{p:?}");
        let mut back: FittedGbt =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        back.ready().unwrap();
        assert_eq!(back.predict(&[0.0, 0.0], 2), m.predict(&[0.0, 0.0], 2));
    }
}
