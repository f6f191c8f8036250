//! One integration-test binary (faster to link than one per file).
mod helpers;
mod import;
mod cli;
mod real_data;
mod models;
mod campaigns;
mod delivery;
mod http;
mod smtp;
mod daemon;
mod measurement;
mod report;
mod bulk;
mod ops;
mod csv_injection;
