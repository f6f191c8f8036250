//! BG/NBD ("beta-geometric / negative binomial distribution") model of repeat purchasing,
//! after Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to
//! the Pareto/NBD model", *Marketing Science* 24(2):275–284.
//!
//! # The model
//! While active, a customer purchases as a Poisson process with rate λ; λ varies across
//! customers as Gamma(shape `r`, rate `alpha`). After every *repeat* purchase the customer
//! becomes inactive for good with probability p; p varies across customers as Beta(`a`, `b`).
//! A customer is summarised by [`Rft`]: `x` repeat purchases, the last one at `t_x`, observed
//! for `T` time units since the first purchase. `alpha` carries the time unit (it is a rate
//! parameter); `r`, `a` and `b` are unit-free. Use [`FittedBgNbd::rescaled`] to change units.
//!
//! # Usage (shaped like linfa's algorithms: params → validated params → fitted model)
//! ```ignore
//! let model = BgNbdParams::new().fit(&customers)?;       // FittedBgNbd (serde-serializable)
//! let alive = model.p_alive(&customers[0]);
//! let next_90_days = model.expected_purchases(&customers[0], 90.0);
//! ```
//!
//! # Fitting
//! Maximum likelihood with argmin's Nelder–Mead over `ln(r, alpha, a, b)` (so the parameters
//! stay positive), minimising the mean negative log-likelihood per customer plus an optional L2
//! penalty on the log-parameters. Identical `(x, t_x, T)` rows are aggregated with weights, and
//! everything that depends on one coordinate only (`x`, `t_x` or `T`) is computed once per
//! distinct value per evaluation, so the per-row work is one `exp` and one `ln_1p`. After the
//! first convergence the simplex is restarted around the optimum (a standard guard against
//! Nelder–Mead's premature collapse) until a restart no longer improves the objective.
//!
//! # Validity of a row ([`Rft`])
//! All three fields finite; `x` a whole number ≥ 0; `0 ≤ t_x ≤ T`; `t_x = 0` when `x = 0`; and
//! `t_x > 0` when `x > 0`. The last rule encodes "same-day purchases are merged": a repeat
//! purchase at the very instant of the first purchase means the merge was not done (in CDNOW,
//! every customer with `x > 0` has `t_x > 0`). `T = 0` is allowed (it carries no information).
//! The fit rejects the first invalid row with [`BgNbdError::InvalidData`]; the prediction
//! methods do not validate (check with [`Rft::check`] if the input is untrusted).

use argmin::core::{CostFunction, Error as ArgminError, Executor, State, TerminationReason};
use argmin::solver::neldermead::NelderMead;
use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;
use statrs::function::gamma::ln_gamma;

/// One customer's summary: `x` = repeat purchase count (same-day purchases merged), `t_x` =
/// time of the last purchase since the first, `t` (T) = time from the first purchase to the
/// as-of instant; all times in the same unit (days in production, weeks in the CDNOW papers).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rft {
    /// Number of repeat purchases (whole number ≥ 0).
    pub x: f64,
    /// Time of the last purchase, measured from the first purchase (0 when `x = 0`).
    pub t_x: f64,
    /// Time from the first purchase to the as-of instant (`T` in the papers), `≥ t_x`.
    pub t: f64,
}

impl Rft {
    /// `Ok(())` if the row satisfies the validity rules in the module docs, else the reason.
    pub fn check(&self) -> Result<(), &'static str> {
        let Rft { x, t_x, t } = *self;
        if !(x.is_finite() && t_x.is_finite() && t.is_finite()) {
            return Err("x, t_x and T must be finite (no NaN or infinity)");
        }
        if x < 0.0 || t_x < 0.0 || t < 0.0 {
            return Err("x, t_x and T must be non-negative");
        }
        if x.fract() != 0.0 {
            return Err("x (repeat purchase count) must be a whole number");
        }
        if t_x > t {
            return Err("t_x (last purchase) must not exceed T (observation length)");
        }
        if x == 0.0 && t_x != 0.0 {
            return Err("t_x must be 0 when x = 0 (no repeat purchase)");
        }
        if x > 0.0 && t_x == 0.0 {
            return Err("t_x must be > 0 when x > 0 (merge same-day purchases)");
        }
        Ok(())
    }
}

/// Summarise one customer's purchase history as of `as_of_day`.
///
/// `days` are day numbers (any epoch) of purchases, in any order, possibly repeated; purchases
/// on the same day are merged into one. Days `>= as_of_day` are ignored (not yet observed as of
/// that day), so one history can be cut at several as-of days. Returns `None` if no purchase
/// is left. Otherwise `x` = distinct purchase days − 1, `t_x` = last day − first day, and
/// `T` = `as_of_day` − first day, all in days (so `T ≥ 1`).
pub fn rft_from_purchase_days(days: &[i64], as_of_day: i64) -> Option<Rft> {
    let mut seen: Vec<i64> = days.iter().copied().filter(|&d| d < as_of_day).collect();
    if seen.is_empty() {
        return None;
    }
    seen.sort_unstable();
    seen.dedup();
    let first = seen[0];
    let last = seen[seen.len() - 1];
    Some(Rft {
        x: (seen.len() - 1) as f64,
        t_x: (last - first) as f64,
        t: (as_of_day - first) as f64,
    })
}

/// Errors of [`BgNbdParams::fit`].
#[derive(Debug, thiserror::Error)]
pub enum BgNbdError {
    /// No customers were given.
    #[error("no customers to fit the BG/NBD model on")]
    EmptyData,
    /// The row at `index` breaks a validity rule (see [`Rft::check`]).
    #[error("invalid customer row {index} ({row:?}): {reason}")]
    InvalidData {
        index: usize,
        row: Rft,
        reason: &'static str,
    },
    /// Nobody made a repeat purchase: the likelihood has no maximum (it rises towards a
    /// degenerate boundary), so there is nothing to estimate.
    #[error("none of the {n} customers made a repeat purchase; BG/NBD cannot be estimated")]
    NoRepeatPurchases { n: usize },
    /// A builder setting is out of range.
    #[error("invalid BG/NBD setting {name} = {value}: {reason}")]
    InvalidParams {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// Nelder–Mead stopped without meeting the tolerance, failed, or ran off to a degenerate
    /// boundary. `params` are the best `[r, alpha, a, b]` found and `log_likelihood` their LL.
    #[error(
        "BG/NBD fit did not converge after {iterations} iterations: {reason} (best r, alpha, a, b = {params:?}, LL = {log_likelihood})"
    )]
    NotConverged {
        iterations: u64,
        params: [f64; 4],
        log_likelihood: f64,
        reason: String,
    },
}

/// Settings for fitting BG/NBD (unchecked; see [`BgNbdParams::check`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BgNbdParams {
    max_iters: u64,
    tolerance: f64,
    initial: [f64; 4],
    penalizer: f64,
}

/// Settings that passed [`BgNbdParams::check`].
#[derive(Clone, Debug, PartialEq)]
pub struct BgNbdValidParams(BgNbdParams);

