-- The daemon's job ledger: one row per (job, scheduled instant), so a firing runs at most once,
-- also across replicas (the primary key is the claim). Catch-up runs use the instant they
-- were started at. outcome: running | ok | skipped | failed | abandoned.
CREATE TABLE job_runs (
    job           TEXT NOT NULL,
    scheduled_for BIGINT NOT NULL,      -- UTC seconds of the slot
    trigger_kind  TEXT NOT NULL,        -- schedule | catch_up | after_score | once
    runner        TEXT NOT NULL,        -- the replica that claimed it
    day           TEXT NOT NULL,        -- YYYY-MM-DD in the brand's time zone: the day it worked on
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,      -- renewed while running; a stale one means the runner died
    finished_at   BIGINT,
    outcome       TEXT NOT NULL,
    error         TEXT,                 -- the error chain of a failed run
    stats         TEXT,                 -- JSON: what the run did
    PRIMARY KEY (job, scheduled_for)
);
CREATE INDEX job_runs_job_finished ON job_runs (job, finished_at);
CREATE INDEX job_runs_outcome ON job_runs (outcome, heartbeat_at);

-- Named leases: 'scheduler' is held by the replica that runs scheduled jobs (the leader).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
