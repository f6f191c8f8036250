-- Models: the registry of fitted model bundles and the daily scores they produce.

-- Feature building reads recent browsing by time window, not by customer.
CREATE INDEX events_time ON events (occurred_at);
CREATE INDEX sessions_time ON sessions (started_at);

-- One row per `retentiond train`: the serialized bundle (gzip JSON) with its feature schema,
-- the metrics of its evaluation and whether it became the champion (at most one is).
CREATE TABLE model_versions (
    model_version_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trained_at       BIGINT NOT NULL,
    as_of            BIGINT NOT NULL,          -- training data ends here (exclusive)
    evaluated_as_of  BIGINT,                   -- start of the evaluation window, if evaluated
    horizon_days     BIGINT NOT NULL,
    kind             TEXT NOT NULL,            -- model | rules (cold-start fallback)
    schema_hash      TEXT NOT NULL,
    metrics          TEXT NOT NULL,            -- JSON
    artifact         BYTEA NOT NULL,            -- gzip(JSON of the bundle)
    status           TEXT NOT NULL,            -- champion | retired | rejected
    reason           TEXT NOT NULL
);
CREATE UNIQUE INDEX model_versions_one_champion ON model_versions (status) WHERE status = 'champion';

-- One scoring per as-of day; re-scoring a day replaces its rows in one transaction.
CREATE TABLE scores (
    as_of_date         TEXT NOT NULL,          -- YYYY-MM-DD in the brand's time zone
    customer_id        TEXT NOT NULL,
    model_version_id   BIGINT NOT NULL,
    model_kind         TEXT NOT NULL,          -- model | rules
    as_of              BIGINT NOT NULL,
    horizon_days       BIGINT NOT NULL,
    p_return           DOUBLE PRECISION NOT NULL,
    p_alive            DOUBLE PRECISION NOT NULL,
    window_lo_days     BIGINT NOT NULL,
    window_median_days BIGINT NOT NULL,
    window_hi_days     BIGINT NOT NULL,
    window_lo_at       BIGINT NOT NULL,
    window_median_at   BIGINT NOT NULL,
    window_hi_at       BIGINT NOT NULL,
    category_1         TEXT,
    category_1_p       DOUBLE PRECISION,
    category_2         TEXT,
    category_2_p       DOUBLE PRECISION,
    category_3         TEXT,
    category_3_p       DOUBLE PRECISION,
    lapse_risk         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (as_of_date, customer_id)
);

CREATE TABLE scoring_runs (
    as_of_date       TEXT PRIMARY KEY NOT NULL,
    model_version_id BIGINT NOT NULL,
    as_of            BIGINT NOT NULL,
    scored_at        BIGINT NOT NULL,
    customers        BIGINT NOT NULL
);