impl Default for BgNbdParams {
    fn default() -> Self {
        Self::new()
    }
}

impl BgNbdParams {
    /// Defaults: `max_iters` 5000, `tolerance` 1e-12, `initial` `[1, 1, 1, 1]`, `penalizer` 0.
    pub fn new() -> Self {
        Self {
            max_iters: 5000,
            tolerance: 1e-12,
            initial: [1.0; 4],
            penalizer: 0.0,
        }
    }

    /// Maximum number of Nelder–Mead iterations, summed over the restarts (default 5000; a
    /// typical fit needs 300–700). Must be ≥ 1.
    pub fn max_iters(mut self, max_iters: u64) -> Self {
        self.max_iters = max_iters;
        self
    }

    /// Convergence tolerance: Nelder–Mead stops when the standard deviation of the objective
    /// across the simplex vertices falls below it. The objective is the *mean* negative
    /// log-likelihood per customer, in nats, so the tolerance does not depend on the number of
    /// customers (default 1e-12: parameters to about 5 significant digits on CDNOW; 1e-14 gives 6–7). Must be > 0.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Starting point `[r, alpha, a, b]` (default `[1, 1, 1, 1]`). `alpha` is in the data's
    /// time unit; the search runs in log space, so a start within a factor of ~100 of the
    /// optimum is fine. All four must be finite and > 0.
    pub fn initial(mut self, initial: [f64; 4]) -> Self {
        self.initial = initial;
        self
    }

    /// L2 penalty `penalizer · Σ ln(θ)²` over `θ = r, alpha, a, b`, added to the mean negative
    /// log-likelihood per customer (so its effect does not shrink as data grows; default 0,
    /// i.e. plain maximum likelihood). Values like 0.001–0.1 pull the parameters towards 1 on
    /// small or degenerate data. Must be finite and ≥ 0. Note that `ln(alpha)` depends on the
    /// time unit, so a penalised fit is not exactly unit-invariant.
    pub fn penalizer(mut self, penalizer: f64) -> Self {
        self.penalizer = penalizer;
        self
    }

    /// Validate the settings.
    pub fn check(&self) -> Result<BgNbdValidParams, BgNbdError> {
        let bad = |name, value, reason| {
            Err(BgNbdError::InvalidParams {
                name,
                value,
                reason,
            })
        };
        if self.max_iters == 0 {
            return bad("max_iters", 0.0, "must be at least 1");
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return bad("tolerance", self.tolerance, "must be finite and > 0");
        }
        if !(self.penalizer.is_finite() && self.penalizer >= 0.0) {
            return bad("penalizer", self.penalizer, "must be finite and >= 0");
        }
        const NAMES: [&str; 4] = ["initial.r", "initial.alpha", "initial.a", "initial.b"];
        for (name, &v) in NAMES.iter().zip(&self.initial) {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, v, "must be finite and > 0");
            }
        }
        Ok(BgNbdValidParams(self.clone()))
    }

    /// Validate the settings and fit by maximum likelihood (see [`BgNbdValidParams::fit`]).
    pub fn fit(&self, data: &[Rft]) -> Result<FittedBgNbd, BgNbdError> {
        self.check()?.fit(data)
    }
}

impl BgNbdValidParams {
    /// Fit by maximum likelihood. Errors: [`BgNbdError::EmptyData`],
    /// [`BgNbdError::InvalidData`] (first bad row), [`BgNbdError::NoRepeatPurchases`],
    /// [`BgNbdError::NotConverged`].
    pub fn fit(&self, data: &[Rft]) -> Result<FittedBgNbd, BgNbdError> {
        let p = &self.0;
        let prepared = Prepared::new(data)?;
        let objective = Objective {
            data: &prepared,
            penalizer: p.penalizer,
        };
        let mut best: Vec<f64> = p.initial.iter().map(|v| v.ln()).collect();
        let mut best_cost = objective.eval(&best);
        let mut iterations = 0u64;
        let mut step = 0.5;
        let mut converged_runs = 0;
        while iterations < p.max_iters {
            let simplex = simplex_around(&best, step);
            let solver = NelderMead::new(simplex)
                .with_sd_tolerance(p.tolerance)
                .map_err(|e| not_converged(iterations, &best, &prepared, e.to_string()))?;
            let budget = p.max_iters - iterations;
            let res = Executor::new(objective.clone(), solver)
                .configure(|s| s.max_iters(budget))
                .run()
                .map_err(|e: ArgminError| {
                    not_converged(iterations, &best, &prepared, e.to_string())
                })?;
            let state = res.state();
            iterations += state.get_iter();
            let improvement = best_cost - state.get_best_cost();
            if let Some(param) = state.get_best_param()
                && state.get_best_cost() < best_cost
            {
                best = param.clone();
                best_cost = state.get_best_cost();
            }
            if !matches!(
                state.get_termination_reason(),
                Some(TerminationReason::SolverConverged)
            ) {
                // Out of budget. If an earlier run converged, this was only a polishing
                // restart and `best` is at least as good as that run's optimum.
                break;
            }
            converged_runs += 1;
            // Restart around the optimum until a restart no longer improves it noticeably.
            if (converged_runs > 1 && improvement <= 10.0 * p.tolerance) || converged_runs >= 8 {
                break;
            }
            step = 0.1;
        }
        if converged_runs == 0 {
            return Err(not_converged(
                iterations,
                &best,
                &prepared,
                format!("no convergence within max_iters = {}", p.max_iters),
            ));
        }
        // A maximum at |ln θ| > 25 means the likelihood kept rising towards a boundary
        // (e.g. a → 0 or b → ∞): the data cannot identify the model.
        if best.iter().any(|v| !v.is_finite() || v.abs() > 25.0) {
            return Err(not_converged(
                iterations,
                &best,
                &prepared,
                "estimate ran off to a degenerate boundary".to_string(),
            ));
        }
        let [r, alpha, a, b] = exp4(&best);
        Ok(FittedBgNbd {
            r,
            alpha,
            a,
            b,
            log_likelihood: prepared.log_likelihood(r, alpha, a, b),
            n: data.len(),
            iterations,
        })
    }
}

fn not_converged(iterations: u64, best: &[f64], data: &Prepared, reason: String) -> BgNbdError {
    let [r, alpha, a, b] = exp4(best);
    BgNbdError::NotConverged {
        iterations,
        params: [r, alpha, a, b],
        log_likelihood: data.log_likelihood(r, alpha, a, b),
        reason,
    }
}

fn exp4(v: &[f64]) -> [f64; 4] {
    [v[0].exp(), v[1].exp(), v[2].exp(), v[3].exp()]
}

fn simplex_around(center: &[f64], step: f64) -> Vec<Vec<f64>> {
    let mut simplex = vec![center.to_vec()];
    for i in 0..center.len() {
        let mut v = center.to_vec();
        v[i] += step;
        simplex.push(v);
    }
    simplex
}

