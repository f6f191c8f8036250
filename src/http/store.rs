//! The database side of the HTTP handlers: outbox lookups and status moves, suppressions,
//! webhook event records. One SQL text for both backends, run inside the caller's transaction.

use crate::db::{Backend, Tx, Val};

/// Runs `$body` with `$t` bound to the concrete transaction of `$tx` (like `with_pool!`).
macro_rules! on_tx {
    ($tx:expr, $t:ident => $body:expr) => {
        match $tx {
            crate::db::Tx::Sqlite($t) => $body,
            crate::db::Tx::Postgres($t) => $body,
        }
    };
}

/// Every suppression write on PostgreSQL takes this transaction-scoped advisory lock first, so
/// the SELECT-then-INSERT below cannot race into duplicate rows. (SQLite has one writer, and
/// the caller's first statement is always a write, so its transaction holds the write lock.)
pub(crate) const SUPPRESSION_LOCK_KEY: i64 = 0x7265_7465_6e74_0001;

/// Statuses a provider's "delivered" may move a message out of; anything else (delivered,
/// failed, dead, suppressed, held_out, queued) stays: webhook order never moves a row back.
const DELIVERABLE_FROM: &str = "('sending', 'sent', 'unknown')";
/// Statuses a permanent failure moves out of. A hard bounce may also follow "delivered" (an
/// asynchronous bounce from the recipient's server).
const FAILABLE_FROM: &str = "('sending', 'sent', 'unknown')";
const HARD_FAILABLE_FROM: &str = "('sending', 'sent', 'unknown', 'delivered')";

/// The outbox columns the handlers need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutboxRow {
    pub message_id: i64,
    pub customer_id: String,
    pub channel: Option<String>,
    pub status: String,
    pub recipient: Option<String>,
}

type RowTuple = (i64, String, Option<String>, String, Option<String>);

impl From<RowTuple> for OutboxRow {
    fn from((message_id, customer_id, channel, status, recipient): RowTuple) -> Self {
        OutboxRow {
            message_id,
            customer_id,
            channel,
            status,
            recipient,
        }
    }
}

pub(crate) async fn message_by_id(tx: &mut Tx, message_id: i64) -> sqlx::Result<Option<OutboxRow>> {
    const SQL: &str = "SELECT message_id, customer_id, channel, status, recipient FROM outbox WHERE message_id = $1";
    let row = on_tx!(tx, t => sqlx::query_as::<_, RowTuple>(SQL).bind(message_id).fetch_optional(&mut **t).await)?;
    Ok(row.map(OutboxRow::from))
}

/// The message `provider` knows as `provider_message_id` (uses the (provider,
/// provider_message_id) index).
pub(crate) async fn message_by_provider_id(
    tx: &mut Tx,
    provider: &str,
    provider_message_id: &str,
) -> sqlx::Result<Option<OutboxRow>> {
    const SQL: &str = "SELECT message_id, customer_id, channel, status, recipient FROM outbox \
                       WHERE provider = $1 AND provider_message_id = $2 ORDER BY message_id LIMIT 1";
    let row = on_tx!(tx, t => sqlx::query_as::<_, RowTuple>(SQL).bind(provider).bind(provider_message_id).fetch_optional(&mut **t).await)?;
    Ok(row.map(OutboxRow::from))
}

/// Customers with this email address (case-insensitive). Rarely used (events that name no
/// message), so a scan is acceptable.
pub(crate) async fn customers_by_email(tx: &mut Tx, email: &str) -> sqlx::Result<Vec<String>> {
    tx.fetch_strings("SELECT customer_id FROM customers WHERE LOWER(email) = LOWER($1) ORDER BY customer_id LIMIT 100", &[Val::Text(Some(email.to_string()))]).await
}

/// `expr` with the usual phone punctuation and a `whatsapp:` prefix removed, in SQL both
/// backends understand.
fn sql_digits(expr: &str) -> String {
    let mut s = format!("REPLACE({expr}, 'whatsapp:', '')");
    for ch in ["+", " ", "-", "(", ")", "."] {
        s = format!("REPLACE({s}, '{ch}', '')");
    }
    s
}

/// Customers whose phone number is `phone` (compared on digits only: `+91 98765-43210`,
/// `919876543210` and `whatsapp:+919876543210` are the same), from `customers.phone` and from
/// the recipients of their messages on `channel`. Nothing for fewer than 6 digits.
pub(crate) async fn customers_by_phone(
    tx: &mut Tx,
    phone: &str,
    channel: &str,
) -> sqlx::Result<Vec<String>> {
    let digits = digits_only(phone);
    if digits.len() < 6 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT customer_id FROM customers WHERE {} = $1 \
         UNION SELECT customer_id FROM outbox WHERE channel = $2 AND {} = $1 \
         ORDER BY customer_id LIMIT 100",
        sql_digits("phone"),
        sql_digits("recipient")
    );
    tx.fetch_strings(
        &sql,
        &[
            Val::Text(Some(digits)),
            Val::Text(Some(channel.to_string())),
        ],
    )
    .await
}

