//! `retentiond score`: every customer with a completed order, scored by the champion as of a
//! day, into the `scores` table. One scoring per as-of day: re-running replaces that day's rows
//! in one transaction, so readers never see a half-written day.

use serde::Serialize;

use crate::db::{Db, Val};
use crate::features::{
    BROWSE_LOOKBACK_DAYS, BrandData, DAY, FeatureParams, FeatureSchema, LoadOptions, snapshot,
};
use crate::models::registry;

#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub as_of_date: String,
    pub model_version_id: i64,
    pub model_kind: String,
    pub customers: usize,
    pub mean_p_return: f64,
    /// Features whose population stability index against the training data is above 0.2.
    pub drifted_features: Vec<String>,
    pub max_psi: Option<f64>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error("no champion model: run `retentiond train` first")]
    NoChampion,
}

const COLUMNS: &[&str] = &[
    "as_of_date",
    "customer_id",
    "model_version_id",
    "model_kind",
    "as_of",
    "horizon_days",
    "p_return",
    "p_alive",
    "window_lo_days",
    "window_median_days",
    "window_hi_days",
    "window_lo_at",
    "window_median_at",
    "window_hi_at",
    "category_1",
    "category_1_p",
    "category_2",
    "category_2_p",
    "category_3",
    "category_3_p",
    "lapse_risk",
    "orders_count",
    "total_spend",
    "last_order_at",
    "categories_bought",
];

/// The three most probable categories (index, probability), best first; ties go to the lower
/// index, as in [`crate::models::category::ranking`].
fn top3(probs: &[f32]) -> [Option<(usize, f64)>; 3] {
    let mut top: [Option<(usize, f64)>; 3] = [None; 3];
    for (c, &v) in probs.iter().enumerate() {
        let v = v as f64;
        // Strictly greater: an equal probability at a higher index ranks after.
        let Some(pos) = top
            .iter()
            .position(|t| t.is_none_or(|(_, q)| v.total_cmp(&q).is_gt()))
        else {
            continue;
        };
        top[pos..].rotate_right(1);
        top[pos] = Some((c, v));
    }
    top
}