/// The data prepared for fast likelihood evaluation: identical rows merged with weights, and
/// the distinct values of `x`, `t_x` and `T` indexed so per-value terms are computed once.
struct Prepared {
    /// Total number of customers.
    n: f64,
    /// Distinct `T` values (all rows).
    ts: Vec<f64>,
    /// Distinct `t_x` values among rows with `x > 0`.
    txs: Vec<f64>,
    /// Distinct `x > 0` values and their total weights.
    xs: Vec<f64>,
    x_weights: Vec<f64>,
    /// `x = 0` rows merged by `T`: (index into `ts`, weight).
    zero_rows: Vec<(u32, f64)>,
    /// `x > 0` rows merged by `(x, t_x, T)`.
    rows: Vec<Row>,
}

#[derive(Clone, Copy)]
struct Row {
    ix: u32,
    itx: u32,
    it: u32,
    w: f64,
}

impl Prepared {
    fn new(data: &[Rft]) -> Result<Self, BgNbdError> {
        if data.is_empty() {
            return Err(BgNbdError::EmptyData);
        }
        // Valid values are finite and >= 0, so their bit patterns sort like the numbers
        // (after turning a possible -0.0 into +0.0).
        let mut keys: Vec<[u64; 3]> = Vec::with_capacity(data.len());
        for (index, row) in data.iter().enumerate() {
            row.check().map_err(|reason| BgNbdError::InvalidData {
                index,
                row: *row,
                reason,
            })?;
            keys.push([
                (row.x + 0.0).to_bits(),
                (row.t_x + 0.0).to_bits(),
                (row.t + 0.0).to_bits(),
            ]);
        }
        keys.sort_unstable();
        let n_repeat = keys.iter().filter(|k| f64::from_bits(k[0]) > 0.0).count();
        if n_repeat == 0 {
            return Err(BgNbdError::NoRepeatPurchases { n: data.len() });
        }
        let distinct = |it: &mut dyn Iterator<Item = u64>| -> Vec<u64> {
            let mut v: Vec<u64> = it.collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let t_bits = distinct(&mut keys.iter().map(|k| k[2]));
        let tx_bits = distinct(&mut keys.iter().filter(|k| k[0] != 0).map(|k| k[1]));
        let index_of = |v: &[u64], b: u64| v.binary_search(&b).expect("value indexed") as u32;

        let mut xs = Vec::new();
        let mut x_weights = Vec::new();
        let mut zero_rows: Vec<(u32, f64)> = Vec::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut i = 0;
        while i < keys.len() {
            let mut j = i + 1;
            while j < keys.len() && keys[j] == keys[i] {
                j += 1;
            }
            let w = (j - i) as f64;
            let [xb, txb, tb] = keys[i];
            let it = index_of(&t_bits, tb);
            if xb == 0 {
                zero_rows.push((it, w));
            } else {
                if xs.last().map(|&x: &f64| x.to_bits()) != Some(xb) {
                    xs.push(f64::from_bits(xb));
                    x_weights.push(0.0);
                }
                *x_weights.last_mut().expect("pushed") += w;
                rows.push(Row {
                    ix: (xs.len() - 1) as u32,
                    itx: index_of(&tx_bits, txb),
                    it,
                    w,
                });
            }
            i = j;
        }
        Ok(Prepared {
            n: data.len() as f64,
            ts: t_bits.into_iter().map(f64::from_bits).collect(),
            txs: tx_bits.into_iter().map(f64::from_bits).collect(),
            xs,
            x_weights,
            zero_rows,
            rows,
        })
    }

    /// Total log-likelihood at `(r, alpha, a, b)`, summed with the weights.
    fn log_likelihood(&self, r: f64, alpha: f64, a: f64, b: f64) -> f64 {
        let ln_t: Vec<f64> = self.ts.iter().map(|t| (alpha + t).ln()).collect();
        let ln_tx: Vec<f64> = self.txs.iter().map(|t| (alpha + t).ln()).collect();
        let lng_r = ln_gamma(r);
        let lnb_ab = ln_beta(a, b);
        let ln_a = a.ln();
        // Per distinct x > 0: r + x, and ln(a / (b + x - 1)).
        let rx: Vec<f64> = self.xs.iter().map(|x| r + x).collect();
        let ln_k: Vec<f64> = self.xs.iter().map(|x| ln_a - (b + x - 1.0).ln()).collect();

        // Every customer: r ln(alpha).
        let mut ll = self.n * r * alpha.ln();
        // x > 0 groups: lnΓ(r+x) − lnΓ(r) + ln B(a, b+x) − ln B(a, b).
        for (x, w) in self.xs.iter().zip(&self.x_weights) {
            ll += w * (ln_gamma(r + x) - lng_r + ln_beta(a, b + x) - lnb_ab);
        }
        // x = 0 rows: − r ln(alpha + T).
        let mut s0 = 0.0;
        for &(it, w) in &self.zero_rows {
            s0 += w * ln_t[it as usize];
        }
        ll -= r * s0;
        // x > 0 rows: ln[(alpha+T)^−(r+x) + a/(b+x−1) (alpha+t_x)^−(r+x)], by log-sum-exp.
        let mut s = 0.0;
        for row in &self.rows {
            let rx = rx[row.ix as usize];
            let u = -rx * ln_t[row.it as usize];
            let v = ln_k[row.ix as usize] - rx * ln_tx[row.itx as usize];
            s += row.w * log_add_exp(u, v);
        }
        ll + s
    }
}

/// ln(e^u + e^v) without overflow.
#[inline]
fn log_add_exp(u: f64, v: f64) -> f64 {
    let (hi, lo) = if u > v { (u, v) } else { (v, u) };
    hi + (lo - hi).exp().ln_1p()
}

/// ln(1 + e^c) without overflow.
#[inline]
fn softplus(c: f64) -> f64 {
    if c > 0.0 {
        c + (-c).exp().ln_1p()
    } else {
        c.exp().ln_1p()
    }
}

/// Mean negative log-likelihood per customer plus the L2 penalty, over log-parameters.
#[derive(Clone)]
struct Objective<'a> {
    data: &'a Prepared,
    penalizer: f64,
}

impl Objective<'_> {
    fn eval(&self, log_params: &[f64]) -> f64 {
        // Keep exp() finite; such points are never optimal.
        if log_params.iter().any(|v| !v.is_finite() || v.abs() > 200.0) {
            return 1e100;
        }
        let [r, alpha, a, b] = exp4(log_params);
        let ll = self.data.log_likelihood(r, alpha, a, b);
        let penalty: f64 = log_params.iter().map(|v| v * v).sum::<f64>() * self.penalizer;
        let cost = -ll / self.data.n + penalty;
        // Nelder–Mead sorts by cost and must never see NaN.
        if cost.is_finite() { cost } else { 1e100 }
    }
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> Result<Self::Output, ArgminError> {
        Ok(self.eval(p))
    }
}