pub(crate) fn digits_only(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// A suppression to add. `channel` None = every channel.
#[derive(Debug, Clone)]
pub(crate) struct NewSuppression<'a> {
    pub customer_id: &'a str,
    pub channel: Option<&'a str>,
    pub address: Option<&'a str>,
    /// unsubscribe | hard_bounce | complaint | stop
    pub reason: &'a str,
    /// link | sendgrid | postmark | …
    pub source: &'a str,
}

/// Suppresses the customer on the channel and marks their queued messages on it (all of them
/// when `channel` is None) as `suppressed`. Idempotent: no second row for the same customer,
/// channel and reason. Returns whether a suppression row was added.
pub(crate) async fn add_suppression(
    tx: &mut Tx,
    s: &NewSuppression<'_>,
    now: i64,
) -> sqlx::Result<bool> {
    if tx.backend() == Backend::Postgres {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[Val::Int(Some(SUPPRESSION_LOCK_KEY))],
        )
        .await?;
    }
    let channel = Val::Text(s.channel.map(str::to_string));
    // A write first: on SQLite this takes the write lock before anything is read.
    tx.execute(
        "UPDATE outbox SET status = 'suppressed', updated_at = $3 \
         WHERE customer_id = $1 AND status = 'queued' AND ($2 IS NULL OR channel = $2)",
        &[
            Val::Text(Some(s.customer_id.to_string())),
            channel.clone(),
            Val::Int(Some(now)),
        ],
    )
    .await?;
    let added = tx
        .execute(
            "INSERT INTO suppressions (customer_id, channel, address, reason, source, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE NOT EXISTS (SELECT 1 FROM suppressions WHERE customer_id = $1 AND COALESCE(channel, '') = COALESCE($2, '') AND reason = $4)",
            &[
                Val::Text(Some(s.customer_id.to_string())),
                channel,
                Val::Text(s.address.map(str::to_string)),
                Val::Text(Some(s.reason.to_string())),
                Val::Text(Some(s.source.to_string())),
                Val::Int(Some(now)),
            ],
        )
        .await?;
    Ok(added > 0)
}

/// `delivered` (+ delivered_at, kept if already set) from sending/sent/unknown only.
pub(crate) async fn mark_delivered(
    tx: &mut Tx,
    message_id: i64,
    at: i64,
    now: i64,
) -> sqlx::Result<u64> {
    let sql = format!(
        "UPDATE outbox SET status = 'delivered', delivered_at = COALESCE(delivered_at, $2), updated_at = $3 \
         WHERE message_id = $1 AND status IN {DELIVERABLE_FROM}"
    );
    tx.execute(
        &sql,
        &[
            Val::Int(Some(message_id)),
            Val::Int(Some(at)),
            Val::Int(Some(now)),
        ],
    )
    .await
}

/// `failed` + last_error. `hard` (the address is bad) also overrides an earlier "delivered".
pub(crate) async fn mark_failed(
    tx: &mut Tx,
    message_id: i64,
    error: &str,
    hard: bool,
    now: i64,
) -> sqlx::Result<u64> {
    let from = if hard {
        HARD_FAILABLE_FROM
    } else {
        FAILABLE_FROM
    };
    let sql = format!(
        "UPDATE outbox SET status = 'failed', last_error = $2, updated_at = $3 WHERE message_id = $1 AND status IN {from}"
    );
    let error: String = error.chars().take(500).collect();
    tx.execute(
        &sql,
        &[
            Val::Int(Some(message_id)),
            Val::Text(Some(error)),
            Val::Int(Some(now)),
        ],
    )
    .await
}

/// Records a webhook event; false when `event_key` was already recorded (a replay).
pub(crate) async fn record_event(
    tx: &mut Tx,
    event_key: &str,
    provider: &str,
    kind: &str,
    payload: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let n = tx
        .execute(
            "INSERT INTO webhook_events (event_key, provider, kind, message_id, customer_id, received_at, payload) \
             VALUES ($1, $2, $3, NULL, NULL, $4, $5) ON CONFLICT DO NOTHING",
            &[
                Val::Text(Some(event_key.to_string())),
                Val::Text(Some(provider.to_string())),
                Val::Text(Some(kind.to_string())),
                Val::Int(Some(now)),
                Val::Text(Some(payload.to_string())),
            ],
        )
        .await?;
    Ok(n > 0)
}

/// Fills in what an event was matched to.
pub(crate) async fn link_event(
    tx: &mut Tx,
    event_key: &str,
    message_id: Option<i64>,
    customer_id: Option<&str>,
) -> sqlx::Result<()> {
    if message_id.is_none() && customer_id.is_none() {
        return Ok(());
    }
    tx.execute(
        "UPDATE webhook_events SET message_id = $2, customer_id = $3 WHERE event_key = $1",
        &[
            Val::Text(Some(event_key.to_string())),
            Val::Int(message_id),
            Val::Text(customer_id.map(str::to_string)),
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only_strips_everything_else() {
        assert_eq!(digits_only("whatsapp:+91 (98765) 432-10"), "919876543210");
        assert_eq!(digits_only(""), "");
    }

    #[test]
    fn sql_digits_nests_replaces() {
        let s = sql_digits("phone");
        assert!(s.starts_with("REPLACE(REPLACE("), "{s}");
        assert!(s.contains("'whatsapp:'"));
        assert_eq!(s.matches("REPLACE(").count(), 7);
    }
}
