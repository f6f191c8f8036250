-- Model monitoring: each scoring day's feature drift against the champion's training data, and
-- each matured scoring day's realized metrics beside what the model promised.
CREATE TABLE feature_drift (
    as_of_date       TEXT NOT NULL,
    feature          TEXT NOT NULL,
    model_version_id BIGINT NOT NULL,
    reference_cutoff BIGINT NOT NULL,     -- the training snapshot the reference deciles describe
    psi              DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (as_of_date, feature)
);

CREATE TABLE score_evaluations (
    as_of_date               TEXT PRIMARY KEY,
    model_version_id         BIGINT NOT NULL,
    evaluated_at             BIGINT NOT NULL,
    customers                BIGINT NOT NULL,
    auc                      DOUBLE PRECISION,
    brier                    DOUBLE PRECISION,
    window_coverage          DOUBLE PRECISION,
    hit_at_3                 DOUBLE PRECISION,
    promised_auc             DOUBLE PRECISION,
    promised_window_coverage DOUBLE PRECISION,
    promised_hit_at_3        DOUBLE PRECISION,
    detail                   TEXT NOT NULL     -- JSON: the whole evaluation, calibration included
);
