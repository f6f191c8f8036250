//! Isotonic calibration (pool-adjacent-violators) of a classifier's probabilities, learned on
//! the validation fold (a later window than the one the model was fitted on). A linear model
//! ranks well but can be miscalibrated in the middle of the range where the true relation is
//! curved; a monotone map fixes the level without changing the order. Between block centres
//! the map interpolates linearly, so distinct scores stay distinct (AUC is preserved).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Isotonic {
    /// Block centres (mean predicted probability), increasing.
    pub x: Vec<f64>,
    /// Observed rate of each block, non-decreasing.
    pub y: Vec<f64>,
}

impl Isotonic {
    /// Fits on (predicted, outcome) pairs. Rows are pooled into blocks of at least
    /// `min_block` before PAV so that a handful of rows cannot pin a probability to 0 or 1.
    pub fn fit(p: &[f64], y: &[bool], min_block: usize) -> Option<Isotonic> {
        if p.len() < 2 * min_block.max(1) {
            return None;
        }
        let mut idx: Vec<usize> = (0..p.len()).collect();
        idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
        // Initial blocks of `min_block` rows: (sum p, sum y, n).
        let mut blocks: Vec<(f64, f64, f64)> = idx
            .chunks(min_block.max(1))
            .map(|c| {
                (
                    c.iter().map(|&i| p[i]).sum(),
                    c.iter().map(|&i| y[i] as u8 as f64).sum(),
                    c.len() as f64,
                )
            })
            .collect();
        // Pool adjacent violators.
        let mut out: Vec<(f64, f64, f64)> = Vec::with_capacity(blocks.len());
        for b in blocks.drain(..) {
            out.push(b);
            while out.len() >= 2 {
                let (l, r) = (out[out.len() - 2], out[out.len() - 1]);
                if l.1 / l.2 <= r.1 / r.2 {
                    break;
                }
                out.pop();
                *out.last_mut().unwrap() = (l.0 + r.0, l.1 + r.1, l.2 + r.2);
            }
        }
        Some(Isotonic {
            x: out.iter().map(|b| b.0 / b.2).collect(),
            y: out.iter().map(|b| b.1 / b.2).collect(),
        })
    }

    /// The calibrated probability, clipped to [0.001, 0.999].
    pub fn apply(&self, p: f64) -> f64 {
        let n = self.x.len();
        let v = if p <= self.x[0] {
            // Below the first centre: scale towards 0 so the order is kept.
            self.y[0] * (p / self.x[0].max(1e-12))
        } else if p >= self.x[n - 1] {
            let span = (1.0 - self.x[n - 1]).max(1e-12);
            self.y[n - 1] + (1.0 - self.y[n - 1]) * (p - self.x[n - 1]) / span
        } else {
            let j = self.x.partition_point(|&c| c <= p);
            let (x0, x1, y0, y1) = (self.x[j - 1], self.x[j], self.y[j - 1], self.y[j]);
            y0 + (y1 - y0) * (p - x0) / (x1 - x0).max(1e-12)
        };
        v.clamp(0.001, 0.999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_a_miscalibrated_but_well_ranked_score() {
        // True probability = p^0.5: the raw score under-predicts everywhere.
        let mut p = Vec::new();
        let mut y = Vec::new();
        let mut state: u64 = 7;
        for i in 0..20_000 {
            let s = (i as f64 + 0.5) / 20_000.0;
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            p.push(s);
            y.push(u < s.sqrt());
        }
        let iso = Isotonic::fit(&p, &y, 200).unwrap();
        for s in [0.1, 0.3, 0.6, 0.9] {
            assert!(
                (iso.apply(s) - s.sqrt()).abs() < 0.05,
                "{s}: {}",
                iso.apply(s)
            );
        }
        // Monotone.
        let mut prev = 0.0;
        for i in 0..1000 {
            let v = iso.apply(i as f64 / 1000.0);
            assert!(v >= prev);
            prev = v;
        }
    }
}
