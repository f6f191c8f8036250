//! `retentiond train`: fit as of the training day, measure on the latest complete horizon,
//! store, and promote only if not worse than the champion on that same window.

use serde::Serialize;

use super::bundle::ModelKind;
use super::evaluate::{self, BacktestReport};
use super::registry::{self, Artifact, NewVersion};
use crate::config::ModelSettings;
use crate::db::Db;
use crate::features::labels::labels;
use crate::features::{DAY, FeatureSchema, snapshot};

#[derive(Debug, Serialize)]
pub enum TrainOutcome {
    /// The new version is the champion.
    Promoted {
        model_version_id: i64,
        reason: String,
    },
    /// The new version was stored but the previous champion stays.
    KeptChampion {
        model_version_id: i64,
        champion_id: i64,
        reason: String,
    },
}

/// The comparison on one window: candidate vs champion.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub metric: &'static str,
    pub candidate: f64,
    pub champion: f64,
}

/// Compares the headline metrics; returns the ones where the candidate is worse beyond `tol`.
pub fn regressions(
    candidate: &BacktestReport,
    champion: &BacktestReport,
    tol: f64,
) -> Vec<Comparison> {
    let mut pairs = vec![
        Comparison {
            metric: "return AUC",
            candidate: candidate.ret.auc,
            champion: champion.ret.auc,
        },
        Comparison {
            metric: "timing C-index",
            candidate: candidate.timing.c_index,
            champion: champion.timing.c_index,
        },
    ];
    if let (Some(a), Some(b)) = (&candidate.category, &champion.category) {
        pairs.push(Comparison {
            metric: "category hit@1",
            candidate: a.hit_at_1,
            champion: b.hit_at_1,
        });
    }
    pairs
        .into_iter()
        .filter(|c| {
            c.champion.is_finite() && (c.candidate < c.champion - tol || c.candidate.is_nan())
        })
        .collect()
}

#[tracing::instrument(skip_all, fields(as_of))]
pub async fn train(
    db: &Db,
    m: &ModelSettings,
    tz: chrono_tz::Tz,
    as_of: i64,
) -> anyhow::Result<(TrainOutcome, BacktestReport)> {
    let h = m.horizon_days as i64 * DAY;
    let eval_as_of = as_of - h;
    // One load serves the evaluation fit (cutoffs before as_of − H) and the production fit.
    let data = evaluate::load(db, m, eval_as_of, as_of).await?;
    let (evaluation, cold_eval) = evaluate::fit_as_of(&data, eval_as_of, m, None)?;
    let eval_snap = snapshot(&data, eval_as_of, &evaluate::feature_params(m), None)?;
    let eval_labels = labels(&data, &eval_snap, m.horizon_days)?;
    let mut report = evaluate::evaluate(&evaluation, &eval_snap, &eval_labels, cold_eval);
    report.localize(tz);
    let schema = FeatureSchema::new(&data.categories);
    // The champion is judged on the same window now, so the full-population snapshot is freed
    // before the production fit allocates its training sets.
    let champion = registry::champion(db).await?;
    let comparable = |v: &registry::ModelVersion, a: &Artifact| {
        a.evaluation.schema == schema
            && !v.evaluated_as_of.is_some_and(|e| e > eval_as_of)
            && a.evaluation.horizon_days == m.horizon_days
    };
    let mut theirs = match &champion {
        Some((v, a)) if comparable(v, a) => {
            let mut r = evaluate::evaluate(&a.evaluation, &eval_snap, &eval_labels, None);
            r.localize(tz);
            Some(r)
        }
        _ => None,
    };
    drop((eval_snap, eval_labels));
    let chosen = evaluation.classifier.as_ref().map(|c| c.choice());
    let (production, cold) = evaluate::fit_as_of(&data, as_of, m, chosen)?;
    tracing::info!(
        auc = report.ret.auc,
        kind = production.kind.as_str(),
        "trained; evaluated on the latest complete horizon"
    );
    drop(data);

    let mut champion_report = None;
    let (promote, reason, champion_id) = match champion {
        None => (true, "first model".to_string(), None),
        Some((v, a)) => {
            let id = v.model_version_id;
            if a.evaluation.schema != schema {
                (
                    true,
                    format!(
                        "champion {id} was trained on another feature schema (categories changed)"
                    ),
                    Some(id),
                )
            } else if v.evaluated_as_of.is_some_and(|e| e > eval_as_of)
                || a.evaluation.horizon_days != m.horizon_days
            {
                (
                    false,
                    format!(
                        "champion {id} was evaluated on a later window or another horizon; not comparable"
                    ),
                    Some(id),
                )
            } else if production.kind == ModelKind::Model && a.production.kind == ModelKind::Rules {
                (
                    true,
                    format!("fitted models replace the cold-start rules of {id}"),
                    Some(id),
                )
            } else {
                let theirs = theirs
                    .take()
                    .expect("evaluated above: the champion is comparable");
                let worse = regressions(&report, &theirs, m.promotion_tolerance);
                champion_report = Some(theirs);
                if worse.is_empty() {
                    (
                        true,
                        format!(
                            "not worse than champion {id} beyond {} on the same window",
                            m.promotion_tolerance
                        ),
                        Some(id),
                    )
                } else {
                    let what: Vec<String> = worse
                        .iter()
                        .map(|c| format!("{} {:.4} < {:.4}", c.metric, c.candidate, c.champion))
                        .collect();
                    (
                        false,
                        format!(
                            "worse than champion {id} beyond {}: {}",
                            m.promotion_tolerance,
                            what.join(", ")
                        ),
                        Some(id),
                    )
                }
            }
        }
    };
    let reason = match &cold {
        Some(c) => format!("{reason}; cold start: {c}"),
        None => reason,
    };
    let metrics =
        serde_json::json!({ "evaluation": report, "champion_on_same_window": champion_report });
    let artifact = Artifact {
        production,
        evaluation,
    };
    let id = registry::insert(
        db,
        NewVersion {
            trained_at: chrono::Utc::now().timestamp(),
            as_of,
            evaluated_as_of: Some(eval_as_of),
            artifact: &artifact,
            metrics,
            promote,
            reason: reason.clone(),
        },
    )
    .await?;
    if promote {
        tracing::info!(model_version_id = id, %reason, "promoted to champion");
        Ok((
            TrainOutcome::Promoted {
                model_version_id: id,
                reason,
            },
            report,
        ))
    } else {
        tracing::warn!(model_version_id = id, %reason, "kept the current champion");
        Ok((
            TrainOutcome::KeptChampion {
                model_version_id: id,
                champion_id: champion_id.unwrap_or(0),
                reason,
            },
            report,
        ))
    }
}
