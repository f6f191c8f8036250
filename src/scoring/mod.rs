//! `retentiond score`: every customer with a completed order, scored by the champion as of a
//! day, into the `scores` table. One scoring per as-of day: re-running replaces that day's rows
//! in one transaction, so readers never see a half-written day.

use serde::Serialize;

use crate::db::{Db, Val, value_tuples};
use crate::features::{BROWSE_LOOKBACK_DAYS, BrandData, DAY, FeatureParams, FeatureSchema, LoadOptions, snapshot};
use crate::models::category::ranking;
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
    let (version, artifact) = registry::champion(db).await?.ok_or(ScoringError::NoChampion)?;
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
    let fp = FeatureParams { horizon_days: bundle.horizon_days, category_half_life_days };
    let snap = snapshot(&data, as_of, &fp, None)?;
    let p = bundle.predict(&snap);
    tracing::info!(customers = snap.len(), secs = started.elapsed().as_secs_f32(), "predicted");
    // Drift of today's population against the training data (monitoring.rs).
    let drift = bundle.feature_reference.as_ref().map(|r| (r.cutoff, r.psi(&snap.base)));
    if let Some((_, d)) = &drift {
        let shifted: Vec<String> = d.iter().filter(|(_, p)| *p > crate::monitoring::PSI_WARN).map(|(f, p)| format!("{f} ({p:.2})")).collect();
        if !shifted.is_empty() {
            tracing::warn!(features = %shifted.join(", "), "feature drift since training (PSI above 0.2): consider retraining");
        }
    }

    let mut tx = db.begin().await?;
    tx.execute("DELETE FROM scores WHERE as_of_date = $1", &[Val::Text(Some(as_of_date.into()))]).await?;
    let per = 30_000 / COLUMNS.len();
    let day_at = |d: f64| as_of + (d * DAY as f64).round() as i64;
    let k = snap.k;
    let kind = bundle.kind.as_str();
    let mut cats: Vec<u16> = Vec::new();
    for chunk_start in (0..snap.len()).step_by(per) {
        let end = (chunk_start + per).min(snap.len());
        let mut vals = Vec::with_capacity((end - chunk_start) * COLUMNS.len());
        for i in chunk_start..end {
            let top: Vec<(Option<String>, Option<f64>)> = if k > 0 && !p.category.is_empty() {
                let probs: Vec<f64> = p.category[i * k..(i + 1) * k].iter().map(|&v| v as f64).collect();
                ranking(&probs).into_iter().take(3).map(|c| (Some(data.categories[c as usize].clone()), Some(probs[c as usize]))).collect()
            } else {
                vec![]
            };
            let cat = |j: usize| top.get(j).cloned().unwrap_or((None, None));
            let (c1, c2, c3) = (cat(0), cat(1), cat(2));
            vals.extend([
                Val::Text(Some(as_of_date.into())),
                Val::Text(Some(data.customer_ids[snap.customers[i] as usize].clone())),
                Val::Int(Some(version.model_version_id)),
                Val::Text(Some(kind.into())),
                Val::Int(Some(as_of)),
                Val::Int(Some(bundle.horizon_days as i64)),
                Val::Real(Some(p.p_return[i])),
                Val::Real(Some(p.p_alive[i])),
                Val::Int(Some(p.lo[i].floor() as i64)),
                Val::Int(Some(p.median[i].round() as i64)),
                Val::Int(Some(p.hi[i].ceil() as i64)),
                Val::Int(Some(day_at(p.lo[i].floor()))),
                Val::Int(Some(day_at(p.median[i].round()))),
                Val::Int(Some(day_at(p.hi[i].ceil()))),
                Val::Text(c1.0),
                Val::Real(c1.1),
                Val::Text(c2.0),
                Val::Real(c2.1),
                Val::Text(c3.0),
                Val::Real(c3.1),
                // Lapse risk: the chance they have not come back by the end of their window.
                Val::Real(Some(1.0 - p.p_by_hi[i])),
            ]);
            // The order history campaigns filter on, as of the same instant.
            let c = snap.customers[i] as usize;
            let (o0, o1) = (data.order_start[c] as usize, data.order_start[c + 1] as usize);
            let spend: f64 = data.order_amount[o0..o1].iter().map(|&a| a as f64).sum();
            cats.clear();
            for o in o0..o1 {
                let (l0, l1) = (data.line_start[o] as usize, data.line_start[o + 1] as usize);
                cats.extend(data.line_cat[l0..l1].iter().copied().filter(|&k| k != crate::features::data::NO_CAT));
            }
            cats.sort_unstable();
            cats.dedup();
            let bought = (!cats.is_empty()).then(|| cats.iter().map(|&k| data.categories[k as usize].as_str()).collect::<Vec<_>>().join("\t"));
            vals.extend([
                Val::Int(Some((o1 - o0) as i64)),
                Val::Real(Some(spend)),
                Val::Int((o1 > o0).then(|| data.order_at[o1 - 1])),
                Val::Text(bought),
            ]);
        }
        let sql = format!(
            "INSERT INTO scores ({}) VALUES {}",
            COLUMNS.join(", "),
            value_tuples(tx.backend(), end - chunk_start, COLUMNS.len())
        );
        tx.execute(&sql, &vals).await?;
    }
    tx.execute("DELETE FROM product_sales WHERE as_of_date = $1", &[Val::Text(Some(as_of_date.into()))]).await?;
    let sales: Vec<Vec<Val>> = data
        .product_units
        .iter()
        .map(|(p, u)| vec![Val::Text(Some(as_of_date.into())), Val::Text(Some(p.clone())), Val::Int(Some(*u)), Val::Int(Some(best_seller_days as i64))])
        .collect();
    tx.insert_rows("product_sales", &["as_of_date", "product_id", "units", "window_days"], &sales).await?;
    if let Some((cutoff, d)) = &drift {
        crate::monitoring::store_drift(&mut tx, as_of_date, version.model_version_id, *cutoff, d).await?;
    }
    tx.execute("DELETE FROM scoring_runs WHERE as_of_date = $1", &[Val::Text(Some(as_of_date.into()))]).await?;
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
    let mean = p.p_return.iter().sum::<f64>() / p.p_return.len().max(1) as f64;
    Ok(ScoreSummary {
        as_of_date: as_of_date.into(),
        model_version_id: version.model_version_id,
        model_kind: kind.into(),
        customers: snap.len(),
        mean_p_return: mean,
        drifted_features: drift.iter().flat_map(|(_, d)| d.iter().filter(|(_, p)| *p > crate::monitoring::PSI_WARN).map(|(f, _)| f.clone())).collect(),
        max_psi: drift.as_ref().and_then(|(_, d)| d.iter().map(|(_, p)| *p).reduce(f64::max)),
        seconds: started.elapsed().as_secs_f64(),
    })
}
