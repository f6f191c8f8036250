//! 2 — When: the distribution of the time of the next order.
//!
//! P(T ≤ d) = P(return within H) · F(d | return within H). The first factor is the return
//! classifier; F is a discrete-time hazard model fitted with linfa-logistic on person-period
//! rows of the customers who returned (their times are fully observed, so censoring never
//! mistakes a customer who had not returned *yet* for a failure: non-returners enter through
//! the classifier's factor, the exact likelihood factorization of a censored time).
//! Hazard covariates: the scaled customer features, a piecewise-constant baseline (groups of
//! bins) and time-varying replenishment phases — (recency + t) over the customer's own mean gap
//! and over the cycle of the category they last bought — with squares, so the hazard can peak
//! when a bottle runs out.

use serde::{Deserialize, Serialize};

use super::linear::{Logistic, RobustScaler};
use crate::features::NB;

/// Positions in the base feature row (see `features::BASE_FEATURES`).
const F_RECENCY: usize = 0;
const F_OVERDUE: usize = 7;
const F_CYCLE_PHASE: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReturnTimeParams {
    /// L2 strength. Default 1.
    pub alpha: f64,
    /// At most this many bins over the horizon. Default 30 (daily up to H = 30).
    pub max_bins: usize,
    /// Groups of bins with their own baseline hazard. Default 10.
    pub groups: usize,
}

