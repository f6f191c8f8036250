//! Point-in-time features: everything a model may know about a customer at a cutoff T.
//!
//! A [`Snapshot`] is built from [`BrandData`] using only rows strictly before T (orders are
//! sliced by binary search, browsing by window), so one load serves every cutoff and appending
//! future rows cannot change a feature (tested). Values are stored raw but already tamed
//! (log1p of counts and money, ratios capped); the models scale them robustly.

pub mod data;
pub mod labels;

use serde::{Deserialize, Serialize};

pub use data::{BrandData, DAY, LoadOptions, NO_CAT};
use data::{EV_CART, EV_CHECKOUT, EV_VIEW};

use crate::models::bgnbd::{FittedBgNbd, Rft, rft_from_purchase_days};

/// Bumped whenever a feature's meaning changes: a model refuses a snapshot of another version.
pub const FEATURE_VERSION: u32 = 1;

/// Customer-level features, in column order.
pub const BASE_FEATURES: &[&str] = &[
    "recency_days_log",
    "purchase_days_log",
    "monetary_total_log",
    "monetary_mean_log",
    "tenure_days_log",
    "gap_mean_log",
    "gap_cv",
    "overdue_log",
    "cycle_phase_log",
    "orders_30d_log",
    "orders_90d_log",
    "orders_365d_log",
    "discount_share",
    "last_amount_log",
    "bgnbd_p_alive",
    "bgnbd_expected_log",
    "bgnbd_p_return",
    "bgnbd_logit_return",
    "sessions_7d_log",
    "sessions_30d_log",
    "sessions_90d_log",
    "days_since_session_log",
    "views_7d_log",
    "views_30d_log",
    "carts_7d_log",
    "carts_30d_log",
    "checkouts_30d_log",
    "distinct_categories_log",
    "one_time_buyer",
];
pub const NB: usize = BASE_FEATURES.len();

/// How far back browsing features look; the loader must cover it. Sessions use all of it,
/// events (views, cart adds) only the last [`EVENT_LOOKBACK_DAYS`].
pub const BROWSE_LOOKBACK_DAYS: i64 = 90;
pub const EVENT_LOOKBACK_DAYS: i64 = 30;
/// Prior mean gap (days) blended into a customer's own gaps: a shrinkage weight of one gap.
const GAP_PRIOR_WEIGHT: f64 = 1.0;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureSchema {
    pub version: u32,
    pub base: Vec<String>,
    pub categories: Vec<String>,
}

impl FeatureSchema {
    pub fn new(categories: &[String]) -> Self {
        FeatureSchema {
            version: FEATURE_VERSION,
            base: BASE_FEATURES.iter().map(|s| s.to_string()).collect(),
            categories: categories.to_vec(),
        }
    }

    /// Short stable digest, stored with models and checked at scoring.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).expect("schema serializes");
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in json.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("v{}-{h:016x}", self.version)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FeatureParams {
    pub horizon_days: u32,
    /// Half-life (days) of the time decay on category spend.
    pub category_half_life_days: f64,
}

/// Features of the population (customers with a completed order before `cutoff`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub cutoff: i64,
    /// Customer indices into [`BrandData`].
    pub customers: Vec<u32>,
    /// Row-major `customers × NB`.
    pub base: Vec<f32>,
    pub rft: Vec<Rft>,
    /// Raw values the baselines use.
    pub recency_days: Vec<f32>,
    pub purchase_days: Vec<u32>,
    /// Own mean gap in days (NaN with a single purchase day).
    pub own_gap_days: Vec<f32>,
    pub p_alive: Vec<f32>,
    pub p_return_bgnbd: Vec<f32>,
    /// Main category of the last order with items (NO_CAT if none).
    pub last_cat: Vec<u16>,
    pub k: usize,
    /// Row-major `customers × k`: time-decayed spend share, order count, recent views and cart
    /// adds, and days since the category was last bought (capped; 10_000 = never).
    pub cat_decayed: Vec<f32>,
    pub cat_orders: Vec<f32>,
    pub cat_views: Vec<f32>,
    pub cat_carts: Vec<f32>,
    /// Orders whose main (largest-spend) category it was: count and time-decayed share.
    pub cat_main: Vec<f32>,
    pub cat_main_decayed: Vec<f32>,
    /// Views and cart adds in the category in the last 7 days (browsing right before a purchase).
    pub cat_recent: Vec<f32>,
    pub cat_days_since: Vec<f32>,
    /// Population-level, from history before the cutoff: spend share of each category in the
    /// last 90 days (popularity) and its mean replenishment gap in days.
    pub popularity: Vec<f32>,
    pub cycle_days: Vec<f32>,
    /// First-order transition matrix `k × k`: P(next main category | last main category),
    /// estimated from consecutive orders before the cutoff, smoothed towards popularity.
    pub transitions: Vec<f32>,
    pub bgnbd: FittedBgNbd,
}

