//! Treated versus holdout: differences with 95% confidence intervals and p-values. Pure
//! functions, so they are tested against hand-computed values.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One group's outcomes: customers, how many converted, and revenue moments per customer.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Group {
    pub n: u64,
    pub converted: u64,
    pub revenue: f64,
    /// Σ revenue² over customers (for the variance of revenue per customer).
    #[serde(skip)]
    pub revenue_sq: f64,
}

impl Group {
    pub fn add(&mut self, converted: bool, revenue: f64) {
        self.n += 1;
        self.converted += u64::from(converted);
        self.revenue += revenue;
        self.revenue_sq += revenue * revenue;
    }

    pub fn rate(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.converted as f64 / self.n as f64
        }
    }

    pub fn revenue_per_customer(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.revenue / self.n as f64
        }
    }

    /// Sample variance of revenue per customer.
    fn revenue_var(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as f64;
        ((self.revenue_sq - self.revenue * self.revenue / n) / (n - 1.0)).max(0.0)
    }
}

/// A lift with its 95% intervals.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Lift {
    /// treated − holdout.
    pub absolute: f64,
    pub absolute_ci: (f64, f64),
    /// treated / holdout − 1 (None when the holdout's value is 0).
    pub relative: Option<f64>,
    pub relative_ci: Option<(f64, f64)>,
    pub p_value: f64,
    /// The absolute interval excludes 0.
    pub significant: bool,
}

fn normal_two_sided(z: f64) -> f64 {
    let n = Normal::standard();
    (2.0 * (1.0 - n.cdf(z.abs()))).clamp(0.0, 1.0)
}

/// Difference of two proportions: Wald interval (unpooled), pooled two-proportion z-test,
/// and the Katz log interval for the ratio.
pub fn proportion_lift(t: &Group, c: &Group) -> Lift {
    let (p1, p0) = (t.rate(), c.rate());
    let (n1, n0) = (t.n.max(1) as f64, c.n.max(1) as f64);
    let d = p1 - p0;
    let se = (p1 * (1.0 - p1) / n1 + p0 * (1.0 - p0) / n0).sqrt();
    let pooled = (t.converted + c.converted) as f64 / (n1 + n0);
    let se0 = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0)).sqrt();
    let p_value = if se0 > 0.0 {
        normal_two_sided(d / se0)
    } else {
        1.0
    };
    let ci = (d - Z95 * se, d + Z95 * se);
    let (relative, relative_ci) = if t.converted > 0 && c.converted > 0 {
        let r = p1 / p0;
        let se_log = ((1.0 - p1) / t.converted as f64 + (1.0 - p0) / c.converted as f64).sqrt();
        (
            Some(r - 1.0),
            Some((
                (r.ln() - Z95 * se_log).exp() - 1.0,
                (r.ln() + Z95 * se_log).exp() - 1.0,
            )),
        )
    } else {
        (None, None)
    };
    Lift {
        absolute: d,
        absolute_ci: ci,
        relative,
        relative_ci,
        p_value,
        significant: t.n > 0 && c.n > 0 && (ci.0 > 0.0 || ci.1 < 0.0),
    }
}

/// Difference of mean revenue per customer: Welch's t interval and test.
pub fn mean_lift(t: &Group, c: &Group) -> Lift {
    let (m1, m0) = (t.revenue_per_customer(), c.revenue_per_customer());
    let (n1, n0) = (t.n.max(1) as f64, c.n.max(1) as f64);
    let (v1, v0) = (t.revenue_var() / n1, c.revenue_var() / n0);
    let se = (v1 + v0).sqrt();
    let d = m1 - m0;
    let (ci, p_value) = if se > 0.0 && t.n >= 2 && c.n >= 2 {
        // Welch–Satterthwaite degrees of freedom.
        let df = (v1 + v0).powi(2) / (v1 * v1 / (n1 - 1.0) + v0 * v0 / (n0 - 1.0));
        let dist = StudentsT::new(0.0, 1.0, df.max(1.0)).expect("valid t");
        let q = dist.inverse_cdf(0.975);
        (
            (d - q * se, d + q * se),
            (2.0 * (1.0 - dist.cdf((d / se).abs()))).clamp(0.0, 1.0),
        )
    } else {
        ((d, d), 1.0)
    };
    let relative = (m0 > 0.0).then(|| d / m0);
    let relative_ci = (m0 > 0.0).then(|| (ci.0 / m0, ci.1 / m0));
    Lift {
        absolute: d,
        absolute_ci: ci,
        relative,
        relative_ci,
        p_value,
        significant: se > 0.0 && (ci.0 > 0.0 || ci.1 < 0.0),
    }
}

