-- The brand's raw relational data, as imported from CSV.
-- Timestamps are UTC Unix seconds (BIGINT) on both backends so one SQL text and one set of
-- binds serves SQLite and PostgreSQL alike. Money is DOUBLE PRECISION: it feeds statistics,
-- not a ledger.
CREATE TABLE customers (
    customer_id     TEXT PRIMARY KEY NOT NULL,
    email           TEXT,
    phone           TEXT,
    first_name      TEXT,
    country         TEXT,
    timezone        TEXT,
    email_opt_in    BOOLEAN NOT NULL DEFAULT FALSE,
    sms_opt_in      BOOLEAN NOT NULL DEFAULT FALSE,
    whatsapp_opt_in BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT
);

CREATE TABLE products (
    product_id TEXT PRIMARY KEY NOT NULL,
    category   TEXT NOT NULL,
    name       TEXT,
    price      DOUBLE PRECISION,
    in_stock   BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE orders (
    order_id        TEXT PRIMARY KEY NOT NULL,
    customer_id     TEXT NOT NULL,
    ordered_at      BIGINT NOT NULL,
    total_amount    DOUBLE PRECISION,
    currency        TEXT,
    status          TEXT NOT NULL DEFAULT 'completed',
    discount_amount DOUBLE PRECISION
);
CREATE INDEX orders_customer_time ON orders (customer_id, ordered_at);
CREATE INDEX orders_time ON orders (ordered_at);

CREATE TABLE order_items (
    order_id   TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity   BIGINT NOT NULL,
    unit_price DOUBLE PRECISION,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE sessions (
    session_id  TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    source      TEXT,
    device      TEXT
);
CREATE INDEX sessions_customer_time ON sessions (customer_id, started_at);

-- event_key is the file's event_id when given, otherwise a digest of the row, so a re-import
-- of the same export is a no-op.
CREATE TABLE events (
    event_key   TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    product_id  TEXT,
    session_id  TEXT
);
CREATE INDEX events_customer_time ON events (customer_id, occurred_at);

CREATE TABLE imports (
    import_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT NOT NULL,
    source       TEXT NOT NULL,
    status       TEXT NOT NULL,          -- committed | rejected
    skip_invalid BOOLEAN NOT NULL,
    rows_read    BIGINT NOT NULL,
    rows_written BIGINT NOT NULL,
    rows_rejected BIGINT NOT NULL,
    error_count  BIGINT NOT NULL,
    details      TEXT NOT NULL           -- JSON: per-file counts
);