/// Scores as of `as_of` (an instant: the start of `as_of_date` in the brand's time zone).
/// Also stores units sold per product over the last `best_seller_days` (campaign product picks).
#[tracing::instrument(skip(db, bot_events_per_day, category_half_life_days))]
pub async fn score(
    db: &Db,
    as_of: i64,
    as_of_date: &str,
    bot_events_per_day: u32,
    category_half_life_days: f64,
    best_seller_days: u32,
) -> anyhow::Result<ScoreSummary> {
    let started = std::time::Instant::now();
    let (version, artifact) = registry::champion(db)
        .await?
        .ok_or(ScoringError::NoChampion)?;
    let bundle = artifact.production;
    let data = BrandData::load(
        db,
        LoadOptions {
            until: as_of,
            browse_from: as_of - BROWSE_LOOKBACK_DAYS * DAY,
            bot_events_per_day,
            sales_from: Some(as_of - best_seller_days as i64 * DAY),
        },
    )
    .await?;
    bundle.check_schema(&FeatureSchema::new(&data.categories))?;
    let fp = FeatureParams {
        horizon_days: bundle.horizon_days,
        category_half_life_days,
    };
    let snap = snapshot(&data, as_of, &fp, None)?;
    let p = bundle.predict(&snap);
    tracing::info!(
        customers = snap.len(),
        secs = started.elapsed().as_secs_f32(),
        "predicted"
    );
    // Drift of today's population against the training data (monitoring.rs).
    let drift = bundle
        .feature_reference
        .as_ref()
        .map(|r| (r.cutoff, r.psi(&snap.base)));
    if let Some((_, d)) = &drift {
        let shifted: Vec<String> = d
            .iter()
            .filter(|(_, p)| *p > crate::monitoring::PSI_WARN)
            .map(|(f, p)| format!("{f} ({p:.2})"))
            .collect();
        if !shifted.is_empty() {
            tracing::warn!(features = %shifted.join(", "), "feature drift since training (PSI above 0.2): consider retraining");
        }
    }

    let mut tx = db.begin().await?;
    tx.execute(
        "DELETE FROM scores WHERE as_of_date = $1",
        &[Val::Text(Some(as_of_date.into()))],
    )
    .await?;
    let day_at = |d: f64| as_of + (d * DAY as f64).round() as i64;
    let k = snap.k;
    let kind = bundle.kind.as_str();
    let mut cats: Vec<u16> = Vec::new();
    let mut bought = String::new();
    let has_categories = k > 0 && !p.category.is_empty();
    crate::bulk::write_rows(&mut tx, "scores", COLUMNS, snap.len(), |i, row| {
        row.text(Some(as_of_date));
        row.text(Some(&data.customer_ids[snap.customers[i] as usize]));
        row.int(Some(version.model_version_id));
        row.text(Some(kind));
        row.int(Some(as_of));
        row.int(Some(bundle.horizon_days as i64));
        row.real(Some(p.p_return[i]));
        row.real(Some(p.p_alive[i]));
        row.int(Some(p.lo[i].floor() as i64));
        row.int(Some(p.median[i].round() as i64));
        row.int(Some(p.hi[i].ceil() as i64));
        row.int(Some(day_at(p.lo[i].floor())));
        row.int(Some(day_at(p.median[i].round())));
        row.int(Some(day_at(p.hi[i].ceil())));
        let top = if has_categories {
            top3(&p.category[i * k..(i + 1) * k])
        } else {
            [None; 3]
        };
        for t in top {
            row.text(t.map(|(c, _)| data.categories[c].as_str()));
            row.real(t.map(|(_, p)| p));
        }
        // Lapse risk: the chance they have not come back by the end of their window.
        row.real(Some(1.0 - p.p_by_hi[i]));
        // The order history campaigns filter on, as of the same instant.
        let c = snap.customers[i] as usize;
        let (o0, o1) = (
            data.order_start[c] as usize,
            data.order_start[c + 1] as usize,
        );
        let spend: f64 = data.order_amount[o0..o1].iter().map(|&a| a as f64).sum();
        cats.clear();
        for o in o0..o1 {
            let (l0, l1) = (data.line_start[o] as usize, data.line_start[o + 1] as usize);
            cats.extend(
                data.line_cat[l0..l1]
                    .iter()
                    .copied()
                    .filter(|&k| k != crate::features::data::NO_CAT),
            );
        }
        cats.sort_unstable();
        cats.dedup();
        bought.clear();
        for (j, &k) in cats.iter().enumerate() {
            if j > 0 {
                bought.push('\t');
            }
            bought.push_str(&data.categories[k as usize]);
        }
        row.int(Some((o1 - o0) as i64));
        row.real(Some(spend));
        row.int((o1 > o0).then(|| data.order_at[o1 - 1]));
        row.text((!cats.is_empty()).then_some(bought.as_str()));
    })
    .await?;
    tracing::info!(
        rows = snap.len(),
        secs = started.elapsed().as_secs_f32(),
        "scores written"
    );
    tx.execute(
        "DELETE FROM product_sales WHERE as_of_date = $1",
        &[Val::Text(Some(as_of_date.into()))],
    )
    .await?;
    let sales: Vec<Vec<Val>> = data
        .product_units
        .iter()
        .map(|(p, u)| {
            vec![
                Val::Text(Some(as_of_date.into())),
                Val::Text(Some(p.clone())),
                Val::Int(Some(*u)),
                Val::Int(Some(best_seller_days as i64)),
            ]
        })
        .collect();
    tx.insert_rows(
        "product_sales",
        &["as_of_date", "product_id", "units", "window_days"],
        &sales,
    )
    .await?;
    if let Some((cutoff, d)) = &drift {
        crate::monitoring::store_drift(&mut tx, as_of_date, version.model_version_id, *cutoff, d)
            .await?;
    }
    tx.execute(
        "DELETE FROM scoring_runs WHERE as_of_date = $1",
        &[Val::Text(Some(as_of_date.into()))],
    )
    .await?;
    tx.execute(
        "INSERT INTO scoring_runs (as_of_date, model_version_id, as_of, scored_at, customers) VALUES ($1, $2, $3, $4, $5)",
        &[
            Val::Text(Some(as_of_date.into())),
            Val::Int(Some(version.model_version_id)),
            Val::Int(Some(as_of)),
            Val::Int(Some(chrono::Utc::now().timestamp())),
            Val::Int(Some(snap.len() as i64)),
        ],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(secs = started.elapsed().as_secs_f32(), "committed");
    let mean = p.p_return.iter().sum::<f64>() / p.p_return.len().max(1) as f64;
    Ok(ScoreSummary {
        as_of_date: as_of_date.into(),
        model_version_id: version.model_version_id,
        model_kind: kind.into(),
        customers: snap.len(),
        mean_p_return: mean,
        drifted_features: drift
            .iter()
            .flat_map(|(_, d)| {
                d.iter()
                    .filter(|(_, p)| *p > crate::monitoring::PSI_WARN)
                    .map(|(f, _)| f.clone())
            })
            .collect(),
        max_psi: drift
            .as_ref()
            .and_then(|(_, d)| d.iter().map(|(_, p)| *p).reduce(f64::max)),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::top3;
    use crate::models::category::ranking;

    #[test]
    fn top3_agrees_with_the_full_ranking_ties_included() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for k in [0usize, 1, 2, 3, 4, 9] {
            for _ in 0..200 {
                // Few distinct values, so ties are common.
                let probs: Vec<f32> = (0..k)
                    .map(|_| rng.random_range(0..4) as f32 / 4.0)
                    .collect();
                let as_f64: Vec<f64> = probs.iter().map(|&v| v as f64).collect();
                let want: Vec<(usize, f64)> = ranking(&as_f64)
                    .into_iter()
                    .take(3)
                    .map(|c| (c as usize, as_f64[c as usize]))
                    .collect();
                let got: Vec<(usize, f64)> = top3(&probs).into_iter().flatten().collect();
                assert_eq!(got, want, "{probs:?}");
            }
        }
    }
}
