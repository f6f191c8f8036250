//! retentiond: a retention daemon for direct-to-consumer brands.
//!
//! The modules follow the pipeline: `ingest` (raw CSV → tables) → features → models →
//! scoring → selection → messages → delivery, with `config`, `db`, scheduler and http beside
//! it. Later stages arrive with their issues; see README.

pub mod bulk;
pub mod campaigns;
pub mod cli;
pub mod config;
pub mod csv_safe;
pub mod daemon;
pub mod datasets;
pub mod db;
pub mod delivery;
pub mod demo;
pub mod features;
pub mod generate;
pub mod http;
pub mod ingest;
pub mod measurement;
pub mod messages;
pub mod models;
pub mod monitoring;
pub mod outbox;
pub mod preview;
pub mod redact;
pub mod report;
pub mod scan;
pub mod scheduler;
pub mod scoring;
pub mod secrets;
pub mod selection;
pub mod simulate;
pub mod suppressions;
pub mod telemetry;
pub mod unsubscribe;
