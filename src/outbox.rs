//! The outbox: one row per (campaign, customer, day), written by `campaigns run` and drained by
//! delivery. The idempotency key is the row's identity, so writing the same selection twice
//! adds nothing (`ON CONFLICT DO NOTHING`, the same statement on both backends).

use serde::Serialize;

use crate::db::{Db, Tx, Val, value_tuples};

/// A message's state. `held_out` rows are never sent: they record the control group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    HeldOut,
    Sending,
    Sent,
    Delivered,
    Failed,
    Dead,
    Suppressed,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::HeldOut,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Failed,
        Status::Dead,
        Status::Suppressed,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::HeldOut => "held_out",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Dead => "dead",
            Status::Suppressed => "suppressed",
            Status::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The customer was (or is about to be, or may have been) contacted: counts towards the
    /// frequency cap.
    pub fn is_outreach(self) -> bool {
        matches!(
            self,
            Status::Queued | Status::Sending | Status::Sent | Status::Delivered | Status::Unknown
        )
    }
}

/// A row to write.
#[derive(Debug, Clone, Serialize)]
pub struct NewMessage {
    pub idempotency_key: String,
    pub campaign: String,
    pub customer_id: String,
    pub day: String,
    pub status: Status,
    pub channel: Option<String>,
    pub fallback_channels: Vec<String>,
    pub recipient: Option<String>,
    pub message: Option<serde_json::Value>,
    pub offer: serde_json::Value,
    pub explanation: serde_json::Value,
    pub holdout_draw: f64,
    pub model_version_id: i64,
    pub p_return: f64,
    pub lapse_risk: f64,
    pub not_before: i64,
    pub expires_at: i64,
}

/// `campaign/customer/day`: the identity of a message, also sent to providers that accept an
/// idempotency key.
pub fn idempotency_key(campaign: &str, customer_id: &str, day: &str) -> String {
    format!("{campaign}/{customer_id}/{day}")
}

const COLUMNS: &[&str] = &[
    "idempotency_key",
    "campaign",
    "customer_id",
    "day",
    "status",
    "channel",
    "fallback_channels",
    "recipient",
    "message",
    "offer",
    "explanation",
    "holdout_draw",
    "model_version_id",
    "p_return",
    "lapse_risk",
    "not_before",
    "expires_at",
    "created_at",
    "updated_at",
];

/// Inserts the rows that are not there yet; returns how many were new.
pub async fn insert(tx: &mut Tx, rows: &[NewMessage], now: i64) -> anyhow::Result<u64> {
    let per = 30_000 / COLUMNS.len();
    let mut inserted = 0;
    for chunk in rows.chunks(per) {
        let mut vals = Vec::with_capacity(chunk.len() * COLUMNS.len());
        for m in chunk {
            vals.extend([
                Val::Text(Some(m.idempotency_key.clone())),
                Val::Text(Some(m.campaign.clone())),
                Val::Text(Some(m.customer_id.clone())),
                Val::Text(Some(m.day.clone())),
                Val::Text(Some(m.status.as_str().into())),
                Val::Text(m.channel.clone()),
                Val::Text(Some(serde_json::to_string(&m.fallback_channels)?)),
                Val::Text(m.recipient.clone()),
                Val::Text(m.message.as_ref().map(serde_json::to_string).transpose()?),
                Val::Text(Some(serde_json::to_string(&m.offer)?)),
                Val::Text(Some(serde_json::to_string(&m.explanation)?)),
                Val::Real(Some(m.holdout_draw)),
                Val::Int(Some(m.model_version_id)),
                Val::Real(Some(m.p_return)),
                Val::Real(Some(m.lapse_risk)),
                Val::Int(Some(m.not_before)),
                Val::Int(Some(m.expires_at)),
                Val::Int(Some(now)),
                Val::Int(Some(now)),
            ]);
        }
        // No conflict target: a row for the same key, or for the same customer and day from
        // another campaign, is skipped alike.
        let sql = format!(
            "INSERT INTO outbox ({}) VALUES {} ON CONFLICT DO NOTHING",
            COLUMNS.join(", "),
            value_tuples(tx.backend(), chunk.len(), COLUMNS.len())
        );
        inserted += tx.execute(&sql, &vals).await?;
    }
    Ok(inserted)
}

/// Outbox rows by status (all days).
pub async fn counts_by_status(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(crate::with_pool!(db, p => {
        sqlx::query_as::<_, (String, i64)>("SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status").fetch_all(p).await
    })?)
}
