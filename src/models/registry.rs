//! The model registry: every `train` run stored with its metrics, and at most one champion.
//!
//! A stored artifact holds two bundles: the *production* bundle (fitted as of the training
//! day, what `score` uses) and the *evaluation* bundle (same recipe fitted one horizon earlier,
//! whose metrics on the latest complete window are the row's metrics). Promotion compares the
//! new evaluation bundle with the champion's on the same window; the champion's evaluation
//! bundle only ever saw labels from before that window, so the comparison is fair.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::bundle::ModelBundle;
use crate::db::{Db, Val};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub production: ModelBundle,
    pub evaluation: ModelBundle,
}

/// Instants are epoch seconds in memory and RFC 3339 (UTC) in JSON (`models --json`), which a
/// person or a script reads without converting.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    pub model_version_id: i64,
    #[serde(serialize_with = "rfc3339")]
    pub trained_at: i64,
    #[serde(serialize_with = "rfc3339")]
    pub as_of: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub evaluated_as_of: Option<i64>,
    pub horizon_days: i64,
    pub kind: String,
    pub schema_hash: String,
    pub metrics: serde_json::Value,
    pub status: String,
    pub reason: String,
}

fn rfc3339<S: serde::Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    match chrono::DateTime::from_timestamp(*t, 0) {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => s.serialize_i64(*t),
    }
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database error in the model registry: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored model {id} cannot be read: {reason}")]
    Corrupt { id: i64, reason: String },
}

pub fn encode(a: &Artifact) -> Vec<u8> {
    let json = serde_json::to_vec(a).expect("artifacts serialize");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).expect("in-memory write");
    gz.finish().expect("in-memory write")
}

pub fn decode(id: i64, bytes: &[u8]) -> Result<Artifact, RegistryError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut json)
        .map_err(|e| RegistryError::Corrupt {
            id,
            reason: e.to_string(),
        })?;
    let mut a: Artifact = serde_json::from_slice(&json).map_err(|e| RegistryError::Corrupt {
        id,
        reason: e.to_string(),
    })?;
    for b in [&mut a.production, &mut a.evaluation] {
        b.ready().map_err(|e| RegistryError::Corrupt {
            id,
            reason: e.to_string(),
        })?;
    }
    Ok(a)
}

pub struct NewVersion<'a> {
    pub trained_at: i64,
    pub as_of: i64,
    pub evaluated_as_of: Option<i64>,
    pub artifact: &'a Artifact,
    pub metrics: serde_json::Value,
    pub promote: bool,
    pub reason: String,
}

/// Stores a version; when `promote`, it becomes the champion and the old one is retired, in
/// one transaction (the partial unique index guarantees a single champion).
pub async fn insert(db: &Db, v: NewVersion<'_>) -> Result<i64, RegistryError> {
    let mut tx = db.begin().await?;
    if v.promote {
        tx.execute(
            "UPDATE model_versions SET status = 'retired' WHERE status = 'champion'",
            &[],
        )
        .await?;
    }
    let p = &v.artifact.production;
    let id = tx
        .fetch_i64(
            "INSERT INTO model_versions (trained_at, as_of, evaluated_as_of, horizon_days, kind, schema_hash, metrics, artifact, status, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING model_version_id",
            &[
                Val::Int(Some(v.trained_at)),
                Val::Int(Some(v.as_of)),
                Val::Int(v.evaluated_as_of),
                Val::Int(Some(p.horizon_days as i64)),
                Val::Text(Some(p.kind.as_str().into())),
                Val::Text(Some(p.schema.hash())),
                Val::Text(Some(v.metrics.to_string())),
                Val::Bytes(encode(v.artifact)),
                Val::Text(Some(if v.promote { "champion" } else { "rejected" }.into())),
                Val::Text(Some(v.reason)),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(id)
}

const COLUMNS: &str = "model_version_id, trained_at, as_of, evaluated_as_of, horizon_days, kind, schema_hash, metrics, status, reason";

fn version_from<R: sqlx::Row>(row: &R) -> Result<ModelVersion, sqlx::Error>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let metrics: String = row.try_get(7)?;
    Ok(ModelVersion {
        model_version_id: row.try_get(0)?,
        trained_at: row.try_get(1)?,
        as_of: row.try_get(2)?,
        evaluated_as_of: row.try_get(3)?,
        horizon_days: row.try_get(4)?,
        kind: row.try_get(5)?,
        schema_hash: row.try_get(6)?,
        metrics: serde_json::from_str(&metrics).unwrap_or(serde_json::Value::Null),
        status: row.try_get(8)?,
        reason: row.try_get(9)?,
    })
}

/// Every version, newest first.
pub async fn list(db: &Db) -> Result<Vec<ModelVersion>, RegistryError> {
    let sql = format!("SELECT {COLUMNS} FROM model_versions ORDER BY model_version_id DESC");
    let rows = crate::with_pool!(db, p => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?;
        rows.iter().map(version_from).collect::<Result<Vec<_>, _>>()
    })?;
    Ok(rows)
}

/// The champion and its artifact, if there is one.
pub async fn champion(db: &Db) -> Result<Option<(ModelVersion, Artifact)>, RegistryError> {
    let sql = format!("SELECT {COLUMNS}, artifact FROM model_versions WHERE status = 'champion'");
    let found = crate::with_pool!(db, p => {
        match sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(p).await? {
            None => None,
            Some(row) => {
                use sqlx::Row;
                let bytes: Vec<u8> = row.try_get(10)?;
                Some((version_from(&row)?, bytes))
            }
        }
    });
    match found {
        None => Ok(None),
        Some((v, bytes)) => {
            let a = decode(v.model_version_id, &bytes)?;
            Ok(Some((v, a)))
        }
    }
}
