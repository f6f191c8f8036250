-- Attribution: each order credited to at most one outbox row (the latest message, or holdout
-- row, whose window contains it). Recomputed from scratch by `attribute`.
CREATE TABLE conversions (
    order_id    TEXT PRIMARY KEY,
    message_id  BIGINT NOT NULL,
    customer_id TEXT NOT NULL,
    campaign    TEXT NOT NULL,
    treated     BIGINT NOT NULL,          -- 1 selected and messaged (intention to treat), 0 held out
    ordered_at  BIGINT NOT NULL,
    revenue     DOUBLE PRECISION NOT NULL
);
CREATE INDEX conversions_message ON conversions (message_id);