impl Snapshot {
    pub fn len(&self) -> usize {
        self.customers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.base[i * NB..(i + 1) * NB]
    }
    /// Mean of the customers' own mean gaps (days), 60 when nobody has two purchase days.
    pub fn mean_own_gap_days(&self) -> f64 {
        let gaps: Vec<f64> = self
            .own_gap_days
            .iter()
            .filter(|g| g.is_finite())
            .map(|&g| g as f64)
            .collect();
        if gaps.is_empty() {
            60.0
        } else {
            gaps.iter().sum::<f64>() / gaps.len() as f64
        }
    }
    pub fn cat_row<'a>(&self, v: &'a [f32], i: usize) -> &'a [f32] {
        &v[i * self.k..(i + 1) * self.k]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error(
        "browsing was loaded from {loaded} but features at cutoff {cutoff} need it from {needed}"
    )]
    BrowsingNotLoaded {
        loaded: i64,
        cutoff: i64,
        needed: i64,
    },
    #[error("data loaded until {until} cannot serve a cutoff at {cutoff}")]
    CutoffAfterData { until: i64, cutoff: i64 },
    #[error("no customer has a purchase before the cutoff {cutoff}")]
    EmptyPopulation { cutoff: i64 },
    #[error("BG/NBD fit failed: {0}")]
    BgNbd(#[from] crate::models::bgnbd::BgNbdError),
}

/// Purposes of deterministic customer samples. Each has its own salt: samples drawn with the
/// same hash would be nested (a 6 % sample of a 10 % sample keeps half of it, not 6 %).
pub mod salt {
    pub const POPULATION: u64 = 1;
    pub const BGNBD: u64 = 2;
    pub const TIMING: u64 = 3;
    pub const CATEGORY: u64 = 4;
    pub const FOLD: u64 = 5;
}

/// A deterministic sample by a hash of the customer id, so the same customers are kept at every
/// cutoff and in every run.
pub fn keep_customer(id: &str, share: f64, salt: u64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let mut h: u64 = 0x9e3779b97f4a7c15 ^ salt.wrapping_mul(0xa076_1d64_78bd_642f);
    for b in id.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    (h as f64 / u64::MAX as f64) < share
}