/// A fitted BG/NBD model: the four parameters and fit diagnostics. Times are in the unit of the
/// data it was fitted on (`alpha` carries the unit; see [`FittedBgNbd::rescaled`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FittedBgNbd {
    /// Shape of the Gamma distribution of purchase rates λ.
    pub r: f64,
    /// Rate of the Gamma distribution of λ (in time units: mean λ = r / alpha per unit).
    pub alpha: f64,
    /// First shape of the Beta distribution of the dropout probability p.
    pub a: f64,
    /// Second shape of the Beta distribution of p (mean p = a / (a + b)).
    pub b: f64,
    /// Total (unpenalised) log-likelihood of the fitting data at these parameters.
    pub log_likelihood: f64,
    /// Number of customers fitted on.
    pub n: usize,
    /// Nelder–Mead iterations used (over all restarts).
    pub iterations: u64,
}

impl FittedBgNbd {
    /// Total log-likelihood of `data` at these parameters (row by row, no validation: invalid
    /// rows give NaN or meaningless values). Depends on the time unit: rescaling all times by
    /// `f` shifts it by `−Σx · ln f`.
    pub fn log_likelihood_of(&self, data: &[Rft]) -> f64 {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let base = r * alpha.ln() - ln_gamma(r) - ln_beta(a, b);
        data.iter()
            .map(|c| {
                let rx = r + c.x;
                let head = base + ln_gamma(rx) + ln_beta(a, b + c.x);
                let u = -rx * (alpha + c.t).ln();
                if c.x > 0.0 {
                    let v = a.ln() - (b + c.x - 1.0).ln() - rx * (alpha + c.t_x).ln();
                    head + log_add_exp(u, v)
                } else {
                    head + u
                }
            })
            .sum()
    }

    /// ln of the odds "inactive : active" in the P(alive) formula; −∞ when x = 0.
    fn ln_dead_odds(&self, c: &Rft) -> f64 {
        if c.x > 0.0 {
            (self.a / (self.b + c.x - 1.0)).ln()
                + (self.r + c.x) * ((self.alpha + c.t).ln() - (self.alpha + c.t_x).ln())
        } else {
            f64::NEG_INFINITY
        }
    }

    /// P(alive | x, t_x, T) = 1 / (1 + δ(x>0) · a/(b+x−1) · ((alpha+T)/(alpha+t_x))^(r+x))
    /// (FHL 2005, eq. 11), computed in log space. Exactly 1 when x = 0: in BG/NBD a customer can
    /// only drop out right after a repeat purchase.
    pub fn p_alive(&self, c: &Rft) -> f64 {
        (-softplus(self.ln_dead_odds(c))).exp()
    }

    /// E[X(T, T+horizon) | x, t_x, T]: expected number of purchases in the next `horizon` time
    /// units (FHL 2005, eq. 10):
    ///
    /// `P(alive) · (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+h))^(r+x) · 2F1(r+x, b+x; a+b+x−1; z)]`,
    /// `z = h/(α+T+h)`.
    ///
    /// Evaluated through Euler's transformation `2F1(A,B;C;z) = (1−z)^(C−A−B) 2F1(C−A,C−B;C;z)`,
    /// which turns the bracket into `c·E₁ − (1−z)^(a−1)·H` with `c = a+b+x−1`,
    /// `E₁ = (1 − (1−z)^(a−1))/(a−1)` and `H = p z · 3F2(p+1, a, 1; c+1, 2; z)`, `p = a+b−1−r`.
    /// That form has no removable singularity at `a = 1` (nor at `c = 0`), and its series has no
    /// huge intermediate terms for large `x`. `horizon` must be ≥ 0 (NaN otherwise); the
    /// series needs about 40/(1−z) terms, and gives NaN past a million, i.e. for a horizon
    /// beyond ~25 000 × (alpha + T) — far outside any practical use.
    pub fn expected_purchases(&self, c: &Rft, horizon: f64) -> f64 {
        if horizon.is_nan() || horizon < 0.0 {
            return f64::NAN;
        }
        if horizon == 0.0 {
            return 0.0;
        }
        self.p_alive(c) * self.expected_if_alive(c, horizon)
    }

    /// E[X(T, T+h) | alive at T, x, t_x, T]: the unconditional BG/NBD expectation with the
    /// posterior parameters r+x, alpha+T, a, b+x.
    fn expected_if_alive(&self, c: &Rft, h: f64) -> f64 {
        let (r, a, b) = (self.r, self.a, self.b);
        let alpha_t = self.alpha + c.t;
        let z = h / (alpha_t + h);
        let ln_1mz = -(h / alpha_t).ln_1p(); // ln(1 − z), exact form
        let cc = a + b + c.x - 1.0;
        let am1 = a - 1.0;
        let e1 = if am1 == 0.0 {
            -ln_1mz
        } else {
            -(am1 * ln_1mz).exp_m1() / am1
        };
        let p = a + b - 1.0 - r;
        let (mantissa, ln_scale) = hyp_series(&[p + 1.0, a, 1.0], &[cc + 1.0, 2.0], z);
        let h_term = p * z * mantissa * (am1 * ln_1mz + ln_scale).exp();
        cc * e1 - h_term
    }

    /// P(at least one purchase in (T, T+horizon] | x, t_x, T)
    /// `= P(alive) · (1 − ((alpha+T)/(alpha+T+horizon))^(r+x))`.
    ///
    /// Derivation: an inactive customer never buys again. An active one stays active at least
    /// until the next purchase (dropout only happens right after a purchase), which comes after
    /// an Exponential(λ) wait, so P(≥1 purchase | λ, alive) = 1 − e^(−λ·horizon). Given the
    /// history and being alive, the likelihood in λ is λ^x e^(−λT) whatever p is, so the
    /// posterior of λ is Gamma(r+x, alpha+T); its Laplace transform at `horizon` is
    /// ((alpha+T)/(alpha+T+horizon))^(r+x). `horizon` must be ≥ 0 (NaN otherwise).
    pub fn p_purchase_within(&self, c: &Rft, horizon: f64) -> f64 {
        if horizon.is_nan() || horizon < 0.0 {
            return f64::NAN;
        }
        let ln_ratio = -(horizon / (self.alpha + c.t)).ln_1p(); // ln((α+T)/(α+T+h))
        self.p_alive(c) * -((self.r + c.x) * ln_ratio).exp_m1()
    }

    /// The same model in another time unit: `factor` = new units per old unit (weeks → days:
    /// 7). Only `alpha` changes (`alpha · factor`); `p_alive` is unchanged and expectations
    /// agree once the horizon and the `Rft` times are also multiplied by `factor`.
    /// `log_likelihood` is kept as fitted: in the new unit the same data would score
    /// `−Σx · ln(factor)` differently (the purchase-time densities change unit), which this
    /// summary cannot know, so compare log-likelihoods only within one unit (or recompute with
    /// [`FittedBgNbd::log_likelihood_of`]).
    ///
    /// # Panics
    /// If `factor` is not finite and > 0.
    pub fn rescaled(&self, factor: f64) -> FittedBgNbd {
        assert!(
            factor.is_finite() && factor > 0.0,
            "time rescaling factor must be finite and > 0, got {factor}"
        );
        FittedBgNbd {
            alpha: self.alpha * factor,
            ..self.clone()
        }
    }
}

