-- Campaigns: what selection needs from scoring, the outbox it writes, suppressions that beat
-- every campaign, and a record of every run.

-- Order-history summary as of the scoring instant, so campaign audiences are filtered without
-- re-reading the order tables. categories_bought: category names joined by a tab.
ALTER TABLE scores ADD COLUMN orders_count BIGINT;
ALTER TABLE scores ADD COLUMN total_spend DOUBLE PRECISION;
ALTER TABLE scores ADD COLUMN last_order_at BIGINT;
ALTER TABLE scores ADD COLUMN categories_bought TEXT;

-- One row per (campaign, customer, day): the idempotency key. A customer gets at most one
-- campaign per day, enforced here too. Held-out customers get a row (status held_out, no
-- message) so the split is recorded for measurement.
CREATE TABLE outbox (
    message_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key   TEXT NOT NULL UNIQUE,      -- campaign/customer/day
    campaign          TEXT NOT NULL,
    customer_id       TEXT NOT NULL,
    day               TEXT NOT NULL,             -- YYYY-MM-DD (brand time zone), the scores' as-of day
    status            TEXT NOT NULL,             -- queued | held_out | sending | sent | delivered | failed | dead | suppressed | unknown
    channel           TEXT,                      -- NULL when held out
    fallback_channels TEXT NOT NULL,             -- JSON array: channels left to try after a permanent failure
    recipient         TEXT,                      -- address or phone number for the channel
    message           TEXT,                      -- JSON: the rendered message
    offer             TEXT NOT NULL,             -- JSON
    explanation       TEXT NOT NULL,             -- JSON: scores snapshot and the rule that selected it
    holdout_draw      DOUBLE PRECISION NOT NULL, -- the deterministic uniform draw of the split
    model_version_id  BIGINT,
    p_return          DOUBLE PRECISION,
    lapse_risk        DOUBLE PRECISION,
    not_before        BIGINT NOT NULL,           -- UTC seconds: the first allowed send instant
    expires_at        BIGINT NOT NULL,           -- not sent by then: too late for this day's offer
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    UNIQUE (customer_id, day)
);
CREATE INDEX outbox_day ON outbox (day);
CREATE INDEX outbox_status ON outbox (status, not_before);
CREATE INDEX outbox_campaign_day ON outbox (campaign, day);

-- Unsubscribes, hard bounces, complaints, STOP replies. channel NULL = every channel.
CREATE TABLE suppressions (
    suppression_id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id    TEXT NOT NULL,
    channel        TEXT,
    address        TEXT,
    reason         TEXT NOT NULL,                -- unsubscribe | hard_bounce | complaint | stop | manual
    source         TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX suppressions_customer ON suppressions (customer_id);

-- One row per `campaigns run` and campaign: the funnel counts that explain the selection.
CREATE TABLE campaign_runs (
    run_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign    TEXT NOT NULL,
    day         TEXT NOT NULL,
    run_at      BIGINT NOT NULL,
    selected    BIGINT NOT NULL,
    held_out    BIGINT NOT NULL,
    inserted    BIGINT NOT NULL,
    funnel      TEXT NOT NULL                    -- JSON
);