/// Builds the snapshot at `cutoff`. `max_customers` caps the population by a deterministic
/// sample (training rows); `None` keeps everyone (scoring, evaluation).
pub fn snapshot(
    data: &BrandData,
    cutoff: i64,
    params: &FeatureParams,
    max_customers: Option<usize>,
) -> Result<Snapshot, FeatureError> {
    if cutoff > data.until {
        return Err(FeatureError::CutoffAfterData {
            until: data.until,
            cutoff,
        });
    }
    let needed = cutoff - BROWSE_LOOKBACK_DAYS * DAY;
    if data.browse_from > needed {
        return Err(FeatureError::BrowsingNotLoaded {
            loaded: data.browse_from,
            cutoff,
            needed,
        });
    }
    let mut customers: Vec<u32> = (0..data.customers())
        .filter(|&c| !data.orders_before(c, cutoff).is_empty())
        .map(|c| c as u32)
        .collect();
    if customers.is_empty() {
        return Err(FeatureError::EmptyPopulation { cutoff });
    }
    if let Some(max) = max_customers
        && customers.len() > max
    {
        let share = max as f64 / customers.len() as f64;
        customers
            .retain(|&c| keep_customer(&data.customer_ids[c as usize], share, salt::POPULATION));
    }
    let k = data.categories.len();
    let (popularity, cycle_days, transitions, gap_prior) = population_stats(data, cutoff, k);

    // BG/NBD on a deterministic sample: population-level parameters need ~20 k customers, and
    // the fit is the one super-linear step.
    let rft: Vec<Rft> = customers
        .iter()
        .map(|&c| customer_rft(data, c as usize, cutoff))
        .collect();
    let sample: Vec<Rft> = if rft.len() > 20_000 {
        let share = 20_000.0 / rft.len() as f64;
        customers
            .iter()
            .zip(&rft)
            .filter(|(c, _)| keep_customer(&data.customer_ids[**c as usize], share, salt::BGNBD))
            .map(|(_, r)| *r)
            .collect()
    } else {
        rft.clone()
    };
    let bgnbd = fit_bgnbd(&sample)?;

    let n = customers.len();
    let mut s = Snapshot {
        cutoff,
        base: vec![0.0; n * NB],
        recency_days: vec![0.0; n],
        purchase_days: vec![0; n],
        own_gap_days: vec![0.0; n],
        p_alive: vec![0.0; n],
        p_return_bgnbd: vec![0.0; n],
        last_cat: vec![NO_CAT; n],
        k,
        cat_decayed: vec![0.0; n * k],
        cat_orders: vec![0.0; n * k],
        cat_views: vec![0.0; n * k],
        cat_carts: vec![0.0; n * k],
        cat_recent: vec![0.0; n * k],
        cat_main: vec![0.0; n * k],
        cat_main_decayed: vec![0.0; n * k],
        cat_days_since: vec![10_000.0; n * k],
        popularity,
        cycle_days,
        transitions,
        rft,
        bgnbd,
        customers,
    };
    let h = params.horizon_days as f64;
    let decay = std::f64::consts::LN_2 / params.category_half_life_days.max(1.0);
    for i in 0..n {
        let c = s.customers[i] as usize;
        let orders = data.orders_before(c, cutoff);
        let days_ago = |t: i64| (cutoff - t) as f64 / DAY as f64;
        // Distinct purchase days (same-day orders merged), as days before the cutoff.
        let mut pdays: Vec<i64> = data.order_at[orders.clone()]
            .iter()
            .map(|&t| (t - cutoff).div_euclid(DAY))
            .collect();
        pdays.dedup();
        let recency = days_ago(data.order_at[orders.end - 1]);
        let tenure = days_ago(data.order_at[orders.start]);
        let gaps: Vec<f64> = pdays.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let own_gap = if gaps.is_empty() {
            f64::NAN
        } else {
            gaps.iter().sum::<f64>() / gaps.len() as f64
        };
        let gap_mean = (gaps.iter().sum::<f64>() + GAP_PRIOR_WEIGHT * gap_prior)
            / (gaps.len() as f64 + GAP_PRIOR_WEIGHT);
        let gap_cv = if gaps.len() >= 2 {
            let m = own_gap;
            (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / (gaps.len() - 1) as f64).sqrt()
                / m.max(1.0)
        } else {
            0.0
        };
        let amounts = &data.order_amount[orders.clone()];
        let total: f64 = amounts.iter().map(|&a| a as f64).sum();
        let count_in = |days: f64| {
            data.order_at[orders.clone()]
                .iter()
                .filter(|&&t| days_ago(t) <= days)
                .count() as f64
        };
        let discount_share = data.order_discounted[orders.clone()]
            .iter()
            .filter(|&&d| d)
            .count() as f64
            / orders.len() as f64;

        // Categories: decayed spend, order counts, last bought, last main category.
        let mut distinct = 0;
        let mut decayed_total = 0.0;
        let mut main_total = 0.0;
        for o in orders.clone() {
            let age = days_ago(data.order_at[o]);
            let w = (-decay * age).exp();
            for l in data.lines_of(o) {
                let cat = data.line_cat[l] as usize;
                if cat >= k {
                    continue;
                }
                let j = i * k + cat;
                if s.cat_orders[j] == 0.0 {
                    distinct += 1;
                }
                s.cat_orders[j] += 1.0;
                let v = w * data.line_spend[l].max(0.0) as f64;
                s.cat_decayed[j] += v as f32;
                decayed_total += v;
                s.cat_days_since[j] = age.min(10_000.0) as f32;
            }
            let main = data.main_category(o);
            if main != NO_CAT && (main as usize) < k {
                s.last_cat[i] = main;
                s.cat_main[i * k + main as usize] += 1.0;
                s.cat_main_decayed[i * k + main as usize] += w as f32;
                main_total += w;
            }
        }
        if main_total > 0.0 {
            s.cat_main_decayed[i * k..(i + 1) * k]
                .iter_mut()
                .for_each(|v| *v = (*v as f64 / main_total) as f32);
        }
        if decayed_total > 0.0 {
            s.cat_decayed[i * k..(i + 1) * k]
                .iter_mut()
                .for_each(|v| *v = (*v as f64 / decayed_total) as f32);
        }
        let cycle = if s.last_cat[i] != NO_CAT {
            s.cycle_days[s.last_cat[i] as usize] as f64
        } else {
            gap_prior
        };

        // Browsing in recent windows.
        let sessions = data.sessions_of(c);
        let sess_from = sessions.partition_point(|&t| t < cutoff - 90 * DAY);
        let sess_to = sessions.partition_point(|&t| t < cutoff);
        let recent_sessions = &sessions[sess_from..sess_to];
        let sessions_in = |d: i64| {
            recent_sessions
                .iter()
                .filter(|&&t| t >= cutoff - d * DAY)
                .count() as f64
        };
        let days_since_session = recent_sessions.last().map_or(365.0, |&t| days_ago(t));
        let ev = data.events_of(c);
        let ev_times = &data.event_at[ev.clone()];
        let ev_from = ev.start + ev_times.partition_point(|&t| t < cutoff - 30 * DAY);
        let ev_to = ev.start + ev_times.partition_point(|&t| t < cutoff);
        let (mut views7, mut views30, mut carts7, mut carts30, mut checkouts30) =
            (0.0, 0.0, 0.0, 0.0, 0.0);
        for e in ev_from..ev_to {
            let recent7 = data.event_at[e] >= cutoff - 7 * DAY;
            let cat = data.event_cat[e] as usize;
            if recent7 && cat < k && data.event_kind[e] != EV_CHECKOUT {
                s.cat_recent[i * k + cat] += 1.0;
            }
            match data.event_kind[e] {
                EV_VIEW => {
                    views30 += 1.0;
                    views7 += recent7 as u8 as f64;
                    if cat < k {
                        s.cat_views[i * k + cat] += 1.0;
                    }
                }
                EV_CART => {
                    carts30 += 1.0;
                    carts7 += recent7 as u8 as f64;
                    if cat < k {
                        s.cat_carts[i * k + cat] += 1.0;
                    }
                }
                EV_CHECKOUT => checkouts30 += 1.0,
                _ => {}
            }
        }

        let rft = s.rft[i];
        let p_alive = p_alive(&s.bgnbd, &rft);
        let expected = s.bgnbd.expected_purchases(&rft, h);
        let p_return = s.bgnbd.p_purchase_within(&rft, h);
        let ln = |v: f64| v.max(0.0).ln_1p() as f32;
        let row = [
            ln(recency),
            ln(pdays.len() as f64),
            ln(total),
            ln(total / orders.len() as f64),
            ln(tenure),
            ln(gap_mean),
            gap_cv.min(5.0) as f32,
            ((recency + 1.0) / (gap_mean + 1.0)).ln().clamp(-5.0, 5.0) as f32,
            ((recency + 1.0) / (cycle + 1.0)).ln().clamp(-5.0, 5.0) as f32,
            ln(count_in(30.0)),
            ln(count_in(90.0)),
            ln(count_in(365.0)),
            discount_share as f32,
            ln(*amounts.last().unwrap() as f64),
            p_alive as f32,
            ln(expected),
            p_return as f32,
            {
                let p = p_return.clamp(1e-6, 1.0 - 1e-6);
                (p / (1.0 - p)).ln() as f32
            },
            ln(sessions_in(7)),
            ln(sessions_in(30)),
            ln(recent_sessions.len() as f64),
            ln(days_since_session),
            ln(views7),
            ln(views30),
            ln(carts7),
            ln(carts30),
            ln(checkouts30),
            ln(distinct as f64),
            (pdays.len() == 1) as u8 as f32,
        ];
        debug_assert_eq!(row.len(), NB);
        s.base[i * NB..(i + 1) * NB].copy_from_slice(&row);
        s.recency_days[i] = recency as f32;
        s.purchase_days[i] = pdays.len() as u32;
        s.own_gap_days[i] = own_gap as f32;
        s.p_alive[i] = p_alive as f32;
        s.p_return_bgnbd[i] = p_return as f32;
    }
    Ok(s)
}

