//! 3 — Which category: a ranked list of categories with probabilities for the next order.
//!
//! Two stages, both linfa-logistic:
//! 1. A multinomial logistic regression (`MultiLogisticRegression`) over customer features,
//!    category history (decayed spend shares, last category) and recent browsing/cart signals,
//!    over the most frequent categories plus "other".
//! 2. A ranker over (customer, category) pairs — a conditional-logit approximated by a binary
//!    logistic — that combines the multinomial's probability with personal signals that are
//!    the same for every category (time-decayed frequency, last category, the first-order
//!    transition from it, popularity, views and cart adds in the category, replenishment phase
//!    of the category). Sharing those weights across categories is what lets it work with a
//!    few hundred categories and a few thousand customers.
//!
//! Stage 1 is cross-fitted (two customer folds) when training stage 2, so the ranker never sees
//! the multinomial's in-sample overconfidence. Customers with no category history and no
//! browsing get the popularity ranking (cold start).

use serde::{Deserialize, Serialize};

use super::linear::{Logistic, Multinomial, RobustScaler};
use crate::features::{NB, NO_CAT, Snapshot, keep_customer, salt};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoryParams {
    /// Categories the multinomial models individually (the rest are "other"). Default 30.
    pub max_classes: usize,
    /// L2 of the multinomial. Default 1.
    pub alpha: f64,
    /// L2 of the ranker. Default 1.
    pub ranker_alpha: f64,
    /// Negative categories sampled per training row for the ranker when there are many
    /// categories. Default 30.
    pub ranker_negatives: usize,
}