impl Default for ReturnTimeParams {
    fn default() -> Self {
        ReturnTimeParams {
            alpha: 1.0,
            max_bins: 30,
            groups: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FittedReturnTime {
    pub horizon_days: f64,
    pub bins: usize,
    pub groups: usize,
    pub scaler: RobustScaler,
    pub hazard: Logistic,
}

/// A customer's predicted timing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// Quantiles of the conditional distribution, in days from the as-of instant.
    pub lo: f64,
    pub median: f64,
    pub hi: f64,
}

const TV: usize = 4;

impl FittedReturnTime {
    fn bin_width(&self) -> f64 {
        self.horizon_days / self.bins as f64
    }
    fn cols(&self) -> usize {
        NB + self.groups + TV
    }
}

/// Time-varying covariates at `t` days after the cutoff, from the unscaled base row.
fn time_varying(base: &[f64], t: f64, out: &mut [f64]) {
    let rec = base[F_RECENCY].exp_m1();
    // overdue_log = ln((rec+1)/(gap+1)) → ln(gap+1); likewise for the category cycle.
    let ln_gap1 = (rec + 1.0).ln() - base[F_OVERDUE];
    let ln_cycle1 = (rec + 1.0).ln() - base[F_CYCLE_PHASE];
    let a = ((rec + t + 1.0).ln() - ln_gap1).clamp(-5.0, 5.0);
    let b = ((rec + t + 1.0).ln() - ln_cycle1).clamp(-5.0, 5.0);
    // Squares scaled to the range of the linear terms: similar scales converge faster.
    out.copy_from_slice(&[a, a * a / 5.0, b, b * b / 5.0]);
}

impl ReturnTimeParams {
    /// Fits on returners: unscaled base rows (row-major, NB columns) and days to return.
    pub fn fit(
        &self,
        x: &[f64],
        days: &[f64],
        horizon_days: f64,
    ) -> Result<FittedReturnTime, super::linear::LinearError> {
        let bins = (horizon_days.round() as usize).clamp(1, self.max_bins.max(1));
        let groups = self.groups.clamp(1, bins);
        let scaler = RobustScaler::fit(x, NB);
        let mut m = FittedReturnTime {
            horizon_days,
            bins,
            groups,
            scaler,
            hazard: Logistic {
                weights: vec![],
                intercept: 0.0,
            },
        };
        let cols = m.cols();
        let mut rows = Vec::new();
        let mut y = Vec::new();
        let mut buf = vec![0.0; cols];
        for (i, &d) in days.iter().enumerate() {
            let raw = &x[i * NB..(i + 1) * NB];
            let event = ((d / m.bin_width()) as usize).min(bins - 1);
            for b in 0..=event {
                m.row(raw, b, &mut buf);
                rows.extend_from_slice(&buf);
                y.push(b == event);
            }
        }
        m.hazard = Logistic::fit(&rows, cols, &y, self.alpha, 1)?;
        Ok(m)
    }
}

impl FittedReturnTime {
    fn row(&self, raw: &[f64], b: usize, out: &mut [f64]) {
        out[..NB].copy_from_slice(raw);
        self.scaler.apply_row(&mut out[..NB]);
        out[NB..NB + self.groups].iter_mut().for_each(|v| *v = 0.0);
        out[NB + b * self.groups / self.bins] = 1.0;
        let t = (b as f64 + 0.5) * self.bin_width();
        time_varying(raw, t, &mut out[NB + self.groups..]);
    }

    /// Conditional CDF at the end of each bin (last = 1), for one unscaled base row.
    pub fn cdf(&self, raw: &[f64]) -> Vec<f64> {
        let mut scaled = raw.to_vec();
        self.scaler.apply_row(&mut scaled);
        let w = &self.hazard.weights;
        let static_part =
            self.hazard.intercept + scaled.iter().zip(&w[..NB]).map(|(a, b)| a * b).sum::<f64>();
        let mut tv = [0.0; TV];
        let mut survive = 1.0;
        let mut out = Vec::with_capacity(self.bins);
        for b in 0..self.bins {
            let t = (b as f64 + 0.5) * self.bin_width();
            time_varying(raw, t, &mut tv);
            let z = static_part
                + w[NB + b * self.groups / self.bins]
                + tv.iter()
                    .zip(&w[NB + self.groups..])
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
            let h = if b + 1 == self.bins {
                1.0
            } else {
                super::linear::sigmoid(z)
            };
            survive *= 1.0 - h;
            out.push(1.0 - survive);
        }
        out
    }

    /// Day (from the as-of instant) at which the conditional CDF reaches `q`, interpolating
    /// linearly inside a bin.
    pub fn quantile(&self, cdf: &[f64], q: f64) -> f64 {
        let w = self.bin_width();
        let mut prev = 0.0;
        for (b, &c) in cdf.iter().enumerate() {
            if c >= q {
                let frac = if c > prev {
                    (q - prev) / (c - prev)
                } else {
                    0.5
                };
                return (b as f64 + frac) * w;
            }
            prev = c;
        }
        self.horizon_days
    }

    /// The conditional CDF at day `d` (linear inside a bin): the inverse of [`Self::quantile`].
    pub fn quantile_cdf(&self, cdf: &[f64], d: f64) -> f64 {
        let x = (d / self.bin_width()).clamp(0.0, self.bins as f64);
        let b = (x.floor() as usize).min(self.bins - 1);
        let prev = if b == 0 { 0.0 } else { cdf[b - 1] };
        prev + (cdf[b] - prev) * (x - b as f64).clamp(0.0, 1.0)
    }

    pub fn timing(&self, cdf: &[f64], coverage: f64) -> Timing {
        let tail = (1.0 - coverage) / 2.0;
        Timing {
            lo: self.quantile(cdf, tail),
            median: self.quantile(cdf, 0.5),
            hi: self.quantile(cdf, 1.0 - tail),
        }
    }

    /// Restricted mean time to return within the horizon, E[min(T, H)], given P(return) `p`:
    /// the ranking score for concordance (sooner = smaller).
    pub fn restricted_mean(&self, cdf: &[f64], p: f64) -> f64 {
        let w = self.bin_width();
        let mut prev = 0.0;
        cdf.iter()
            .map(|&c| {
                let s = 1.0 - p * (prev + c) / 2.0;
                prev = c;
                s * w
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hazard_learns_that_overdue_customers_return_sooner() {
        // Two kinds of returners: "due" (overdue feature high) return in ~5 days, others ~40.
        let mut x = Vec::new();
        let mut days = Vec::new();
        for i in 0..2000 {
            let due = i % 2 == 0;
            let mut row = [0.0; NB];
            row[F_RECENCY] = if due { 60f64.ln_1p() } else { 5f64.ln_1p() };
            row[F_OVERDUE] = if due { 0.0 } else { -2.0 };
            row[F_CYCLE_PHASE] = row[F_OVERDUE];
            x.extend_from_slice(&row);
            days.push(if due {
                (i % 10) as f64
            } else {
                30.0 + (i % 20) as f64
            });
        }
        let m = ReturnTimeParams::default().fit(&x, &days, 90.0).unwrap();
        let due = m.timing(&m.cdf(&x[..NB]), 0.5);
        let later = m.timing(&m.cdf(&x[NB..2 * NB]), 0.5);
        assert!(
            due.median < 10.0 && later.median > 25.0,
            "{due:?} {later:?}"
        );
        assert!(due.lo <= due.median && due.median <= due.hi);
        let cdf = m.cdf(&x[..NB]);
        assert!((cdf[cdf.len() - 1] - 1.0).abs() < 1e-12);
        assert!(m.restricted_mean(&cdf, 0.9) < m.restricted_mean(&cdf, 0.1));
    }
}