/// Maximum likelihood; on small or degenerate data (the estimate runs off to a boundary) a
/// lightly penalised fit, which pulls the parameters towards 1, stands in.
fn fit_bgnbd(sample: &[Rft]) -> Result<FittedBgNbd, FeatureError> {
    use crate::models::bgnbd::BgNbdParams;
    match BgNbdParams::new().fit(sample) {
        Ok(f) => Ok(f),
        Err(e) => {
            tracing::warn!(error = %e, customers = sample.len(), "BG/NBD maximum likelihood failed; using a penalised fit");
            Ok(BgNbdParams::new().penalizer(0.05).fit(sample)?)
        }
    }
}

/// P(alive). BG/NBD lets customers drop out only after a repeat purchase, so it calls every
/// one-time buyer alive with certainty however long ago they bought; for them (x = 0) the
/// MBG/NBD form, which allows dropout after the first purchase, is used with the same
/// parameters: 1 / (1 + a/b · ((α+T)/α)^r).
pub fn p_alive(m: &FittedBgNbd, c: &Rft) -> f64 {
    if c.x > 0.0 {
        return m.p_alive(c);
    }
    let odds = m.a / m.b * ((m.alpha + c.t) / m.alpha).powf(m.r);
    1.0 / (1.0 + odds)
}

