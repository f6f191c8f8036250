use std::process::ExitCode;

use clap::Parser;
use retentiond::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    retentiond::telemetry::init(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}
