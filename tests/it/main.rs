//! One integration-test binary (faster to link than one per file).
mod bulk;
mod campaigns;
mod cli;
mod csv_injection;
mod daemon;
mod delivery;
mod helpers;
mod http;
mod import;
mod measurement;
mod models;
mod ops;
mod real_data;
mod report;
mod smtp;
mod tools;