fn customer_rft(data: &BrandData, c: usize, cutoff: i64) -> Rft {
    let orders = data.orders_before(c, cutoff);
    let days: Vec<i64> = data.order_at[orders]
        .iter()
        .map(|&t| (t - cutoff).div_euclid(DAY))
        .collect();
    rft_from_purchase_days(&days, 0).expect("population members have a purchase")
}

/// Population statistics from history before the cutoff: category popularity (spend share of
/// the last 90 days, all history if that is empty), mean replenishment gap per category (gap
/// after an order whose main category it is), the transition matrix and the overall mean gap.
fn population_stats(
    data: &BrandData,
    cutoff: i64,
    k: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, f64) {
    let mut recent = vec![0.0f64; k];
    let mut all = vec![0.0f64; k];
    let mut gap_sum = vec![0.0f64; k];
    let mut gap_n = vec![0.0f64; k];
    let mut trans = vec![0.0f64; k * k];
    let (mut all_gap_sum, mut all_gap_n) = (0.0, 0.0);
    for c in 0..data.customers() {
        let orders = data.orders_before(c, cutoff);
        let mut prev: Option<(i64, u16)> = None;
        for o in orders {
            let at = data.order_at[o];
            for l in data.lines_of(o) {
                let cat = data.line_cat[l] as usize;
                if cat < k {
                    all[cat] += data.line_spend[l].max(0.0) as f64;
                    if at >= cutoff - 90 * DAY {
                        recent[cat] += data.line_spend[l].max(0.0) as f64;
                    }
                }
            }
            let main = data.main_category(o);
            if let Some((pt, pc)) = prev {
                let gap = (at - pt) as f64 / DAY as f64;
                if gap >= 1.0 {
                    all_gap_sum += gap;
                    all_gap_n += 1.0;
                    if (pc as usize) < k {
                        gap_sum[pc as usize] += gap;
                        gap_n[pc as usize] += 1.0;
                        if (main as usize) < k {
                            trans[pc as usize * k + main as usize] += 1.0;
                        }
                    }
                }
            }
            prev = Some((
                at,
                if main != NO_CAT {
                    main
                } else {
                    prev.map_or(NO_CAT, |p| p.1)
                },
            ));
        }
    }
    let base = if recent.iter().sum::<f64>() > 0.0 {
        recent
    } else {
        all
    };
    let total: f64 = base.iter().sum();
    let pop: Vec<f64> = if total > 0.0 {
        base.iter().map(|v| v / total).collect()
    } else {
        vec![1.0 / k.max(1) as f64; k]
    };
    let overall_gap = if all_gap_n > 0.0 {
        all_gap_sum / all_gap_n
    } else {
        60.0
    };
    // Categories with few observed gaps shrink towards the overall mean gap.
    let cycle: Vec<f32> = (0..k)
        .map(|j| ((gap_sum[j] + 20.0 * overall_gap) / (gap_n[j] + 20.0)) as f32)
        .collect();
    let mut t = vec![0.0f32; k * k];
    for a in 0..k {
        let row_n: f64 = trans[a * k..(a + 1) * k].iter().sum();
        for b in 0..k {
            // Dirichlet smoothing with 5 pseudo-transitions spread by popularity.
            t[a * k + b] = ((trans[a * k + b] + 5.0 * pop[b]) / (row_n + 5.0)) as f32;
        }
    }
    (
        pop.into_iter().map(|v| v as f32).collect(),
        cycle,
        t,
        overall_gap,
    )
}