/// Why the comparison cannot tell, if it cannot: either group below `min_group`, or fewer than
/// 10 conversions in all.
pub fn too_small(t: &Group, c: &Group, min_group: u64) -> Option<String> {
    if t.n < min_group || c.n < min_group {
        Some(format!(
            "groups too small to tell: {} treated, {} held out (need at least {min_group} each)",
            t.n, c.n
        ))
    } else if t.converted + c.converted < 10 {
        Some(format!(
            "too few conversions to tell: {} in all (need at least 10)",
            t.converted + c.converted
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u64, converted: u64) -> Group {
        Group {
            n,
            converted,
            revenue: 0.0,
            revenue_sq: 0.0,
        }
    }

    #[test]
    fn proportions_match_hand_computation() {
        // 120/1000 vs 80/1000: d = 0.04, se = sqrt(.12*.88/1000 + .08*.92/1000) = 0.013317...
        let l = proportion_lift(&group(1000, 120), &group(1000, 80));
        assert!((l.absolute - 0.04).abs() < 1e-12);
        let se = (0.12f64 * 0.88 / 1000.0 + 0.08 * 0.92 / 1000.0).sqrt();
        assert!(
            (l.absolute_ci.0 - (0.04 - 1.959964 * se)).abs() < 1e-6,
            "{l:?}"
        );
        assert!((l.absolute_ci.1 - (0.04 + 1.959964 * se)).abs() < 1e-6);
        // Pooled z = 0.04 / sqrt(.1*.9*(2/1000)) = 2.9814 → p = 0.00287.
        assert!((l.p_value - 0.002869).abs() < 2e-5, "{}", l.p_value);
        assert!(l.significant);
        assert!((l.relative.unwrap() - 0.5).abs() < 1e-12);
        let (lo, hi) = l.relative_ci.unwrap();
        assert!(lo > 0.0 && lo < 0.5 && hi > 0.5, "{lo} {hi}");
        // The same rates: nothing.
        let z = proportion_lift(&group(500, 50), &group(500, 50));
        assert_eq!(z.absolute, 0.0);
        assert!((z.p_value - 1.0).abs() < 1e-9);
        assert!(!z.significant);
    }

    #[test]
    fn revenue_uses_welch() {
        let mut t = Group::default();
        let mut c = Group::default();
        for i in 0..200 {
            t.add(i % 4 == 0, if i % 4 == 0 { 1000.0 } else { 0.0 });
            c.add(i % 5 == 0, if i % 5 == 0 { 1000.0 } else { 0.0 });
        }
        let l = mean_lift(&t, &c);
        assert!((l.absolute - 50.0).abs() < 1e-9, "{l:?}");
        assert!(l.absolute_ci.0 < 50.0 && l.absolute_ci.1 > 50.0);
        assert!(
            l.p_value > 0.05,
            "250 vs 200 per customer on 200 each is not significant: {l:?}"
        );
        assert!((l.relative.unwrap() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn small_groups_are_flagged() {
        assert!(
            too_small(&group(20, 5), &group(400, 40), 50)
                .unwrap()
                .contains("too small")
        );
        assert!(
            too_small(&group(400, 3), &group(400, 4), 50)
                .unwrap()
                .contains("too few conversions")
        );
        assert!(too_small(&group(400, 30), &group(400, 20), 50).is_none());
    }
}
