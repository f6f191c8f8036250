-- Delivery: the outbox is the queue. A worker claims a row by setting a lease; an expired lease
-- means its worker died and the row may be claimed again. Every attempt is recorded.
ALTER TABLE outbox ADD COLUMN provider TEXT;
ALTER TABLE outbox ADD COLUMN provider_message_id TEXT;
ALTER TABLE outbox ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at BIGINT;      -- retry not before (UTC seconds)
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until BIGINT;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN sent_at BIGINT;
ALTER TABLE outbox ADD COLUMN delivered_at BIGINT;
CREATE INDEX outbox_provider_message ON outbox (provider, provider_message_id);

CREATE TABLE delivery_attempts (
    attempt_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     BIGINT NOT NULL,
    attempt        BIGINT NOT NULL,             -- 1, 2, …
    provider       TEXT NOT NULL,
    channel        TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    latency_ms     BIGINT,
    status_code    BIGINT,
    outcome        TEXT NOT NULL,               -- started | accepted | transient | permanent | unknown
    error          TEXT
);
CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id);

-- Provider webhook events, once each (providers retry their webhooks).
CREATE TABLE webhook_events (
    event_key    TEXT PRIMARY KEY NOT NULL,     -- provider/event id (or a digest of the payload)
    provider     TEXT NOT NULL,
    kind         TEXT NOT NULL,                 -- delivered | bounced | complained | unsubscribed | stop
    message_id   BIGINT,
    customer_id  TEXT,
    received_at  BIGINT NOT NULL,
    payload      TEXT NOT NULL
);