/// Gauss hypergeometric function 2F1(a, b; c; z) by its power series, for |z| < 1 and c not
/// 0, −1, −2, … (NaN outside that domain, or for overflow / no convergence within a million
/// terms). Accurate to a few ulps when all terms have one sign (a, b, c > 0, 0 ≤ z < 1, the
/// BG/NBD case); slow as z → 1 (about 40/(1−z) terms).
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let (mantissa, ln_scale) = hyp_series(&[a, b], &[c], z);
    mantissa * ln_scale.exp()
}

const SERIES_MAX_TERMS: usize = 1_000_000;

/// Generalised hypergeometric series Σₙ Πᵢ(numᵢ)ₙ / Πⱼ(denⱼ)ₙ · zⁿ/n!, for |z| < 1.
/// Returns `(mantissa, ln_scale)` with value = mantissa · e^ln_scale, so huge partial sums do
/// not overflow. NaN mantissa on a bad domain or no convergence.
fn hyp_series(num: &[f64], den: &[f64], z: f64) -> (f64, f64) {
    const RESCALE: f64 = 1e200;
    if z.is_nan() || z.abs() >= 1.0 || den.iter().any(|&d| d <= 0.0 && d.fract() == 0.0) {
        return (f64::NAN, 0.0);
    }
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    let mut ln_scale = 0.0f64;
    if z == 0.0 {
        return (sum, ln_scale);
    }
    for n in 0..SERIES_MAX_TERMS {
        let nf = n as f64;
        let mut ratio = z / (nf + 1.0);
        for &p in num {
            ratio *= p + nf;
        }
        for &q in den {
            ratio /= q + nf;
        }
        term *= ratio;
        sum += term;
        if term == 0.0 {
            return (sum, ln_scale); // a numerator parameter hit 0, -1, …: a polynomial
        }
        if sum.abs() > RESCALE || term.abs() > RESCALE {
            sum /= RESCALE;
            term /= RESCALE;
            ln_scale += RESCALE.ln();
        }
        // The ratio tends to z; once the remaining terms shrink at least geometrically with
        // q = max(|ratio|, |z|) < 1, the tail is at most |term|·q/(1−q).
        let q = ratio.abs().max(z.abs());
        if q < 1.0 && term.abs() * q <= 0.5 * f64::EPSILON * sum.abs() * (1.0 - q) {
            return (sum, ln_scale);
        }
        if !sum.is_finite() {
            break;
        }
    }
    (f64::NAN, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDNOW: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/cdnow/cdnow_customers_summary.csv"
    );

    /// (ID, Rft) rows of the CDNOW summary (weeks), or None (with a printed reason) if absent.
    fn load_cdnow() -> Option<Vec<(u32, Rft)>> {
        let text = match std::fs::read_to_string(CDNOW) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping: CDNOW summary not readable at {CDNOW}: {e}");
                return None;
            }
        };
        let mut lines = text.lines();
        assert_eq!(lines.next().map(str::trim), Some("ID,frequency,recency,T"));
        let rows = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.trim().split(',').collect();
                assert_eq!(f.len(), 4, "bad line {l:?}");
                let num = |s: &str| s.parse::<f64>().expect("number");
                let row = Rft {
                    x: num(f[1]),
                    t_x: num(f[2]),
                    t: num(f[3]),
                };
                (f[0].parse().expect("id"), row)
            })
            .collect::<Vec<_>>();
        assert_eq!(rows.len(), 2357);
        Some(rows)
    }

    fn published() -> FittedBgNbd {
        FittedBgNbd {
            r: 0.243,
            alpha: 4.414,
            a: 0.793,
            b: 2.426,
            log_likelihood: -9582.4,
            n: 2357,
            iterations: 0,
        }
    }

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn reproduces_fader_hardie_lee_cdnow() {
        let Some(rows) = load_cdnow() else { return };
        let data: Vec<Rft> = rows.iter().map(|r| r.1).collect();
        let start = std::time::Instant::now();
        let m = BgNbdParams::new().fit(&data).expect("fit");
        eprintln!("CDNOW fit in {:?}: {m:?}", start.elapsed());
        assert!(rel(m.r, 0.243) < 0.01, "r = {}", m.r);
        assert!(rel(m.alpha, 4.414) < 0.01, "alpha = {}", m.alpha);
        assert!(rel(m.a, 0.793) < 0.01, "a = {}", m.a);
        assert!(rel(m.b, 2.426) < 0.01, "b = {}", m.b);
        assert!(
            (m.log_likelihood - -9582.4).abs() < 0.1,
            "LL = {}",
            m.log_likelihood
        );
        assert_eq!(m.n, 2357);
        // The aggregated likelihood equals the plain row-by-row one.
        let direct = m.log_likelihood_of(&data);
        assert!(
            (direct - m.log_likelihood).abs() < 1e-8,
            "{direct} vs {}",
            m.log_likelihood
        );
        // Rounded published parameters score (almost) the same.
        assert!((published().log_likelihood_of(&data) - -9582.4).abs() < 0.1);
    }

    #[test]
    fn cdnow_conditional_expectations() {
        let m = published();
        let id1 = Rft {
            x: 2.0,
            t_x: 30.43,
            t: 38.86,
        };
        let e = m.expected_purchases(&id1, 39.0);
        eprintln!("CDNOW ID 1: E[X(39 weeks)] = {e}");
        assert!((e - 1.226).abs() < 0.005, "E = {e}");
        // The Euler-transformed evaluation agrees with the textbook formula.
        let (r, al, a, b) = (m.r, m.alpha, m.a, m.b);
        let (x, t) = (id1.x, id1.t);
        let z = 39.0 / (al + t + 39.0);
        let textbook = m.p_alive(&id1) * (a + b + x - 1.0) / (a - 1.0)
            * (1.0
                - ((al + t) / (al + t + 39.0)).powf(r + x)
                    * hyp2f1(r + x, b + x, a + b + x - 1.0, z));
        assert!((e - textbook).abs() < 1e-12, "{e} vs {textbook}");

        let Some(rows) = load_cdnow() else { return };
        let zeros: Vec<Rft> = rows.iter().map(|r| r.1).filter(|c| c.x == 0.0).collect();
        assert_eq!(zeros.len(), 1411);
        let mean = zeros
            .iter()
            .map(|c| m.expected_purchases(c, 39.0))
            .sum::<f64>()
            / zeros.len() as f64;
        eprintln!("CDNOW x = 0 group: mean E[X(39 weeks)] = {mean}");
        // Published to two decimals: 0.23 (0.2255 with the rounded parameters).
        assert!((mean * 100.0).round() == 23.0, "mean E over x = 0: {mean}");
    }

    #[test]
    fn hyp2f1_reference_values() {
        // 2F1(1,1;2;z) = −ln(1−z)/z
        for z in [-0.9f64, -0.5, -0.1, 1e-8, 0.1, 0.5, 0.9, 0.99] {
            let want = -(-z).ln_1p() / z;
            assert!(rel(hyp2f1(1.0, 1.0, 2.0, z), want) < 1e-13, "z = {z}");
        }
        // 2F1(a,b;b;z) = (1−z)^(−a)
        for (a, b, z) in [
            (0.3f64, 2.0, 0.7f64),
            (5.5, 0.1, 0.5),
            (25.0, 3.0, 0.9),
            (2.0, 1.5, -0.6),
        ] {
            let want = (1.0 - z).powf(-a);
            assert!(rel(hyp2f1(a, b, b, z), want) < 1e-12, "{a} {b} {z}");
        }
        // 2F1(1/2,1/2;3/2;z²) = asin(z)/z; 2F1(1/2,1;3/2;−z²) = atan(z)/z
        for z in [0.1f64, 0.5, 0.9] {
            assert!(rel(hyp2f1(0.5, 0.5, 1.5, z * z), z.asin() / z) < 1e-13);
            assert!(rel(hyp2f1(0.5, 1.0, 1.5, -z * z), z.atan() / z) < 1e-13);
        }
        // Polynomial case: 2F1(−2, b; c; z) = 1 − 2bz/c + b(b+1)z²/(c(c+1))
        let (b, c, z) = (1.5, 2.5, 0.3);
        let want = 1.0 - 2.0 * b * z / c + b * (b + 1.0) * z * z / (c * (c + 1.0));
        assert!(rel(hyp2f1(-2.0, b, c, z), want) < 1e-14);
        // Near z = 1 (slow convergence, ~4e5 terms): Gauss's sum 2F1(a,b;c;1) =
        // Γ(c)Γ(c−a−b)/(Γ(c−a)Γ(c−b)) minus the first-order term f'(1)(1−z), where
        // f'(1) = ab/c · 2F1(a+1,b+1;c+1;1); the remainder is O((1−z)^(c−a−b)).
        let gauss = |a: f64, b: f64, c: f64| {
            (ln_gamma(c) + ln_gamma(c - a - b) - ln_gamma(c - a) - ln_gamma(c - b)).exp()
        };
        let (a, b, c, z) = (0.5, 0.75, 3.0, 0.9999);
        let near_1 = gauss(a, b, c) - a * b / c * gauss(a + 1.0, b + 1.0, c + 1.0) * (1.0 - z);
        assert!(
            rel(hyp2f1(a, b, c, z), near_1) < 1e-6,
            "{} vs {near_1}",
            hyp2f1(a, b, c, z)
        );
        // Large parameters overflow-free via the scale: 2F1(400, 400; 400; 0.9) = 10^400.
        let (mantissa, ln_scale) = hyp_series(&[400.0, 400.0], &[400.0], 0.9);
        assert!((mantissa.ln() + ln_scale - 400.0 * 10f64.ln()).abs() < 1e-9);
        // Outside the domain.
        assert!(hyp2f1(1.0, 1.0, 2.0, 1.0).is_nan());
        assert!(hyp2f1(1.0, 1.0, -1.0, 0.5).is_nan());
    }

    /// E[X(T, T+h) | alive] by direct numerical integration over the Beta posterior of p:
    /// E = E_p[(1/p)(1 − ((α+T)/(α+T+p h))^(r+x))], p ~ Beta(a, b+x).
    fn expected_if_alive_by_quadrature(m: &FittedBgNbd, c: &Rft, h: f64) -> f64 {
        let (rx, at, a, bx) = (m.r + c.x, m.alpha + c.t, m.a, m.b + c.x);
        let g = |p: f64| {
            if p == 0.0 {
                rx * h / at
            } else {
                -(-rx * (p * h / at).ln_1p()).exp_m1() / p
            }
        };
        let simpson = |f: &dyn Fn(f64) -> f64, lo: f64, hi: f64, n: usize| {
            let step = (hi - lo) / n as f64;
            let mut s = f(lo) + f(hi);
            for i in 1..n {
                s += f(lo + i as f64 * step) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            s * step / 3.0
        };
        // Left half: p = u^(1/a) absorbs p^(a−1); right half: 1−p = v^(1/bx) absorbs (1−p)^(bx−1).
        let left = simpson(
            &|u: f64| {
                let p = u.powf(1.0 / a);
                g(p) * (1.0 - p).powf(bx - 1.0) / a
            },
            0.0,
            0.5f64.powf(a),
            200_000,
        );
        let right = simpson(
            &|v: f64| {
                let q = v.powf(1.0 / bx);
                g(1.0 - q) * (1.0 - q).powf(a - 1.0) / bx
            },
            0.0,
            0.5f64.powf(bx),
            200_000,
        );
        (left + right) / ln_beta(a, bx).exp()
    }

    #[test]
    fn expectation_matches_quadrature_including_a_near_1() {
        let cases = [
            (0.243, 4.414, 0.793, 2.426, 2.0, 30.43, 38.86, 39.0),
            (0.5, 30.0, 1.0, 3.0, 5.0, 200.0, 365.0, 365.0),
            (0.5, 30.0, 1.0 + 1e-9, 3.0, 0.0, 0.0, 10.0, 90.0),
            (1.5, 10.0, 2.5, 0.7, 0.0, 0.0, 5.0, 100.0),
            (0.3, 5.0, 0.4, 0.5, 0.0, 0.0, 20.0, 50.0),
            (2.0, 50.0, 0.9, 8.0, 60.0, 300.0, 310.0, 365.0),
        ];
        for (r, alpha, a, b, x, t_x, t, h) in cases {
            let m = FittedBgNbd {
                r,
                alpha,
                a,
                b,
                ..published()
            };
            let c = Rft { x, t_x, t };
            let ours = m.expected_if_alive(&c, h);
            let quad = expected_if_alive_by_quadrature(&m, &c, h);
            assert!(
                rel(ours, quad) < 1e-6,
                "{:?}: {ours} vs {quad}",
                (r, alpha, a, b, x, t_x, t, h)
            );
            let full = m.expected_purchases(&c, h);
            assert!(rel(full, quad * m.p_alive(&c)) < 1e-6);
        }
        // Continuity across a = 1.
        let c = Rft {
            x: 3.0,
            t_x: 20.0,
            t: 40.0,
        };
        let at = |a: f64| FittedBgNbd { a, ..published() }.expected_purchases(&c, 52.0);
        assert!((at(1.0) - at(1.0 + 1e-7)).abs() < 1e-6);
        assert!((at(1.0) - at(1.0 - 1e-7)).abs() < 1e-6);
        // Huge x: finite and close to the "still alive, p tiny" approximation (r+x) h / (α+T).
        let c = Rft {
            x: 3000.0,
            t_x: 364.0,
            t: 365.0,
        };
        let m = FittedBgNbd {
            alpha: 30.0,
            ..published()
        };
        let e = m.expected_purchases(&c, 30.0);
        assert!(
            e.is_finite() && e > 0.0 && e < (m.r + c.x) * 30.0 / (m.alpha + c.t),
            "{e}"
        );
        assert_eq!(m.expected_purchases(&c, 0.0), 0.0);
        assert!(m.expected_purchases(&c, -1.0).is_nan());
    }

    #[test]
    fn p_alive_properties() {
        let m = published();
        assert_eq!(
            m.p_alive(&Rft {
                x: 0.0,
                t_x: 0.0,
                t: 38.0
            }),
            1.0
        );
        // Published formula, directly.
        let c = Rft {
            x: 2.0,
            t_x: 30.43,
            t: 38.86,
        };
        let direct = 1.0
            / (1.0
                + m.a / (m.b + c.x - 1.0) * ((m.alpha + c.t) / (m.alpha + c.t_x)).powf(m.r + c.x));
        assert!((m.p_alive(&c) - direct).abs() < 1e-14);
        // Decreasing in T with x, t_x fixed.
        let mut prev = 1.0;
        for t in [10.0, 20.0, 40.0, 80.0, 160.0] {
            let p = m.p_alive(&Rft {
                x: 3.0,
                t_x: 10.0,
                t,
            });
            assert!(p < prev && p > 0.0, "T = {t}: {p}");
            prev = p;
        }
        // No overflow for extreme histories.
        let p = m.p_alive(&Rft {
            x: 5000.0,
            t_x: 1.0,
            t: 1e6,
        });
        assert!((0.0..1e-300).contains(&p));
        // Invariant under a change of time unit.
        let d = m.rescaled(7.0);
        assert_eq!(d.alpha, m.alpha * 7.0);
        for c in [
            Rft {
                x: 2.0,
                t_x: 30.43,
                t: 38.86,
            },
            Rft {
                x: 7.0,
                t_x: 5.0,
                t: 30.0,
            },
        ] {
            let cd = Rft {
                x: c.x,
                t_x: c.t_x * 7.0,
                t: c.t * 7.0,
            };
            assert!((m.p_alive(&c) - d.p_alive(&cd)).abs() < 1e-12);
            let (e, ed) = (
                m.expected_purchases(&c, 39.0),
                d.expected_purchases(&cd, 273.0),
            );
            assert!(rel(ed, e) < 1e-10, "{e} vs {ed}");
            let (p, pd) = (m.p_purchase_within(&c, 4.0), d.p_purchase_within(&cd, 28.0));
            assert!(rel(pd, p) < 1e-12);
        }
    }

    #[test]
    fn p_purchase_within_properties() {
        let m = published();
        let c = Rft {
            x: 2.0,
            t_x: 30.43,
            t: 38.86,
        };
        let (pa, rx, at) = (m.p_alive(&c), m.r + c.x, m.alpha + c.t);
        for h in [0.5, 4.0, 39.0, 1000.0] {
            let want = pa * (1.0 - (at / (at + h)).powf(rx));
            assert!((m.p_purchase_within(&c, h) - want).abs() < 1e-14);
        }
        assert_eq!(m.p_purchase_within(&c, 0.0), 0.0);
        assert!((m.p_purchase_within(&c, 1e12) - pa).abs() < 1e-9);
        // Never above the expected count, and below P(alive).
        let p = m.p_purchase_within(&c, 39.0);
        assert!(p < m.expected_purchases(&c, 39.0) && p < pa);
    }

    #[test]
    fn rft_from_days() {
        assert_eq!(rft_from_purchase_days(&[], 10), None);
        assert_eq!(rft_from_purchase_days(&[10, 12], 10), None);
        assert_eq!(
            rft_from_purchase_days(&[5], 10),
            Some(Rft {
                x: 0.0,
                t_x: 0.0,
                t: 5.0
            })
        );
        // Same-day merged, unordered, future days ignored.
        assert_eq!(
            rft_from_purchase_days(&[9, 3, 3, 7, 9, 15, 10], 10),
            Some(Rft {
                x: 2.0,
                t_x: 6.0,
                t: 7.0
            })
        );
        let r = rft_from_purchase_days(&[-4, -4, 0], 1).expect("some");
        assert_eq!(
            r,
            Rft {
                x: 1.0,
                t_x: 4.0,
                t: 5.0
            }
        );
        assert!(r.check().is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let m = FittedBgNbd {
            iterations: 417,
            log_likelihood: -9_582.429_1,
            ..published()
        };
        let json = serde_json::to_string(&m).expect("serialize");
        let back: FittedBgNbd = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, m);
        let c = Rft {
            x: 1.0,
            t_x: 2.0,
            t: 3.0,
        };
        let back: Rft = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn errors() {
        let p = BgNbdParams::new();
        assert!(matches!(p.fit(&[]), Err(BgNbdError::EmptyData)));
        let ok = Rft {
            x: 1.0,
            t_x: 1.0,
            t: 2.0,
        };
        let bad_rows = [
            Rft {
                x: f64::NAN,
                t_x: 1.0,
                t: 2.0,
            },
            Rft {
                x: 1.0,
                t_x: f64::INFINITY,
                t: 2.0,
            },
            Rft {
                x: -1.0,
                t_x: 1.0,
                t: 2.0,
            },
            Rft {
                x: 1.0,
                t_x: 1.0,
                t: -2.0,
            },
            Rft {
                x: 1.5,
                t_x: 1.0,
                t: 2.0,
            },
            Rft {
                x: 1.0,
                t_x: 3.0,
                t: 2.0,
            },
            Rft {
                x: 0.0,
                t_x: 1.0,
                t: 2.0,
            },
            Rft {
                x: 2.0,
                t_x: 0.0,
                t: 2.0,
            },
        ];
        for bad in bad_rows {
            let r = p.fit(&[ok, ok, bad, ok]);
            assert!(
                matches!(r, Err(BgNbdError::InvalidData { index: 2, row, .. }) if row.t == bad.t),
                "{bad:?}: {r:?}"
            );
        }
        let zeros = [Rft {
            x: 0.0,
            t_x: 0.0,
            t: 5.0,
        }; 3];
        assert!(matches!(
            p.fit(&zeros),
            Err(BgNbdError::NoRepeatPurchases { n: 3 })
        ));
        let invalid = |p: BgNbdParams, field: &str| matches!(p.fit(&[ok]), Err(BgNbdError::InvalidParams { name, .. }) if name == field);
        assert!(invalid(BgNbdParams::new().max_iters(0), "max_iters"));
        assert!(invalid(BgNbdParams::new().tolerance(0.0), "tolerance"));
        assert!(invalid(BgNbdParams::new().tolerance(f64::NAN), "tolerance"));
        assert!(invalid(BgNbdParams::new().penalizer(-1.0), "penalizer"));
        assert!(invalid(
            BgNbdParams::new().initial([1.0, 0.0, 1.0, 1.0]),
            "initial.alpha"
        ));
        // Too few iterations.
        let tiny = [
            ok,
            Rft {
                x: 0.0,
                t_x: 0.0,
                t: 4.0,
            },
            Rft {
                x: 3.0,
                t_x: 5.0,
                t: 9.0,
            },
        ];
        assert!(matches!(
            BgNbdParams::new().max_iters(3).fit(&tiny),
            Err(BgNbdError::NotConverged { iterations: 3, .. })
        ));
    }

    // ---- simulation ---------------------------------------------------------------------

    /// SplitMix64 with the few distributions the simulation needs.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform on (0, 1).
        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
        fn exponential(&mut self, rate: f64) -> f64 {
            -self.uniform().ln() / rate
        }
        /// Gamma(shape, scale 1): Marsaglia–Tsang, with the shape < 1 boost.
        fn gamma(&mut self, shape: f64) -> f64 {
            if shape < 1.0 {
                return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
            }
            let d = shape - 1.0 / 3.0;
            let c = 1.0 / (9.0 * d).sqrt();
            loop {
                let x = self.normal();
                let v = (1.0 + c * x).powi(3);
                if v <= 0.0 {
                    continue;
                }
                let u = self.uniform();
                if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                    return d * v;
                }
            }
        }
        fn beta(&mut self, a: f64, b: f64) -> f64 {
            let x = self.gamma(a);
            x / (x + self.gamma(b))
        }
    }

    /// One BG/NBD customer observed for `t`: purchases after Exp(λ) waits; after each repeat
    /// purchase, dropout with probability p. Returns (x, t_x).
    fn simulate_customer(rng: &mut Rng, lambda: f64, p: f64, t: f64) -> (f64, f64) {
        let (mut x, mut t_x, mut now) = (0.0, 0.0, 0.0);
        loop {
            now += rng.exponential(lambda);
            if now > t {
                return (x, t_x);
            }
            x += 1.0;
            t_x = now;
            if rng.uniform() < p {
                return (x, t_x);
            }
        }
    }

    /// `n` customers from BG/NBD(r, alpha, a, b) with T uniform on [t_min, t_max]; with
    /// `whole_days`, times are floored to whole units (as production data in days), merging
    /// purchases within one unit like same-day purchases.
    fn simulate(
        seed: u64,
        n: usize,
        params: [f64; 4],
        t_min: f64,
        t_max: f64,
        whole_days: bool,
    ) -> Vec<Rft> {
        let [r, alpha, a, b] = params;
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| {
                let lambda = rng.gamma(r) / alpha;
                let p = rng.beta(a, b);
                let t = t_min + (t_max - t_min) * rng.uniform();
                if whole_days {
                    let t = t.floor();
                    let mut days = vec![0i64];
                    let (mut now, mut alive) = (0.0, true);
                    while alive {
                        now += rng.exponential(lambda);
                        if now >= t {
                            break;
                        }
                        days.push(now.floor() as i64);
                        alive = rng.uniform() >= p;
                    }
                    rft_from_purchase_days(&days, t as i64).expect("first purchase")
                } else {
                    let (x, t_x) = simulate_customer(&mut rng, lambda, p, t);
                    Rft { x, t_x, t }
                }
            })
            .collect()
    }

    #[test]
    fn recovers_simulated_parameters() {
        let truth = [0.25, 4.0, 0.8, 2.5];
        let data = simulate(42, 20_000, truth, 20.0, 80.0, false);
        let start = std::time::Instant::now();
        let m = BgNbdParams::new().fit(&data).expect("fit");
        eprintln!(
            "20k simulated (continuous times) fit in {:?}: {m:?}",
            start.elapsed()
        );
        let got = [m.r, m.alpha, m.a, m.b];
        // Tolerances ≈ 3 standard errors at n = 20 000 (a and b are the least precise).
        for ((g, t), tol) in got.iter().zip(truth).zip([0.08, 0.1, 0.2, 0.25]) {
            assert!(rel(*g, t) < tol, "got {got:?}, truth {truth:?}");
        }
        // Same customers in another unit: alpha scales, the rest is invariant.
        let days: Vec<Rft> = data
            .iter()
            .map(|c| Rft {
                x: c.x,
                t_x: c.t_x * 7.0,
                t: c.t * 7.0,
            })
            .collect();
        let md = BgNbdParams::new().fit(&days).expect("fit");
        assert!(
            rel(md.r, m.r) < 1e-3 && rel(md.alpha, 7.0 * m.alpha) < 1e-3,
            "{md:?}"
        );
        assert!(rel(md.a, m.a) < 1e-3 && rel(md.b, m.b) < 1e-3, "{md:?}");
        let sum_x: f64 = data.iter().map(|c| c.x).sum();
        assert!((md.log_likelihood - (m.log_likelihood - sum_x * 7f64.ln())).abs() < 0.01);
    }

    #[test]
    fn penalizer_shrinks_towards_one() {
        let truth = [0.25, 4.0, 0.8, 2.5];
        let data = simulate(7, 2_000, truth, 20.0, 80.0, false);
        let plain = BgNbdParams::new().fit(&data).expect("fit");
        let pen = BgNbdParams::new().penalizer(0.1).fit(&data).expect("fit");
        let dist = |m: &FittedBgNbd| {
            [m.r, m.alpha, m.a, m.b]
                .iter()
                .map(|v| v.ln().powi(2))
                .sum::<f64>()
        };
        assert!(dist(&pen) < dist(&plain));
        assert!(pen.log_likelihood < plain.log_likelihood);
    }

    /// Timing at production scale (whole days, so identical rows merge) and the worst case
    /// (continuous times). Run with
    /// `cargo test --release --lib bgnbd::tests::fit_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn fit_timing() {
        let truth = [0.25, 30.0, 0.8, 2.5];
        // Whole days (production), then continuous times (worst case: nothing merges).
        for (n, whole_days) in [(20_000usize, true), (1_000_000, true), (1_000_000, false)] {
            let t0 = std::time::Instant::now();
            let data = simulate(2024, n, truth, 1.0, 730.0, whole_days);
            let sim = t0.elapsed();
            let prepared = Prepared::new(&data).expect("valid");
            let distinct = prepared.rows.len() + prepared.zero_rows.len();
            let t1 = std::time::Instant::now();
            let m = BgNbdParams::new().fit(&data).expect("fit");
            eprintln!("n = {n}, whole days {whole_days}: {distinct} distinct (x, t_x, T) rows");
            eprintln!(
                "n = {n}: simulated in {sim:?}, fitted in {:?}: {m:?}",
                t1.elapsed()
            );
            let got = [m.r, m.alpha, m.a, m.b];
            for (g, t) in got.iter().zip(truth) {
                assert!(rel(*g, t) < 0.25, "{got:?}");
            }
        }
    }
}