impl Default for CategoryParams {
    fn default() -> Self {
        CategoryParams {
            max_classes: 30,
            alpha: 1.0,
            ranker_alpha: 1.0,
            ranker_negatives: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FittedCategory {
    pub k: usize,
    /// Category index of each multinomial class; class `top.len()` is "other".
    pub top: Vec<u16>,
    pub scaler: RobustScaler,
    pub multinomial: Multinomial,
    pub ranker: Logistic,
}

/// One training example: row `i` of a snapshot whose next order's main category is `truth`.
pub struct Example<'a> {
    pub snap: &'a Snapshot,
    pub i: usize,
    pub truth: u16,
    pub customer_id: &'a str,
}

pub const PAIR_FEATURES: &[&str] = &[
    "ln_p_multinomial",
    "decayed_share",
    "orders_log",
    "orders_share",
    "is_last",
    "ln_transition_from_last",
    "ln_popularity",
    "views_log",
    "carts_log",
    "bought_before",
    "phase",
    "phase_squared",
    "views_share",
    "recent_browsing_log",
    "recent_browsing_share",
    "main_orders_log",
    "main_decayed_share",
];
const NP: usize = 17;

fn multinomial_row(top: &[u16], s: &Snapshot, i: usize, out: &mut Vec<f64>) {
    out.clear();
    out.extend(s.row(i).iter().map(|&v| v as f64));
    let dec = s.cat_row(&s.cat_decayed, i);
    let views = s.cat_row(&s.cat_views, i);
    let carts = s.cat_row(&s.cat_carts, i);
    let recent = s.cat_row(&s.cat_recent, i);
    for &c in top {
        let c = c as usize;
        out.push(dec[c] as f64);
        out.push(s.cat_row(&s.cat_main_decayed, i)[c] as f64);
        out.push((s.last_cat[i] as usize == c) as u8 as f64);
        out.push((views[c] as f64).ln_1p());
        out.push((carts[c] as f64).ln_1p());
        out.push((recent[c] as f64).ln_1p());
    }
}

fn pair_row(s: &Snapshot, i: usize, c: usize, p_multi: f64, out: &mut [f64; NP]) {
    let orders = s.cat_row(&s.cat_orders, i);
    let views = s.cat_row(&s.cat_views, i);
    let k = s.k;
    let last = s.last_cat[i];
    let trans = if last != NO_CAT {
        s.transitions[last as usize * k + c]
    } else {
        s.popularity[c]
    };
    let bought = orders[c] > 0.0;
    let phase = if bought {
        ((s.cat_row(&s.cat_days_since, i)[c] as f64 + 1.0) / (s.cycle_days[c] as f64 + 1.0))
            .ln()
            .clamp(-5.0, 5.0)
    } else {
        0.0
    };
    let total_views: f32 = views.iter().sum();
    let recent = s.cat_row(&s.cat_recent, i);
    let total_recent: f32 = recent.iter().sum();
    *out = [
        (p_multi + 1e-4).ln(),
        s.cat_row(&s.cat_decayed, i)[c] as f64,
        (orders[c] as f64).ln_1p(),
        orders[c] as f64 / s.purchase_days[i].max(1) as f64,
        (last as usize == c) as u8 as f64,
        (trans as f64 + 1e-6).ln(),
        (s.popularity[c] as f64 + 1e-6).ln(),
        (views[c] as f64).ln_1p(),
        (s.cat_row(&s.cat_carts, i)[c] as f64).ln_1p(),
        bought as u8 as f64,
        phase,
        phase * phase,
        views[c] as f64 / (total_views as f64 + 1.0),
        (recent[c] as f64).ln_1p(),
        recent[c] as f64 / (total_recent as f64 + 1.0),
        (s.cat_row(&s.cat_main, i)[c] as f64).ln_1p(),
        s.cat_row(&s.cat_main_decayed, i)[c] as f64,
    ];
}

impl CategoryParams {
    pub fn fit(
        &self,
        k: usize,
        examples: &[Example],
    ) -> Result<FittedCategory, super::linear::LinearError> {
        // Classes: the most frequent true categories.
        let mut freq = vec![0usize; k];
        examples.iter().for_each(|e| freq[e.truth as usize] += 1);
        let mut order: Vec<u16> = (0..k as u16).filter(|&c| freq[c as usize] > 0).collect();
        order.sort_by_key(|&c| (std::cmp::Reverse(freq[c as usize]), c));
        order.truncate(self.max_classes);
        let top = order;
        let class_of = |c: u16| top.iter().position(|&t| t == c).unwrap_or(top.len());
        let classes = top.len() + 1;

        let mut rows = Vec::new();
        let mut buf = Vec::new();
        for e in examples {
            multinomial_row(&top, e.snap, e.i, &mut buf);
            rows.extend_from_slice(&buf);
        }
        let cols = buf.len().max(NB);
        let scaler = RobustScaler::fit(&rows, cols);
        scaler.apply(&mut rows);
        let y: Vec<usize> = examples.iter().map(|e| class_of(e.truth)).collect();
        let fold: Vec<bool> = examples
            .iter()
            .map(|e| keep_customer(e.customer_id, 0.5, salt::FOLD))
            .collect();

        // Out-of-fold multinomial probabilities for the ranker's training rows.
        let mut oof = vec![0.0; examples.len() * classes];
        for side in [true, false] {
            let (mut fx, mut fy) = (Vec::new(), Vec::new());
            for (i, &f) in fold.iter().enumerate() {
                if f != side {
                    fx.extend_from_slice(&rows[i * cols..(i + 1) * cols]);
                    fy.push(y[i]);
                }
            }
            let m = if fy.len() >= 2 && fy.iter().any(|&c| c != fy[0]) {
                Some(Multinomial::fit(&fx, cols, &fy, classes, self.alpha)?)
            } else {
                None
            };
            for (i, &f) in fold.iter().enumerate() {
                let out = &mut oof[i * classes..(i + 1) * classes];
                match &m {
                    Some(m) if f == side => m.predict_into(&rows[i * cols..(i + 1) * cols], out),
                    None if f == side => out.iter_mut().for_each(|v| *v = 1.0 / classes as f64),
                    _ => {}
                }
            }
        }
        let multinomial = if y.iter().any(|&c| c != y[0]) {
            Multinomial::fit(&rows, cols, &y, classes, self.alpha)?
        } else {
            // A single class seen: the multinomial is a constant.
            let mut intercepts = vec![-30.0; classes];
            intercepts[y[0]] = 0.0;
            Multinomial {
                weights: vec![0.0; classes * cols],
                intercepts,
                cols,
            }
        };

        // Ranker rows: the true category and negatives (all of them when there are few).
        let mut px = Vec::new();
        let mut py = Vec::new();
        let mut pr = [0.0; NP];
        for (n, e) in examples.iter().enumerate() {
            let probs = &oof[n * classes..(n + 1) * classes];
            let cands: Vec<usize> = if k <= self.ranker_negatives + 1 {
                (0..k).collect()
            } else {
                // Deterministic negatives: a stride through the categories from a per-row offset.
                let step = k / self.ranker_negatives.max(1);
                let mut c: Vec<usize> = (0..self.ranker_negatives)
                    .map(|j| (n * 7 + j * step) % k)
                    .collect();
                c.push(e.truth as usize);
                c.sort_unstable();
                c.dedup();
                c
            };
            for c in cands {
                pair_row(e.snap, e.i, c, p_of(&top, probs, e.snap, c as u16), &mut pr);
                px.extend_from_slice(&pr);
                py.push(c == e.truth as usize);
            }
        }
        let ranker = super::linear::Logistic::fit(&px, NP, &py, self.ranker_alpha, 1)?;
        Ok(FittedCategory {
            k,
            top,
            scaler,
            multinomial,
            ranker,
        })
    }
}

/// The multinomial's probability of category `c`: its class, or "other" split by popularity.
fn p_of(top: &[u16], probs: &[f64], s: &Snapshot, c: u16) -> f64 {
    match top.iter().position(|&t| t == c) {
        Some(j) => probs[j],
        None => {
            let other_pop: f64 = (0..s.k as u16)
                .filter(|x| !top.contains(x))
                .map(|x| s.popularity[x as usize] as f64)
                .sum();
            probs[top.len()] * s.popularity[c as usize] as f64 / other_pop.max(1e-9)
        }
    }
}

impl FittedCategory {
    /// Probabilities over all categories for snapshot row `i` (sums to 1).
    pub fn predict(&self, s: &Snapshot, i: usize) -> Vec<f64> {
        let k = s.k;
        let has_history = s.cat_row(&s.cat_orders, i).iter().any(|&v| v > 0.0)
            || s.cat_row(&s.cat_views, i).iter().any(|&v| v > 0.0);
        if !has_history {
            return s.popularity.iter().map(|&p| p as f64).collect();
        }
        let mut row = Vec::new();
        multinomial_row(&self.top, s, i, &mut row);
        self.scaler.apply_row(&mut row);
        let mut probs = vec![0.0; self.top.len() + 1];
        self.multinomial.predict_into(&row, &mut probs);
        let mut pr = [0.0; NP];
        let mut logits: Vec<f64> = (0..k)
            .map(|c| {
                pair_row(s, i, c, p_of(&self.top, &probs, s, c as u16), &mut pr);
                self.ranker.logit(&pr)
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        logits.iter_mut().for_each(|l| {
            *l = (*l - max).exp();
            sum += *l;
        });
        logits.iter_mut().for_each(|l| *l /= sum);
        logits
    }
}

/// Categories ranked by descending score (ties: lower index first).
pub fn ranking(scores: &[f64]) -> Vec<u16> {
    let mut idx: Vec<u16> = (0..scores.len() as u16).collect();
    idx.sort_by(|&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then(a.cmp(&b))
    });
    idx
}
