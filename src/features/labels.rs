//! Labels for a snapshot: what happened in [T, T + H).

use super::{BrandData, DAY, NO_CAT, Snapshot};

#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub horizon_days: u32,
    /// A completed order in [T, T + H).
    pub returned: Vec<bool>,
    /// Days from T to that first order (fractional; NaN when not returned).
    pub days_to_return: Vec<f64>,
    /// Main category (largest spend) of that first order; NO_CAT without items or return.
    pub next_category: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "labels for [{cutoff}, +{horizon_days} days) need data until {needed}, loaded until {loaded}"
)]
pub struct LabelWindowNotLoaded {
    pub cutoff: i64,
    pub horizon_days: u32,
    pub needed: i64,
    pub loaded: i64,
}

/// Labels for every customer of `s`. The horizon must be fully inside the loaded data, so a
/// training label is never read from an unfinished window.
pub fn labels(
    data: &BrandData,
    s: &Snapshot,
    horizon_days: u32,
) -> Result<Labels, LabelWindowNotLoaded> {
    let end = s.cutoff + horizon_days as i64 * DAY;
    if end > data.until {
        return Err(LabelWindowNotLoaded {
            cutoff: s.cutoff,
            horizon_days,
            needed: end,
            loaded: data.until,
        });
    }
    let n = s.len();
    let mut l = Labels {
        horizon_days,
        returned: vec![false; n],
        days_to_return: vec![f64::NAN; n],
        next_category: vec![NO_CAT; n],
    };
    for (i, &c) in s.customers.iter().enumerate() {
        let all = data.orders_of(c as usize);
        let first = data.orders_before(c as usize, s.cutoff).end;
        if first < all.end && data.order_at[first] < end {
            l.returned[i] = true;
            l.days_to_return[i] = (data.order_at[first] - s.cutoff) as f64 / DAY as f64;
            l.next_category[i] = data.main_category(first);
        }
    }
    Ok(l)
}

impl Labels {
    pub fn base_rate(&self) -> f64 {
        self.returned.iter().filter(|&&r| r).count() as f64 / self.returned.len().max(1) as f64
    }
}
