//! Evaluation metrics for the retention-model backtest.
//!
//! Every function is pure and takes parallel slices of equal length (checked with
//! `debug_assert!`). Labels are `true` for the positive class ("returned").
//!
//! Conventions shared by all functions:
//! - Empty input gives `NaN` for every mean-style metric (0/0), never a panic.
//! - Inputs must not contain `NaN`. Sorting uses `f64::total_cmp`, so a `NaN` never
//!   panics, but the result is then unspecified.
//! - "Equal" means `==`, so `-0.0` and `0.0` are tied.

use std::cmp::Ordering;

/// Area under the ROC curve; ties in score get average ranks (Mann–Whitney U). NaN if only one class.
///
/// Equals the probability that a random positive scores higher than a random negative,
/// with a positive/negative pair of equal scores counting 1/2. Empty input is `NaN`.
/// Runs in O(n log n).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    debug_assert_eq!(scores.len(), labels.len());
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return f64::NAN;
    }
    let order = sorted_indices(scores, f64::total_cmp);
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum_pos = 0.0;
    for (start, end) in tie_groups(&order, scores) {
        let avg_rank = (start + 1 + end) as f64 / 2.0;
        let pos_in_group = order[start..end].iter().filter(|&&i| labels[i]).count();
        rank_sum_pos += avg_rank * pos_in_group as f64;
    }
    let n_pos = n_pos as f64;
    let u = rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0;
    u / (n_pos * n_neg as f64)
}

/// Average precision (area under the precision–recall curve, step-wise, as scikit-learn's average_precision_score, tied scores grouped). NaN if no positives.
///
/// `AP = Σ_k (R_k − R_{k−1}) · P_k` over the distinct score thresholds in descending
/// order, where all rows with the same score enter together (so the order of tied rows
/// never matters). No interpolation. Empty input is `NaN`. Runs in O(n log n).
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> f64 {
    debug_assert_eq!(scores.len(), labels.len());
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return f64::NAN;
    }
    let order = sorted_indices(scores, |a, b| b.total_cmp(a));
    let (mut tp, mut fp, mut ap) = (0usize, 0usize, 0.0);
    for (start, end) in tie_groups(&order, scores) {
        let group_tp = order[start..end].iter().filter(|&&i| labels[i]).count();
        tp += group_tp;
        fp += (end - start) - group_tp;
        // Recall only moves when the group holds positives; skip the zero-width steps.
        if group_tp > 0 {
            let precision = tp as f64 / (tp + fp) as f64;
            ap += group_tp as f64 / n_pos as f64 * precision;
        }
    }
    ap
}

/// Brier score: mean of `(p − y)²` with `y ∈ {0, 1}`. No clipping. Empty input is `NaN`.
pub fn brier(p: &[f64], labels: &[bool]) -> f64 {
    debug_assert_eq!(p.len(), labels.len());
    mean(
        p.iter()
            .zip(labels)
            .map(|(&p, &l)| (p - f64::from(u8::from(l))).powi(2)),
    )
}

/// Mean negative log-likelihood, p clipped to [1e-15, 1-1e-15].
///
/// `−mean(y·ln p + (1−y)·ln(1−p))`, as scikit-learn's `log_loss` with `eps = 1e-15`;
/// clipping keeps a confident wrong prediction finite (≈ 34.54). Empty input is `NaN`.
pub fn log_loss(p: &[f64], labels: &[bool]) -> f64 {
    const EPS: f64 = 1e-15;
    debug_assert_eq!(p.len(), labels.len());
    mean(p.iter().zip(labels).map(|(&p, &l)| {
        let p = p.clamp(EPS, 1.0 - EPS);
        -if l { p.ln() } else { (1.0 - p).ln() }
    }))
}

/// Share of correct hard predictions at threshold 0.5 (p >= 0.5 => positive).
///
/// Exactly 0.5 counts as a positive prediction. Empty input is `NaN`.
pub fn accuracy(p: &[f64], labels: &[bool]) -> f64 {
    debug_assert_eq!(p.len(), labels.len());
    mean(
        p.iter()
            .zip(labels)
            .map(|(&p, &l)| f64::from(u8::from((p >= 0.5) == l))),
    )
}