#[cfg(test)]
mod tests {
    use super::data::testing::brand;
    use super::*;

    fn params() -> FeatureParams {
        FeatureParams {
            horizon_days: 30,
            category_half_life_days: 90.0,
        }
    }

    #[test]
    fn features_use_only_history_before_the_cutoff() {
        let d = DAY;
        let orders: Vec<_> = vec![
            ("a", 10 * d, 10.0, false, &[(0u16, 10.0)][..]),
            ("a", 40 * d, 20.0, true, &[(1, 20.0)][..]),
            ("b", 20 * d, 5.0, false, &[(1, 5.0)][..]),
            ("a", 100 * d, 50.0, false, &[(0, 50.0)][..]), // after the cutoff
        ];
        let cutoff = 60 * d;
        let full = brand(
            &["x", "y"],
            &orders,
            &[("a", 50 * d, 0, 1), ("a", 70 * d, 1, 0)],
        );
        let s = snapshot(&full, cutoff, &params(), None).unwrap();
        assert_eq!(s.len(), 2);
        let a = s
            .customers
            .iter()
            .position(|&c| full.customer_ids[c as usize] == "a")
            .unwrap();
        assert_eq!(s.recency_days[a], 20.0);
        assert_eq!(s.purchase_days[a], 2);
        assert_eq!(s.last_cat[a], 1);
        assert_eq!(s.cat_orders[a * 2..a * 2 + 2], [1.0, 1.0]);
        assert_eq!(s.cat_views[a * 2 + 1], 1.0);
        assert_eq!(
            s.cat_carts[a * 2],
            0.0,
            "the cart add after the cutoff is invisible"
        );

        // The same history without anything at or after the cutoff gives identical features.
        let past = brand(&["x", "y"], &orders[..3], &[("a", 50 * d, 0, 1)]);
        let s2 = snapshot(&past, cutoff, &params(), None).unwrap();
        assert_eq!(s.base, s2.base);
        assert_eq!(s.cat_decayed, s2.cat_decayed);
    }

    #[test]
    fn schema_hash_changes_with_categories() {
        let a = FeatureSchema::new(&["x".into()]);
        let b = FeatureSchema::new(&["y".into()]);
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), FeatureSchema::new(&["x".into()]).hash());
    }
}
