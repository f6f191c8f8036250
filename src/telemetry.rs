//! Logging: tracing to stderr, filtered by `--log` or `RUST_LOG`. Every line passes through
//! [`crate::redact::redact`] on its way out, so a known secret never reaches the log.

use std::io::Write;

use tracing_subscriber::EnvFilter;

pub fn init(filter: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| filter.to_string());
    let filter = EnvFilter::new(quiet_scheduler(&filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_target(false)
        .try_init();
}

/// stderr, with known secrets redacted. The fmt layer writes each event with one `write_all`,
/// so a secret is never split across two writes.
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(crate::redact::redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The scheduler crate logs "Uninited" and "Job creator created" at INFO once per job at start:
/// noise for an operator. It is kept at `warn` unless the filter names it.
fn quiet_scheduler(filter: &str) -> String {
    if filter.contains("tokio_cron_scheduler") {
        filter.to_string()
    } else {
        format!("{filter},tokio_cron_scheduler=warn")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_scheduler_crate_is_quiet_unless_named() {
        assert_eq!(
            super::quiet_scheduler("info"),
            "info,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            super::quiet_scheduler("tokio_cron_scheduler=debug"),
            "tokio_cron_scheduler=debug"
        );
    }
}