/// One row of a reliability (calibration) table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct CalibrationBin {
    /// Smallest predicted probability in the bin.
    pub lo: f64,
    /// Largest predicted probability in the bin.
    pub hi: f64,
    /// Number of rows in the bin (always ≥ 1).
    pub n: usize,
    /// Mean predicted probability in the bin.
    pub mean_predicted: f64,
    /// Share of positive labels in the bin.
    pub observed_rate: f64,
}

/// Reliability table: `bins` equal-count bins by predicted probability (sorted ascending), lo/hi = min/max predicted in the bin. Empty input -> empty vec. Fewer rows than bins -> fewer bins.
///
/// With `n` rows and `k = min(bins, n)` bins, bin `b` holds sorted rows
/// `[b·n/k, (b+1)·n/k)` (integer division), so sizes differ by at most one and no bin is
/// empty. Bins are cut by position only: rows with equal predictions may straddle two
/// adjacent bins (which then share a boundary value), and the order of such tied rows is
/// unspecified (an unstable sort), so the labels split between those two bins may vary.
/// `bins == 0` gives an empty vec.
pub fn calibration_table(p: &[f64], labels: &[bool], bins: usize) -> Vec<CalibrationBin> {
    debug_assert_eq!(p.len(), labels.len());
    let n = p.len();
    let k = bins.min(n);
    if k == 0 {
        return Vec::new();
    }
    let order = sorted_indices(p, f64::total_cmp);
    (0..k)
        .map(|b| {
            let rows = &order[b * n / k..(b + 1) * n / k];
            let count = rows.len() as f64;
            CalibrationBin {
                lo: p[rows[0]],
                hi: p[rows[rows.len() - 1]],
                n: rows.len(),
                mean_predicted: rows.iter().map(|&i| p[i]).sum::<f64>() / count,
                observed_rate: rows.iter().filter(|&&i| labels[i]).count() as f64 / count,
            }
        })
        .collect()
}

/// Harrell's concordance index for time-to-event predictions where a SMALLER predicted time means "sooner".
/// A pair (i, j) is comparable when observed_time[i] < observed_time[j] and event[i] is true (i returned before j's time, j may be censored). It is concordant when predicted[i] < predicted[j]; a tie in predicted counts 1/2. Pairs with equal observed times are not comparable. Returns NaN if no comparable pair.
/// MUST run in O(n log n) (it is used on 1,000,000 customers): e.g. sort by observed time and use a Fenwick tree over ranks of predicted values; handle ties in observed time carefully (process groups of equal observed time).
///
/// Implementation: rows are visited by descending observed time, one group of equal
/// times at a time. Each event row of a group is scored against a Fenwick tree holding
/// only rows with strictly larger times, and the group is inserted afterwards, so
/// equal-time pairs are never counted. Counts are exact integers (`u64`); the only
/// rounding is the final division. Empty input is `NaN`.
pub fn c_index(predicted: &[f64], observed_time: &[f64], event: &[bool]) -> f64 {
    debug_assert_eq!(predicted.len(), observed_time.len());
    debug_assert_eq!(predicted.len(), event.len());

    // Dense 0-based ranks of the predictions; equal values share a rank.
    let mut distinct = predicted.to_vec();
    distinct.sort_unstable_by(f64::total_cmp);
    distinct.dedup();
    let rank: Vec<usize> = predicted
        .iter()
        .map(|&x| distinct.partition_point(|&v| v < x))
        .collect();

    let order = sorted_indices(observed_time, |a, b| b.total_cmp(a));
    let mut later = Fenwick::new(distinct.len());
    let (mut inserted, mut comparable, mut concordant, mut tied) = (0u64, 0u64, 0u64, 0u64);
    for (start, end) in tie_groups(&order, observed_time) {
        let group = &order[start..end];
        for &i in group.iter().filter(|&&i| event[i]) {
            let at_most = later.count_below(rank[i] + 1);
            let below = later.count_below(rank[i]);
            comparable += inserted;
            concordant += inserted - at_most; // later rows predicted strictly later
            tied += at_most - below;
        }
        for &i in group {
            later.add(rank[i]);
        }
        inserted += group.len() as u64;
    }
    if comparable == 0 {
        return f64::NAN;
    }
    // (concordant + tied/2) / comparable, kept in integers until the end.
    (2 * concordant + tied) as f64 / (2 * comparable) as f64
}

