//! Command-line interface: parsing (clap) and one function per command.
//!
//! Exit codes: 0 ok, 1 failure, 2 bad usage or configuration (in every command: a config
//! problem that surfaces as an error, such as a missing secret or an unknown campaign, is
//! recognised by its type in [`run`]). Logs go to stderr, results to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::campaigns::CampaignSet;
use crate::config::{ConfigError, DATABASE_URL_ENV, DEFAULT_CONFIG_PATH, Settings};
use crate::db::Db;
use crate::generate::{GenerateParams, generate};
use crate::ingest::{ImportError, ImportOptions, import_dir};
use crate::selection::offer::Secrets;

#[derive(Debug, Parser)]
#[command(
    name = "retentiond",
    version,
    about = "Predicts which customers will return, when, and what they will buy next; reaches out before they lapse."
)]
pub struct Cli {
    /// Main configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH, value_name = "FILE")]
    pub config: PathBuf,
    /// Database URL (sqlite://PATH or postgres://…); overrides `database.url` in the config.
    #[arg(long, global = true, env = DATABASE_URL_ENV, value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Log filter for stderr, e.g. `info` or `retentiond=debug` (also RUST_LOG). Default: `info`
    /// for the long-running `run`, `serve` and `dispatch`; `warn` for one-shot commands, which
    /// print their own lines to stdout.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import the brand's CSV exports from a folder (orders.csv required; see README).
    Import {
        /// Folder holding orders.csv and optionally customers.csv, products.csv,
        /// order_items.csv, sessions.csv, events.csv.
        dir: PathBuf,
        /// Import the valid rows and write rejected ones, with reasons, to a `rejected/` folder
        /// beside the report (default: any problem imports nothing).
        #[arg(long)]
        skip_invalid: bool,
        /// Folder for the import report (default: `import.report_dir` from the config).
        #[arg(long, value_name = "DIR")]
        report_dir: Option<PathBuf>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Write a synthetic Ayurveda wellness brand (the full import contract) to a folder.
    Generate {
        /// Number of customers.
        #[arg(long, default_value_t = 10_000)]
        customers: u64,
        /// Random seed; the output is identical for the same seed, end date and size.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output folder (created if needed).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Last day of history (exclusive), YYYY-MM-DD. Default: today (UTC).
        #[arg(long, value_name = "DATE")]
        end: Option<chrono::NaiveDate>,
        /// Years of history.
        #[arg(long, default_value_t = 3)]
        years: u32,
    },
    /// Apply pending database migrations (also done automatically by every command).
    Migrate,
    /// Validate the configuration and report every problem at once.
    CheckConfig,
    /// Print the built-in defaults of every configuration key as TOML.
    DefaultConfig,
    /// Convert a public reference dataset (CDNOW, Complete Journey) to the import contract.
    ConvertDataset {
        #[arg(value_enum)]
        dataset: crate::datasets::Dataset,
        /// The dataset's folder (e.g. ../shared/data/cdnow).
        src: PathBuf,
        /// Output folder for the contract CSV files.
        out: PathBuf,
    },
    /// Train with the backtest protocol on data before DATE and evaluate on [DATE, DATE+H):
    /// the three predictions beside their baselines.
    Backtest {
        /// The as-of day A (YYYY-MM-DD, brand time zone): history before it, outcomes after.
        #[arg(long, value_name = "DATE")]
        as_of: chrono::NaiveDate,
        /// Horizon H in days (default: `model.horizon_days`).
        #[arg(long, value_name = "H")]
        horizon_days: Option<u32>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train on all data as of today, evaluate on the latest complete horizon, store the models
    /// in the registry and promote them unless worse than the champion.
    Train {
        /// Train as of this day instead of today (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        as_of: Option<chrono::NaiveDate>,
        /// Print the evaluation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the model versions in the registry, their metrics, and which is champion.
    Models {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Score every customer with the champion into the `scores` table (one scoring per day;
    /// re-running replaces it).
    Score {
        /// Score as of the start of this day (YYYY-MM-DD); default today.
        #[arg(long, value_name = "DATE")]
        as_of: Option<chrono::NaiveDate>,
    },
    /// Campaigns: list them, dry-run the selection, or write it to the outbox.
    Campaigns {
        #[command(subcommand)]
        action: CampaignsAction,
    },
    /// Send queued outbox messages through the configured providers (retries, leases, rate
    /// limits); runs until SIGTERM/SIGINT, or with --once drains what is due and exits.
    Dispatch {
        /// Drain what is due now and exit.
        #[arg(long)]
        once: bool,
    },
    /// The daemon: scheduled retraining, scoring, campaigns and housekeeping (on the leader
    /// replica), continuous dispatch and the HTTP endpoints, until SIGTERM/SIGINT. SIGHUP
    /// reloads the campaign files. Catches up at start on whatever is missing.
    Run {
        /// Run whatever is due now (catch-up), dispatch what can be sent, and exit: for hosts
        /// without a long-running process, CI and tests.
        #[arg(long)]
        once: bool,
    },
    /// The suppression list: list, add, remove, import another tool's list, export.
    Suppressions {
        #[command(subcommand)]
        action: crate::suppressions::Action,
    },
    /// The champion model, every job's last and next run, the queue by status, suppressions.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the retention report: one self-contained HTML page with uplift (treated versus
    /// holdout, 95% intervals), the campaign funnel, model metrics over time, calibration,
    /// gain, window coverage, category hit rates and drift. Attributes conversions and checks
    /// matured scores first. The daemon serves the same page at `GET /`.
    Report {
        /// Output file.
        #[arg(long, default_value = "data/report.html", value_name = "FILE.html")]
        out: PathBuf,
        /// First day of outreach to measure (YYYY-MM-DD); default `measurement.report_days`
        /// before --to.
        #[arg(long, value_name = "DATE")]
        from: Option<chrono::NaiveDate>,
        /// Last day of outreach to measure; default today (brand time zone).
        #[arg(long, value_name = "DATE")]
        to: Option<chrono::NaiveDate>,
    },
    /// Serve the HTTP endpoints (health, metrics, one-click unsubscribe, provider webhooks) on
    /// `http.bind` and dispatch queued messages, until SIGTERM/SIGINT.
    Serve,
    /// The quick-start job: generate a synthetic brand, import it into the configured database
    /// (the embedded SQLite default unless told otherwise), rehearse the daemon's cycle two
    /// weeks back (train, score, campaigns) with simulated sends and responses of a known
    /// effect, then run today's cycle (score, campaigns, dispatch to the local file sink) and
    /// write the report, whose uplift is labelled as simulated.
    Demo {
        /// Number of customers to generate.
        #[arg(long, default_value_t = 20_000)]
        customers: u64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where the generated CSV files go.
        #[arg(long, default_value = "data/demo/brand", value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CampaignsAction {
    /// List the campaign files with their state, priority, channels and rule.
    List,
    /// Dry run: who would get what and why, with counts at every filter step. Changes nothing.
    Plan {
        #[command(flatten)]
        sel: SelectionArgs,
        /// Write every selected and held-out customer to this CSV file.
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
        /// Customers shown per campaign.
        #[arg(long, default_value_t = 5)]
        sample: usize,
        /// Print the whole plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the selection to the outbox (one row per campaign, customer and day; re-running
    /// the same day adds nothing).
    Run {
        #[command(flatten)]
        sel: SelectionArgs,
    },
    /// One message of a campaign, rendered as `run` renders it: sent as a test to a seed
    /// address through the configured provider (subject/SMS prefixed "[TEST] ", tagged test,
    /// never written to the outbox or counted), and/or its email written as HTML.
    Preview {
        #[arg(long, value_name = "NAME")]
        campaign: String,
        /// Seed address: an email address (email) or a phone number (SMS, or --channel whatsapp).
        #[arg(long, value_name = "ADDRESS|PHONE")]
        to: Option<String>,
        /// Channel for a phone number: sms (default) or whatsapp.
        #[arg(long, value_parser = crate::suppressions::parse_channel, value_name = "CHANNEL")]
        channel: Option<crate::campaigns::Channel>,
        /// Render for this customer (default: a sample customer).
        #[arg(long, value_name = "ID")]
        customer: Option<String>,
        /// Write the rendered email's HTML to this file (no send).
        #[arg(long, value_name = "FILE.html")]
        html: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct SelectionArgs {
    /// Only this campaign.
    #[arg(long, value_name = "NAME")]
    pub campaign: Option<String>,
    /// Use the scores of this day (YYYY-MM-DD); default today in the brand's time zone.
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<chrono::NaiveDate>,
    /// Decide send hours as if the run happened at this instant (RFC 3339), e.g. to rehearse a
    /// past day; default now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

impl Cli {
    /// The log filter: `--log` as given, else the command's default.
    pub fn log_filter(&self) -> String {
        if let Some(f) = &self.log {
            return f.clone();
        }
        let long_running = matches!(
            self.command,
            Command::Serve | Command::Run { once: false } | Command::Dispatch { once: false }
        );
        (if long_running { "info" } else { "warn" }).to_string()
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::DefaultConfig = cli.command {
        print!("{}", Settings::default_toml());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::load(&cli.config, cli.database.as_deref()) {
        Ok(s) => s,
        Err(e) => return config_failure(&e),
    };
    let result = match cli.command {
        Command::CheckConfig => return check_config(&settings, &cli.config).await,
        Command::Campaigns { action } => campaigns(&settings, &cli.config, action).await,
        Command::Dispatch { once } => dispatch(&settings, &cli.config, once).await,
        Command::Serve => serve(&settings, &cli.config).await,
        Command::Run { once } => crate::daemon::run(&settings, &cli.config, once).await,
        Command::Status { json } => crate::daemon::status(&settings, json).await,
        Command::Suppressions { action } => suppressions(&settings, action).await,
        Command::Report { out, from, to } => report(&settings, &out, from, to).await,
        Command::Migrate => migrate(&settings).await,
        Command::Import {
            dir,
            skip_invalid,
            report_dir,
            quiet,
        } => import(&settings, dir, skip_invalid, report_dir, quiet).await,
        Command::Generate {
            customers,
            seed,
            out,
            end,
            years,
        } => gen_brand(customers, seed, &out, end, years).map(|_| ExitCode::SUCCESS),
        Command::Demo {
            customers,
            seed,
            out,
        } => demo(&settings, &cli.config, customers, seed, out).await,
        Command::DefaultConfig => unreachable!("handled above"),
        Command::Backtest {
            as_of,
            horizon_days,
            json,
        } => backtest(&settings, as_of, horizon_days, json).await,
        Command::Train { as_of, json } => train(&settings, as_of, json).await,
        Command::Models { json } => models(&settings, json).await,
        Command::Score { as_of } => score(&settings, as_of).await,
        Command::ConvertDataset { dataset, src, out } => crate::datasets::convert(
            dataset, &src, &out,
        )
        .map(|s| {
            println!(
                "converted {dataset:?}: {} customers, {} orders, {} order items, {} products -> {}",
                s.customers,
                s.orders,
                s.order_items,
                s.products,
                out.display()
            );
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_config_problem(&e) => {
            match e.chain().find_map(|c| c.downcast_ref::<ConfigError>()) {
                Some(c) => eprint!("{c}"),
                None => eprintln!("error: {}", crate::redact::redact(&format!("{e:#}"))),
            }
            ExitCode::from(2)
        }
        // Printed once, as the cause chain on one line: no log line repeating it, and no
        // backtrace (anyhow's `Debug` adds one when RUST_BACKTRACE is set).
        Err(e) => {
            eprintln!("error: {}", crate::redact::redact(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

/// Whether a command's error is a configuration problem (exit 2, like `check-config`): invalid
/// settings, a missing or weak secret, or a campaign named on the command line or a category
/// named in a campaign file that does not exist.
fn is_config_problem(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<ConfigError>()
            || c.is::<crate::selection::offer::SecretError>()
            || c.is::<crate::selection::run::PlanError>()
    })
}

/// `check-config`: the settings (already loaded), the campaign files, the providers' credentials
/// and every secret the config names, all problems at once. What `run` or `serve` would refuse
/// is an error (exit 2); a weak secret they accept (a short provider key) is a warning. When the
/// database is reachable, the categories and customer attributes the campaigns name are checked
/// against the imported data (see [`crate::campaigns::data_check`]).
async fn check_config(settings: &Settings, config: &std::path::Path) -> ExitCode {
    let file = config.display().to_string();
    let mut issues = Vec::new();
    let set = match crate::selection::preflight::load(settings, &file) {
        Ok(set) => Some(set),
        Err(e) => {
            issues.extend(e.issues);
            None
        }
    };
    if let Err(e) = settings.providers(&file) {
        issues.extend(e.issues);
    }
    let needs_code = set
        .as_ref()
        .is_some_and(|s| s.campaigns.iter().any(|c| c.needs_code_secret()));
    let secrets = crate::secrets::check(settings, &file, needs_code, &|k| std::env::var(k).ok());
    issues.extend(secrets.errors);
    let mut warnings = secrets.warnings;
    if let Some(set) = &set {
        let (errors, more) = check_campaigns_against_data(settings, set).await;
        issues.extend(errors);
        warnings.extend(more);
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    for w in set
        .as_ref()
        .map(|s| crate::selection::preflight::warnings(s, settings))
        .unwrap_or_default()
    {
        eprintln!("warning: {w}");
    }
    match set {
        Some(set) if issues.is_empty() => {
            let warned = if warnings.is_empty() {
                String::new()
            } else {
                format!("; {} warning(s) above", warnings.len())
            };
            println!(
                "configuration OK: {} and {} campaign(s) in {}{warned}",
                config.display(),
                set.campaigns.len(),
                settings.campaigns.dir.display()
            );
            ExitCode::SUCCESS
        }
        _ => config_failure(&ConfigError { issues }),
    }
}

/// Rows as left-aligned columns, each as wide as its widest cell (counted in characters, so
/// `≥` is one), two spaces apart; no trailing spaces.
fn text_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut width = [0usize; N];
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.extend(std::iter::repeat_n(
                    ' ',
                    width[i] - cell.chars().count() + 2,
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `Some(exit 2)` after printing every missing or weak secret and provider credential at once
/// (as `check-config` does) when the secrets `secrets` holds are not enough to start.
pub(crate) fn refuse_without_secrets(
    settings: &Settings,
    config: &std::path::Path,
    secrets: &Secrets,
    needs_code: bool,
) -> Option<ExitCode> {
    let e = secrets.check(&settings.campaigns, needs_code).err()?;
    let file = config.display().to_string();
    let mut issues =
        crate::secrets::check(settings, &file, needs_code, &|k| std::env::var(k).ok()).errors;
    if let Err(p) = settings.providers(&file) {
        issues.extend(p.issues);
    }
    if issues.is_empty() {
        eprintln!("error: {e}");
        return Some(ExitCode::from(2));
    }
    Some(config_failure(&ConfigError { issues }))
}

/// `check-config`'s campaign checks beyond the files: an empty folder and disabled campaigns
/// (warnings), then categories and attributes against the database when it holds data (one
/// line on stdout says whether it was checked).
async fn check_campaigns_against_data(
    settings: &Settings,
    set: &CampaignSet,
) -> (
    Vec<crate::config::ConfigIssue>,
    Vec<crate::config::ConfigIssue>,
) {
    use crate::campaigns::data_check::{self, Probe};
    use crate::config::ConfigIssue;
    let dir = settings.campaigns.dir.display().to_string();
    let mut warnings = Vec::new();
    if set.campaigns.is_empty() {
        let why = if settings.campaigns.dir.is_dir() {
            "has no campaign files (*.toml)"
        } else {
            "does not exist"
        };
        warnings.push(ConfigIssue {
            file: dir.clone(),
            key: "campaigns.dir".into(),
            message: format!("the campaigns folder {why}: no campaign will select anyone"),
            fix: "point campaigns.dir at the folder of campaign files, or add one (see the README's Campaigns section)".into(),
        });
    }
    for c in set.campaigns.iter().filter(|c| !c.enabled) {
        warnings.push(ConfigIssue {
            file: c.file.display().to_string(),
            key: "enabled".into(),
            message: format!("campaign {:?} is disabled: it selects nobody", c.name),
            fix: "set `enabled = true` to run it".into(),
        });
    }
    if set.campaigns.is_empty() {
        return (Vec::new(), warnings);
    }
    let attributes = set
        .campaigns
        .iter()
        .any(|c| !c.audience.attributes.is_empty());
    match data_check::probe(&settings.database, attributes).await {
        Probe::Skipped(why) => {
            println!(
                "database: {why}: campaign categories and attributes not checked against imported data"
            );
            (Vec::new(), warnings)
        }
        Probe::Data(known) => {
            println!(
                "database: campaign categories and attributes checked against {} ({} product categories, {} customer attribute(s))",
                crate::config::redact_url(&settings.database.url),
                known.categories.len(),
                known.attributes.len()
            );
            let (errors, more) = data_check::check(set, &known);
            warnings.extend(more);
            (errors, warnings)
        }
    }
}

pub(crate) fn config_failure(e: &ConfigError) -> ExitCode {
    eprint!("{e}");
    ExitCode::from(2)
}

pub(crate) async fn connect(settings: &Settings) -> anyhow::Result<Db> {
    match Db::connect_and_migrate(&settings.database).await {
        Ok(db) => Ok(db),
        // A fresh PostgreSQL server has no database of the product's name yet: say how to make one.
        Err(e)
            if format!("{e:#}").contains("does not exist")
                && settings.database.url.starts_with("postgres") =>
        {
            let name = settings
                .database
                .url
                .rsplit('/')
                .next()
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("");
            Err(anyhow::Error::new(e).context(format!("Failed to open the database: create it first, e.g. `createdb {name}` (or `CREATE DATABASE {name}` in psql)")))
        }
        Err(e) => Err(anyhow::Error::new(e).context("Failed to open the database")),
    }
}

async fn report(
    settings: &Settings,
    out: &std::path::Path,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> anyhow::Result<ExitCode> {
    let set = match CampaignSet::load(&settings.campaigns.dir) {
        Ok(s) => s,
        Err(e) => return Ok(config_failure(&e)),
    };
    let db = connect(settings).await?;
    let r = crate::report::write(&db, settings, &set, out, from, to).await;
    db.close().await;
    let r = r?;
    println!("{r}");
    Ok(ExitCode::SUCCESS)
}

async fn suppressions(
    settings: &Settings,
    action: crate::suppressions::Action,
) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let r = crate::suppressions::run_cli(&db, action).await;
    db.close().await;
    r
}

async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    println!("migrations applied ({:?})", db.backend());
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

fn import_options(
    settings: &Settings,
    dir: PathBuf,
    skip_invalid: bool,
    report_dir: Option<PathBuf>,
    quiet: bool,
) -> ImportOptions {
    ImportOptions {
        dir,
        skip_invalid,
        max_errors: settings.import.max_errors,
        batch_rows: settings.import.batch_rows,
        report_dir: report_dir.unwrap_or_else(|| settings.import.report_dir.clone()),
        tz: settings.timezone(),
        currency: settings.brand.currency.clone(),
        progress: !quiet,
        follow_symlinks: settings.import.follow_symlinks,
        max_future_days: settings.import.max_future_days,
        country: settings.brand.country.clone(),
    }
}

pub(crate) async fn import(
    settings: &Settings,
    dir: PathBuf,
    skip_invalid: bool,
    report_dir: Option<PathBuf>,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let opts = import_options(settings, dir, skip_invalid, report_dir, quiet);
    let result = import_dir(&db, &opts).await;
    db.close().await;
    match result {
        Ok(report) => {
            print!("{}", report.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Rejected(report)) => {
            print!("{}", report.summary());
            eprintln!(
                "error: import rejected: {} problem(s); nothing was imported (use --skip-invalid to import the valid rows)",
                report.error_count
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn gen_brand(
    customers: u64,
    seed: u64,
    out: &std::path::Path,
    end: Option<chrono::NaiveDate>,
    years: u32,
) -> anyhow::Result<()> {
    let end = end.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let mut params = GenerateParams::new(customers, seed, end);
    params.years = years;
    std::fs::create_dir_all(out).with_context(|| format!("Failed to create {}", out.display()))?;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(customers),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let started = std::time::Instant::now();
    let summary = generate(&params, out, &|done| bar.set_position(done))
        .context("Failed to generate the synthetic brand")?;
    bar.finish_and_clear();
    println!(
        "generated {} customers, {} products, {} orders, {} order items, {} sessions, {} events in {:.1} s (history to {end}, seed {seed}) -> {}",
        summary.customers,
        summary.products,
        summary.orders,
        summary.order_items,
        summary.sessions,
        summary.events,
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

async fn demo(
    settings: &Settings,
    config: &std::path::Path,
    customers: u64,
    seed: u64,
    out: PathBuf,
) -> anyhow::Result<ExitCode> {
    let opts = crate::demo::DemoOptions::new(customers, seed, out);
    Ok(crate::demo::run(
        settings,
        config,
        &opts,
        Secrets::from_env(&settings.campaigns),
    )
    .await?
    .code)
}

/// The demo runs on a fresh machine without secrets in the environment: it uses random ones
/// for this process only and says so (its messages still queued at the end are cancelled:
/// see `crate::demo`).
pub(crate) fn demo_secrets(secrets: &mut Secrets, c: &crate::config::CampaignSettings) {
    use rand::RngCore;
    let fill = |slot: &mut Option<Vec<u8>>, var: &str| {
        if slot.is_none() {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            *slot = Some(key);
            println!("   note: {var} is not set; this demo signs with a throw-away secret");
        }
    };
    fill(&mut secrets.unsubscribe, &c.unsubscribe_secret_env);
    fill(&mut secrets.code, &c.code_secret_env);
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

type SharedDispatcher = std::sync::Arc<crate::delivery::dispatcher::Dispatcher>;

/// The dispatcher from config: providers (a missing credential is a config error here, at
/// start), and channel fallback when the campaigns and the unsubscribe secret are available.
pub(crate) fn build_dispatcher(
    settings: &Settings,
    config: &std::path::Path,
    db: &Db,
    secrets: Secrets,
    campaigns: Option<crate::campaigns::SharedCampaigns>,
) -> Result<SharedDispatcher, ConfigError> {
    crate::delivery::providers::install_crypto_provider();
    let providers = settings.providers(&config.display().to_string())?;
    // Falling back to another channel re-renders the message: it needs the campaigns and the
    // unsubscribe secret; without them a permanent failure is final.
    let campaigns = match campaigns {
        Some(c) => c,
        None => crate::campaigns::SharedCampaigns::new(crate::selection::preflight::load(
            settings,
            &config.display().to_string(),
        )?),
    };
    let fallback = match secrets.check(&settings.campaigns, false) {
        Ok(()) => Some(crate::delivery::dispatcher::Fallback {
            settings: settings.clone(),
            campaigns,
            secrets,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "channel fallback disabled");
            None
        }
    };
    Ok(std::sync::Arc::new(
        crate::delivery::dispatcher::Dispatcher::new(
            db.clone(),
            std::sync::Arc::new(providers),
            settings.dispatch.clone(),
            fallback,
        ),
    ))
}

/// The HTTP server's state: webhook secrets from the environment, metrics recorder, the
/// operator endpoints' token (from [`crate::secrets::http_auth_token`], checked at start).
pub(crate) fn http_state(
    settings: &Settings,
    db: &Db,
    secrets: &Secrets,
    campaigns: Option<crate::campaigns::SharedCampaigns>,
    auth_token: Option<crate::http::AuthToken>,
) -> crate::http::AppState {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut webhooks = settings.http.webhooks.resolve(&env);
    // Receivers of our own webhook sign their events with the secret we sign ours with.
    if webhooks.retentiond_secret.is_none() {
        webhooks.retentiond_secret = env(&settings.delivery.webhook.secret_env);
    }
    crate::http::AppState {
        db: db.clone(),
        unsubscribe_secret: secrets.unsubscribe.clone().unwrap_or_default(),
        webhooks,
        public_base_url: settings.campaigns.public_base_url.clone(),
        metrics: crate::http::install_metrics_recorder(),
        brand_name: settings.brand.name.clone(),
        report: campaigns.map(|campaigns| crate::http::ReportContext {
            settings: settings.clone(),
            campaigns,
        }),
        auth_token,
    }
}

async fn serve(settings: &Settings, config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::from_env(&settings.campaigns);
    if let Some(code) = refuse_without_secrets(settings, config, &secrets, false) {
        return Ok(code);
    }
    let auth_token =
        match crate::secrets::http_auth_token(settings, &config.display().to_string(), &|k| {
            std::env::var(k).ok()
        }) {
            Ok(t) => t,
            Err(e) => return Ok(config_failure(&e)),
        };
    let db = connect(settings).await?;
    let d = match build_dispatcher(settings, config, &db, secrets.clone(), None) {
        Ok(d) => d,
        Err(e) => return Ok(config_failure(&e)),
    };
    let campaigns = crate::selection::preflight::load(settings, &config.display().to_string())
        .ok()
        .map(crate::campaigns::SharedCampaigns::new);
    let state = http_state(settings, &db, &secrets, campaigns, auth_token);
    let listener = tokio::net::TcpListener::bind(&settings.http.bind)
        .await
        .with_context(|| format!("Failed to bind {}", settings.http.bind))?;
    tracing::info!(addr = %settings.http.bind, worker = d.owner(), "serving HTTP and dispatching");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut http_rx = rx.clone();
    let http = tokio::spawn(crate::http::serve(listener, state, async move {
        let _ = http_rx.wait_for(|stop| *stop).await;
    }));
    let worker = tokio::spawn({
        let d = d.clone();
        async move { d.run(rx).await }
    });
    shutdown_signal().await;
    tracing::info!("shutting down: no new claims, finishing in-flight sends and requests");
    let _ = tx.send(true);
    let limit = std::time::Duration::from_secs(settings.dispatch.shutdown_timeout_seconds);
    let stats = match tokio::time::timeout(limit, worker).await {
        Ok(r) => r??,
        Err(_) => {
            tracing::warn!("shutdown timeout: in-flight claims are left to lease recovery");
            crate::delivery::dispatcher::DispatchStats::default()
        }
    };
    let _ = tokio::time::timeout(limit, http).await;
    db.close().await;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(
    settings: &Settings,
    config: &std::path::Path,
    once: bool,
) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let d = match build_dispatcher(
        settings,
        config,
        &db,
        Secrets::from_env(&settings.campaigns),
        None,
    ) {
        Ok(d) => d,
        Err(e) => return Ok(config_failure(&e)),
    };
    tracing::info!(worker = d.owner(), "dispatcher started");
    let stats = if once {
        d.drain().await?
    } else {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn({
            let d = d.clone();
            async move { d.run(rx).await }
        });
        shutdown_signal().await;
        tracing::info!("shutting down: no new claims, finishing in-flight sends");
        let _ = tx.send(true);
        match tokio::time::timeout(
            std::time::Duration::from_secs(settings.dispatch.shutdown_timeout_seconds),
            worker,
        )
        .await
        {
            Ok(r) => r??,
            Err(_) => {
                tracing::warn!("shutdown timeout: in-flight claims are left to lease recovery");
                crate::delivery::dispatcher::DispatchStats::default()
            }
        }
    };
    db.close().await;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

async fn campaigns(
    settings: &Settings,
    config: &std::path::Path,
    action: CampaignsAction,
) -> anyhow::Result<ExitCode> {
    let set = match crate::selection::preflight::load(settings, &config.display().to_string()) {
        Ok(s) => s,
        Err(e) => return Ok(config_failure(&e)),
    };
    let tz = settings.timezone();
    let (sel, write) = match action {
        CampaignsAction::List => {
            if set.campaigns.is_empty() {
                println!("no campaigns in {}", settings.campaigns.dir.display());
            }
            let today = settings.today();
            let mut rows =
                vec![["name", "state", "priority", "channels", "rule", "file"].map(String::from)];
            for c in &set.campaigns {
                let t = &c.trigger;
                rows.push([
                    c.name.clone(),
                    (if c.active_on(today) {
                        "active"
                    } else if c.enabled {
                        "dated"
                    } else {
                        "disabled"
                    })
                    .to_string(),
                    c.priority.to_string(),
                    c.channels
                        .iter()
                        .map(|ch| ch.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    format!(
                        "lead {}d, risk ≥ {}, alive ≥ {}, skip > {}",
                        t.lead_days, t.min_lapse_risk, t.min_p_alive, t.skip_if_p_return_above
                    ),
                    c.file.display().to_string(),
                ]);
            }
            print!("{}", text_table(&rows));
            return Ok(ExitCode::SUCCESS);
        }
        CampaignsAction::Plan {
            sel,
            csv,
            sample,
            json,
        } => (sel, Some((csv, sample, json))),
        CampaignsAction::Run { sel } => (sel, None),
        CampaignsAction::Preview {
            campaign,
            to,
            channel,
            customer,
            html,
        } => {
            return crate::preview::run_cli(
                settings,
                config,
                &set,
                &campaign,
                to.as_deref(),
                channel,
                customer.as_deref(),
                html.as_deref(),
            )
            .await;
        }
    };
    let day = sel.as_of.unwrap_or_else(|| settings.today());
    let now = sel
        .at
        .map_or_else(chrono::Utc::now, |t| t.with_timezone(&chrono::Utc));
    let secrets = Secrets::from_env(&settings.campaigns);
    let db = connect(settings).await?;
    let only = sel.campaign.as_deref();
    let result = match write {
        Some(_) => crate::selection::run::plan(&db, settings, &set, only, day, now, &secrets).await,
        None => crate::selection::run::run(&db, settings, &set, only, day, now, &secrets).await,
    };
    db.close().await;
    let report = result?;
    match write {
        Some((csv, sample, json)) => {
            if let Some(path) = csv {
                report
                    .write_csv(&path)
                    .with_context(|| format!("Failed to write {}", path.display()))?;
                eprintln!("wrote {} rows to {}", report.planned.len(), path.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table(sample, tz));
                println!("dry run: nothing was written");
            }
        }
        None => print!("{}", report.table(3, tz)),
    }
    // A failed campaign was skipped and the others ran (or were planned): say which and why.
    for f in &report.failed {
        eprintln!(
            "error: campaign {} failed and was skipped: {}",
            f.campaign, f.reason
        );
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn backtest(
    settings: &Settings,
    as_of: chrono::NaiveDate,
    horizon: Option<u32>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut m = settings.model.clone();
    if let Some(h) = horizon {
        if !(1..=730).contains(&h) {
            eprintln!("error: --horizon-days {h} is out of range: use 1..=730");
            return Ok(ExitCode::from(2));
        }
        m.horizon_days = h;
    }
    let db = connect(settings).await?;
    let (mut report, _) =
        crate::models::evaluate::backtest(&db, &m, settings.day_start(as_of)).await?;
    report.localize(settings.timezone());
    db.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

async fn train(
    settings: &Settings,
    as_of: Option<chrono::NaiveDate>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let date = as_of.unwrap_or_else(|| settings.today());
    let db = connect(settings).await?;
    let (outcome, report) = crate::models::training::train(
        &db,
        &settings.model,
        settings.timezone(),
        settings.day_start(date),
    )
    .await?;
    db.close().await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "outcome": outcome, "evaluation": report })
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", report.table());
    match outcome {
        crate::models::training::TrainOutcome::Promoted {
            model_version_id,
            reason,
        } => {
            println!("\nmodel version {model_version_id} is the champion ({reason})")
        }
        crate::models::training::TrainOutcome::KeptChampion {
            model_version_id,
            champion_id,
            reason,
        } => {
            println!(
                "\nmodel version {model_version_id} stored; champion {champion_id} kept: {reason}"
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn models(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let db = connect(settings).await?;
    let versions = crate::models::registry::list(&db).await?;
    db.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(ExitCode::SUCCESS);
    }
    if versions.is_empty() {
        println!("no models yet: run `retentiond train`");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>4}  {:<9} {:<6} {:<10} {:<10} {:>7} {:>7} {:>7}  reason",
        "id", "status", "kind", "as of", "evaluated", "AUC", "C-index", "hit@1"
    );
    for v in versions {
        let e = &v.metrics["evaluation"];
        let num = |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |f| format!("{f:.3}"));
        println!(
            "{:>4}  {:<9} {:<6} {:<10} {:<10} {:>7} {:>7} {:>7}  {}",
            v.model_version_id,
            v.status,
            v.kind,
            crate::models::evaluate::local_day(v.as_of, settings.timezone()),
            v.evaluated_as_of
                .map(|t| crate::models::evaluate::local_day(t, settings.timezone()))
                .unwrap_or_default(),
            num(&e["return"]["auc"]),
            num(&e["timing"]["c_index"]),
            num(&e["category"]["hit_at_1"]),
            v.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn score(settings: &Settings, as_of: Option<chrono::NaiveDate>) -> anyhow::Result<ExitCode> {
    let date = as_of.unwrap_or_else(|| settings.today());
    let db = connect(settings).await?;
    let m = &settings.model;
    let s = crate::scoring::score(
        &db,
        settings.day_start(date),
        &date.to_string(),
        m.bot_events_per_day,
        m.category_half_life_days,
        settings.campaigns.best_seller_days,
    )
    .await;
    db.close().await;
    let s = s?;
    println!(
        "scored {} customers as of {} with model version {} ({}) in {:.1} s; mean P(return) {:.3}",
        s.customers, s.as_of_date, s.model_version_id, s.model_kind, s.seconds, s.mean_p_return
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_table_fits_the_widest_cell() {
        let rows = [
            ["name", "rule"].map(String::from),
            ["a-very-long-campaign-name", "risk ≥ 0.5"].map(String::from),
            ["x", "y"].map(String::from),
        ];
        let t = text_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "name                       rule");
        assert_eq!(lines[1], "a-very-long-campaign-name  risk ≥ 0.5");
        assert_eq!(lines[2], "x                          y");
    }

    #[test]
    fn one_shot_commands_log_warnings_only_by_default() {
        let cli = Cli::parse_from(["retentiond", "demo"]);
        assert_eq!(cli.log_filter(), "warn");
        let cli = Cli::parse_from(["retentiond", "run"]);
        assert_eq!(cli.log_filter(), "info");
        let cli = Cli::parse_from(["retentiond", "run", "--once"]);
        assert_eq!(cli.log_filter(), "warn");
        let cli = Cli::parse_from(["retentiond", "--log", "debug", "demo"]);
        assert_eq!(cli.log_filter(), "debug");
    }
}
