-- Nothing in the daemon reads sessions or events by customer: features and scoring walk them
-- by time (migration 0005's covering indexes). The (customer_id, time) indexes only cost the
-- import: at 100 k customers building them took 10 of the 58 s of a PostgreSQL load. An
-- analyst who queries browsing per customer can add one.
DROP INDEX events_customer_time;
DROP INDEX sessions_customer_time;