/// Hit rates and mean reciprocal rank of a next-item (e.g. next category) ranking.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Default)]
pub struct RankMetrics {
    /// Number of ranked lists evaluated (including those missing the true item).
    pub n: usize,
    /// Share of lists with the true item first.
    pub hit_at_1: f64,
    /// Share of lists with the true item among the first three.
    pub hit_at_3: f64,
    /// Mean of `1 / (rank + 1)`, with a missing item contributing 0.
    pub mrr: f64,
}

/// From the 0-based rank of the true item in each ranked list (None = true item not in the list, counts 0 for hits and MRR). Empty -> n = 0 and NaN metrics.
pub fn rank_metrics(ranks: &[Option<usize>]) -> RankMetrics {
    let share = |f: fn(usize) -> f64| mean(ranks.iter().map(|r| r.map_or(0.0, f)));
    RankMetrics {
        n: ranks.len(),
        hit_at_1: share(|r| f64::from(u8::from(r == 0))),
        hit_at_3: share(|r| f64::from(u8::from(r < 3))),
        mrr: share(|r| 1.0 / (r as f64 + 1.0)),
    }
}

/// Mean absolute error. Empty input is `NaN`.
pub fn mae(pred: &[f64], actual: &[f64]) -> f64 {
    debug_assert_eq!(pred.len(), actual.len());
    mean(pred.iter().zip(actual).map(|(p, a)| (p - a).abs()))
}

/// 0-based rank of `truth` in `scores` sorted descending (ties broken by lower index first) – a helper for rank_metrics. None if truth >= scores.len().
///
/// That is the number of items scoring strictly higher plus the number of equal-scoring
/// items with a lower index, so a tie never flatters the true item unless it comes
/// first. O(n), no sorting.
pub fn rank_of(scores: &[f64], truth: usize) -> Option<usize> {
    let t = *scores.get(truth)?;
    Some(
        scores
            .iter()
            .enumerate()
            .filter(|&(j, &s)| s > t || (s == t && j < truth))
            .count(),
    )
}

/// Arithmetic mean; `NaN` when empty (0/0).
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    sum / count as f64
}

/// Indices `0..values.len()` sorted by `cmp` on the values.
fn sorted_indices(values: &[f64], cmp: impl Fn(&f64, &f64) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_unstable_by(|&a, &b| cmp(&values[a], &values[b]));
    order
}

/// Half-open `(start, end)` ranges of `order` whose values are equal (`==`).
/// `order` must already be sorted by `values`.
fn tie_groups<'a>(
    order: &'a [usize],
    values: &'a [f64],
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= order.len() {
            return None;
        }
        let v = values[order[start]];
        let len = order[start..]
            .iter()
            .take_while(|&&i| values[i] == v)
            .count();
        let group = (start, start + len);
        start += len;
        Some(group)
    })
}

/// Fenwick (binary indexed) tree of counts over ranks `0..len`.
struct Fenwick {
    tree: Vec<u64>,
}

impl Fenwick {
    fn new(len: usize) -> Self {
        Self {
            tree: vec![0; len + 1],
        }
    }

