//! Cold start: a labelled rule-based fallback for brands with too little history to fit (or
//! honestly evaluate) the models. RFM and inter-purchase gaps only, no fitting:
//! - expected gap g = the customer's own mean gap, shrunk to the brand's mean gap;
//! - P(return within H) = 1 − exp(−H / g), damped once the customer is more than two gaps
//!   overdue (the longer past due, the likelier they have lapsed);
//! - P(alive) = exp(−max(0, recency − 2g) / 2g);
//! - window: next expected order at max(0, g − recency) days, ± a quarter gap;
//! - category: most frequent, then last, then popularity.

use serde::{Deserialize, Serialize};

use crate::features::Snapshot;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RulesModel {
    /// The brand's mean gap between purchase days when the rules were set (days).
    pub brand_gap_days: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct RulePrediction {
    pub p_return: f64,
    pub p_alive: f64,
    pub lo: f64,
    pub median: f64,
    pub hi: f64,
}

impl RulesModel {
    pub fn from_snapshot(s: &Snapshot) -> Self {
        RulesModel {
            brand_gap_days: s.mean_own_gap_days().max(1.0),
        }
    }

    pub fn predict(&self, s: &Snapshot, i: usize, horizon: f64) -> RulePrediction {
        let n = s.purchase_days[i] as f64;
        let own = s.own_gap_days[i] as f64;
        let g = if own.is_finite() {
            ((n - 1.0) * own + self.brand_gap_days) / n
        } else {
            self.brand_gap_days
        }
        .max(1.0);
        let rec = s.recency_days[i] as f64;
        let damp = if rec > 2.0 * g { 2.0 * g / rec } else { 1.0 };
        let p_return = (1.0 - (-horizon / g).exp()) * damp;
        let p_alive = (-(rec - 2.0 * g).max(0.0) / (2.0 * g)).exp();
        let median = (g - rec).max(0.0).min(horizon);
        RulePrediction {
            p_return: p_return.clamp(0.001, 0.999),
            p_alive,
            lo: (median - g / 4.0).max(0.0),
            median,
            hi: (median + g / 4.0).min(horizon),
        }
    }

    /// Category scores: orders in the category, +0.5 for the last one, + popularity/10 to break
    /// ties; normalised to sum to 1.
    pub fn categories(&self, s: &Snapshot, i: usize) -> Vec<f64> {
        let orders = s.cat_row(&s.cat_orders, i);
        let mut v: Vec<f64> = (0..s.k)
            .map(|c| {
                orders[c] as f64
                    + 0.5 * (s.last_cat[i] as usize == c) as u8 as f64
                    + s.popularity[c] as f64 / 10.0
            })
            .collect();
        let sum: f64 = v.iter().sum();
        if sum > 0.0 {
            v.iter_mut().for_each(|x| *x /= sum);
        }
        v
    }
}