    /// Adds one at `rank`.
    fn add(&mut self, rank: usize) {
        let mut i = rank + 1;
        while i < self.tree.len() {
            self.tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// Total count at ranks `< rank`.
    fn count_below(&self, rank: usize) -> u64 {
        let mut i = rank;
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Tiny xorshift64 so the tests need no `rand` dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Uniform-ish integer in `0..n` (modulo bias is irrelevant here).
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn roc_auc_hand_examples() {
        // Classic case: pairs (pos, neg) = (.35,.1)✓ (.35,.4)✗ (.8,.1)✓ (.8,.4)✓ → 3/4.
        assert!(close(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        ));
        // Tie: (.4,.1)=1, (.4,.4)=½, (.8,.1)=1, (.8,.4)=1 → 3.5/4. Ranks 1, 2.5, 2.5, 4:
        // U = (2.5 + 4) − 2·3/2 = 3.5.
        assert!(close(
            roc_auc(&[0.1, 0.4, 0.4, 0.8], &[false, true, false, true]),
            0.875
        ));
        // All tied → ½.
        assert!(close(roc_auc(&[0.3; 4], &[true, false, true, false]), 0.5));
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
        assert!(roc_auc(&[], &[]).is_nan());
    }

    #[test]
    fn pr_auc_hand_examples() {
        // scikit-learn docs example, 0.8333…: descending .8(T) P=1 R=½; .4(F); .35(T) P=⅔ R=1;
        // AP = ½·1 + ½·⅔ = 5/6.
        assert!(close(
            pr_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            5.0 / 6.0
        ));
        // Grouped tie: .9(F) R=0; {.5 T, .5 F} together → tp=1 fp=2, P=⅓ R=½; .2(T) P=½ R=1.
        // AP = ½·⅓ + ½·½ = 5/12 ≈ 0.41667 (sklearn agrees; ungrouped T-first would give ½).
        let ap = pr_auc(&[0.9, 0.5, 0.5, 0.2], &[false, true, false, true]);
        assert!(close(ap, 5.0 / 12.0));
        assert!(close(
            pr_auc(&[0.9, 0.5, 0.5, 0.2], &[false, false, true, true]),
            5.0 / 12.0
        ));
        assert!(close(pr_auc(&[0.2, 0.1], &[true, false]), 1.0));
        assert!(pr_auc(&[0.2, 0.1], &[false, false]).is_nan());
        assert!(pr_auc(&[], &[]).is_nan());
    }

    #[test]
    fn brier_log_loss_accuracy_mae() {
        // (.1² + .1² + .8²) / 3 = .66 / 3.
        assert!(close(brier(&[0.1, 0.9, 0.8], &[false, true, false]), 0.22));
        // −(ln .9 + ln .8) / 2.
        let ll = log_loss(&[0.9, 0.2], &[true, false]);
        assert!(close(ll, -(0.9f64.ln() + 0.8f64.ln()) / 2.0));
        // Clipping keeps confident mistakes finite: −ln(1e-15) ≈ 34.539.
        assert!(close(log_loss(&[0.0], &[true]), -(1e-15f64).ln()));
        let worst = log_loss(&[1.0], &[false]);
        assert!(worst.is_finite() && (worst - 34.539).abs() < 0.01);
        // .5 counts as positive: correct, wrong, wrong, correct.
        assert!(close(
            accuracy(&[0.5, 0.49, 0.7, 0.2], &[true, true, false, false]),
            0.5
        ));
        assert!(close(mae(&[1.0, 2.0, 3.0], &[2.0, 2.0, 5.0]), 1.0));
        assert!(brier(&[], &[]).is_nan());
        assert!(log_loss(&[], &[]).is_nan());
        assert!(accuracy(&[], &[]).is_nan());
        assert!(mae(&[], &[]).is_nan());
    }

    #[test]
    fn calibration_table_bins() {
        let p = [0.9, 0.1, 0.3, 0.7, 0.5];
        let labels = [true, false, false, true, true];
        // Sorted: .1F .3F | .5T .7T .9T — 5 rows into 2 bins of 2 and 3.
        let table = calibration_table(&p, &labels, 2);
        assert_eq!(table.len(), 2);
        assert_eq!((table[0].lo, table[0].hi, table[0].n), (0.1, 0.3, 2));
        assert!(close(table[0].mean_predicted, 0.2) && table[0].observed_rate == 0.0);
        assert_eq!((table[1].lo, table[1].hi, table[1].n), (0.5, 0.9, 3));
        assert!(close(table[1].mean_predicted, 0.7) && table[1].observed_rate == 1.0);
        // More bins than rows: one row per bin.
        let table = calibration_table(&p[..3], &labels[..3], 10);
        assert_eq!(table.iter().map(|b| b.n).collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(table[0].lo, 0.1);
        assert!(calibration_table(&[], &[], 10).is_empty());
        assert!(calibration_table(&p, &labels, 0).is_empty());
    }

    #[test]
    fn c_index_hand_examples() {
        assert!(close(
            c_index(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], &[true; 3]),
            1.0
        ));
        assert!(close(
            c_index(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0], &[true; 3]),
            0.0
        ));
        // Only row 0 (event, t=1) anchors pairs: vs row 1 tied pred ½, row 2 concordant,
        // row 3 discordant → 1.5/3. Row 1 is censored; rows 2, 3 share t=3.
        let c = c_index(
            &[1.0, 1.0, 3.0, 0.5],
            &[1.0, 2.0, 3.0, 3.0],
            &[true, false, true, true],
        );
        assert!(close(c, 0.5));
        // Equal observed times are never comparable.
        assert!(c_index(&[1.0, 2.0], &[5.0, 5.0], &[true, true]).is_nan());
        assert!(c_index(&[1.0, 2.0], &[1.0, 2.0], &[false, false]).is_nan());
        assert!(c_index(&[], &[], &[]).is_nan());
    }

    #[test]
    fn rank_of_and_rank_metrics() {
        let scores = [0.2, 0.5, 0.5, 0.1];
        assert_eq!(rank_of(&scores, 1), Some(0));
        assert_eq!(rank_of(&scores, 2), Some(1)); // tie: lower index 1 goes first
        assert_eq!(rank_of(&scores, 3), Some(3));
        assert_eq!(rank_of(&scores, 4), None);

        // MRR = (1 + ⅓ + 0 + ⅙) / 4 = 0.375.
        let m = rank_metrics(&[Some(0), Some(2), None, Some(5)]);
        assert_eq!(m.n, 4);
        assert!(close(m.hit_at_1, 0.25) && close(m.hit_at_3, 0.5) && close(m.mrr, 0.375));
        let empty = rank_metrics(&[]);
        assert_eq!(empty.n, 0);
        assert!(empty.hit_at_1.is_nan() && empty.hit_at_3.is_nan() && empty.mrr.is_nan());
    }

    fn brute_c_index(predicted: &[f64], time: &[f64], event: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..time.len() {
            for j in 0..time.len() {
                if event[i] && time[i] < time[j] {
                    den += 1.0;
                    if predicted[i] < predicted[j] {
                        num += 1.0;
                    } else if predicted[i] == predicted[j] {
                        num += 0.5;
                    }
                }
            }
        }
        num / den
    }

    #[test]
    fn c_index_matches_brute_force() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for &(n, pred_levels, time_levels) in &[(3000, 40, 60), (2000, 5, 5), (500, 1000, 3)] {
            // Few distinct integer levels force many ties in both predicted and observed.
            let predicted: Vec<f64> = (0..n).map(|_| rng.below(pred_levels) as f64).collect();
            let time: Vec<f64> = (0..n).map(|_| rng.below(time_levels) as f64).collect();
            let event: Vec<bool> = (0..n).map(|_| rng.below(3) > 0).collect();
            let fast = c_index(&predicted, &time, &event);
            let slow = brute_c_index(&predicted, &time, &event);
            assert!((fast - slow).abs() < 1e-9, "n={n}: {fast} vs {slow}");
        }
    }

    #[test]
    fn roc_auc_matches_brute_force() {
        let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
        for &(n, levels) in &[(2000, 30), (1000, 2), (300, 100_000)] {
            let scores: Vec<f64> = (0..n).map(|_| rng.below(levels) as f64 / 7.0).collect();
            let labels: Vec<bool> = (0..n).map(|_| rng.below(4) == 0).collect();
            let (mut num, mut den) = (0.0, 0.0);
            for i in (0..n).filter(|&i| labels[i]) {
                for j in (0..n).filter(|&j| !labels[j]) {
                    den += 1.0;
                    num += match scores[i].total_cmp(&scores[j]) {
                        Ordering::Greater => 1.0,
                        Ordering::Equal => 0.5,
                        Ordering::Less => 0.0,
                    };
                }
            }
            let auc = roc_auc(&scores, &labels);
            assert!(
                (auc - num / den).abs() < 1e-9,
                "n={n}: {auc} vs {}",
                num / den
            );
        }
    }
}
