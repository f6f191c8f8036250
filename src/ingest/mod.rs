//! `retentiond import DIR`: the brand's CSV exports → raw tables, validated, in one transaction.
//!
//! Files are read in contract order (products, customers, orders, order items, sessions,
//! events) so that every reference points at rows already seen. Each row is parsed into typed
//! values; every problem is recorded with file, line, column, value and reason. By default any
//! problem rolls the whole import back; with `--skip-invalid` valid rows are kept and rejected
//! rows are written, with their reasons, under `rejected/` beside the report.
//! Rows are upserted by primary key and only rewritten when a value changed, so re-importing
//! the same export changes nothing and a newer export updates rows in place.
//! Headers are matched after normalization (`Loyalty Tier` is `loyalty_tier`). Columns
//! outside the contract are ignored with a warning, except in `customers.csv`, where they are
//! kept per customer as one JSON object in `customers.attributes`. An invalid optional contact
//! detail (email, phone, time zone) is dropped from its row with a warning, not the row.

pub mod contract;
mod keyset;
pub mod phone;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono_tz::Tz;
use serde::Serialize;

use sqlx::AssertSqlSafe;

use crate::db::{Backend, Db, Tx, Val};
use contract::{
    ATTRIBUTES_COLUMN, FILES, FileSpec, MAX_ATTRIBUTE_CHARS, MAX_ATTRIBUTE_COLUMNS,
    MAX_FIELD_BYTES, NUL_BYTE, ParseContext, Ref, parse_field_in,
};
use keyset::{Dedup, First, HashIds};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub dir: PathBuf,
    /// Keep valid rows and write rejected ones to `rejected/`.
    pub skip_invalid: bool,
    /// Problems reported in full; the rest are counted.
    pub max_errors: usize,
    pub batch_rows: usize,
    /// Parent folder of the per-import report folder.
    pub report_dir: PathBuf,
    pub tz: Tz,
    pub currency: String,
    pub progress: bool,
    /// Read a contract file that is a symbolic link (refused by default).
    pub follow_symlinks: bool,
    /// Timestamps may be at most this many days after the import's start.
    pub max_future_days: u32,
    /// `brand.country` (ISO 3166 alpha-2): national phone numbers of rows without a usable
    /// `country` are read in it.
    pub country: Option<String>,
}

/// One problem in the input.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowError {
    pub file: String,
    /// 1-based line in the file (the header is line 1); 0 for a missing file.
    pub line: u64,
    pub column: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut value: String = self.value.chars().take(80).collect();
        if value.len() < self.value.len() {
            value.push('…');
        }
        write!(
            f,
            "{}:{}: column `{}`, value {:?}: {}",
            self.file, self.line, self.column, value, self.reason
        )
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileStats {
    pub file: String,
    pub rows_read: u64,
    /// Rows that passed validation.
    pub rows_valid: u64,
    /// Rows inserted or changed (unchanged re-imported rows are not rewritten).
    pub rows_written: u64,
    /// Exact repeats of an earlier row in the same file (kept once).
    pub duplicates: u64,
    pub rows_rejected: u64,
    /// Invalid optional values (email, phone, timezone) dropped from rows that were kept.
    pub fields_dropped: u64,
    /// Columns outside the contract, ignored: how many, and the first names (clipped).
    pub unknown_column_count: u64,
    pub unknown_columns: Vec<String>,
    /// Extra columns kept as attributes (their keys, in header order).
    pub attribute_columns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub import_id: Option<i64>,
    pub source: String,
    /// `committed` or `rejected`.
    pub status: String,
    pub skip_invalid: bool,
    pub files: Vec<FileStats>,
    /// Customers created because orders, sessions or events named them.
    pub customers_created: u64,
    /// The first `max_errors` problems.
    pub errors: Vec<RowError>,
    pub error_count: u64,
    /// The first `max_errors` invalid optional values dropped from rows that were kept.
    pub dropped: Vec<RowError>,
    pub dropped_count: u64,
    pub warnings: Vec<String>,
    /// What the import did beyond the contract (extra columns kept as attributes).
    pub notes: Vec<String>,
    pub report_path: Option<PathBuf>,
    pub rejected_dir: Option<PathBuf>,
    pub elapsed_secs: f64,
    /// Status `failed`: the I/O or database error that stopped the import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// SQLite only: the journal the import wrote through, `rollback` when it was the only
    /// connection to the database (see [`RollbackJournal`]), else `wal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite_journal: Option<String>,
}

impl ImportReport {
    pub fn rows_read(&self) -> u64 {
        self.files.iter().map(|f| f.rows_read).sum()
    }
    pub fn rows_written(&self) -> u64 {
        self.files.iter().map(|f| f.rows_written).sum()
    }
    pub fn rows_rejected(&self) -> u64 {
        self.files.iter().map(|f| f.rows_rejected).sum()
    }

    /// Human-readable summary for the CLI.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "import {} from {} ({:.1} s)",
            self.status, self.source, self.elapsed_secs
        );
        let _ = writeln!(
            s,
            "{:<18} {:>12} {:>12} {:>12} {:>10} {:>10}",
            "file", "read", "valid", "written", "dupes", "rejected"
        );
        for f in &self.files {
            let _ = writeln!(
                s,
                "{:<18} {:>12} {:>12} {:>12} {:>10} {:>10}",
                f.file, f.rows_read, f.rows_valid, f.rows_written, f.duplicates, f.rows_rejected
            );
        }
        let rate = self.rows_read() as f64 / self.elapsed_secs.max(1e-9);
        let _ = writeln!(
            s,
            "customers created from orders/sessions/events: {}",
            self.customers_created
        );
        let _ = writeln!(s, "{} rows read, {:.0} rows/s", self.rows_read(), rate);
        for n in &self.notes {
            let _ = writeln!(s, "{n}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        if self.dropped_count > 0 {
            let shown = if self.dropped_count as usize > self.dropped.len() {
                format!(", first {} shown", self.dropped.len())
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "{} invalid optional value(s) dropped, their rows kept without them{shown}:",
                self.dropped_count
            );
            for e in &self.dropped {
                let _ = writeln!(s, "  {e}");
            }
        }
        if self.error_count > 0 {
            let _ = writeln!(
                s,
                "{} problem(s){}:",
                self.error_count,
                if self.error_count as usize > self.errors.len() {
                    format!(", first {} shown", self.errors.len())
                } else {
                    String::new()
                }
            );
            for e in &self.errors {
                let _ = writeln!(s, "  {e}");
            }
        }
        if let Some(p) = &self.report_path {
            let _ = writeln!(s, "report: {}", p.display());
        }
        if let Some(p) = &self.rejected_dir {
            let what = if self.dropped_count > 0 {
                "rejected rows and dropped values"
            } else {
                "rejected rows"
            };
            let _ = writeln!(s, "{what}: {}", p.display());
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import rejected: {} problem(s) found, nothing was imported", .0.error_count)]
    Rejected(Box<ImportReport>),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("database error during import: {0}")]
    Db(#[from] sqlx::Error),
}

// Fixed seeds: digests must be the same on every run (event keys are stored).
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x5eed_0001, 0x5eed_0002, 0x5eed_0003, 0x5eed_0004)
}

fn hash_vals<'v>(state: &ahash::RandomState, vals: impl IntoIterator<Item = &'v Val>) -> u64 {
    let mut h = state.build_hasher();
    for v in vals {
        match v {
            Val::Text(s) => (0u8, s).hash(&mut h),
            Val::Int(i) => (1u8, i).hash(&mut h),
            Val::Real(r) => (2u8, r.map(f64::to_bits)).hash(&mut h),
            Val::Bool(b) => (3u8, b).hash(&mut h),
            Val::Bytes(b) => (4u8, b).hash(&mut h),
        }
    }
    h.finish()
}

/// Characters of an input field that errors, warnings and reports show at most.
const SHOWN_CHARS: usize = 100;
/// Unknown columns named in a file's warning (the rest are counted).
const UNKNOWN_COLUMNS_SHOWN: usize = 10;

/// `s` cut to [`SHOWN_CHARS`] characters, with `…` when cut.
fn clip(s: &str) -> String {
    if s.len() <= SHOWN_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(SHOWN_CHARS).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A stable 128-bit digest (two FNV-1a lanes) for events without an `event_id`.
fn event_digest(vals: &[Val]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for v in vals {
        let text = match v {
            Val::Text(s) => s.clone().unwrap_or_default(),
            Val::Int(i) => i.map(|i| i.to_string()).unwrap_or_default(),
            Val::Real(r) => r.map(|r| r.to_string()).unwrap_or_default(),
            Val::Bool(x) => x.to_string(),
            Val::Bytes(_) => unreachable!("the contract has no binary columns"),
        };
        for byte in text.bytes().chain(std::iter::once(0x1f)) {
            a = (a ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
            b = (b ^ u64::from(byte))
                .wrapping_mul(0x100_0000_01b3)
                .rotate_left(5);
        }
    }
    format!("h:{a:016x}{b:016x}")
}

/// Import-wide state shared by the per-file passes.
struct State<'a> {
    opts: &'a ImportOptions,
    hasher: ahash::RandomState,
    errors: Vec<RowError>,
    error_count: u64,
    dropped: Vec<RowError>,
    dropped_count: u64,
    /// Hashes of ids that are valid in this import, by referenced table.
    known_orders: HashIds,
    known_products: HashIds,
    customers_created: u64,
    rejected_dir: PathBuf,
    rejected_any: bool,
    /// A problem that fails the import even with `--skip-invalid` (a file that cannot be read).
    fatal: bool,
    /// SQL text per (table, batch size), built once.
    sql_cache: SqlCache,
    /// When the import started (Unix seconds): the reference for future timestamps.
    now: i64,
}

impl State<'_> {
    fn error(
        &mut self,
        file: &str,
        line: u64,
        column: &str,
        value: &str,
        reason: impl Into<String>,
    ) {
        self.error_count += 1;
        if self.errors.len() < self.opts.max_errors {
            // Values and header names are the input's own text: never more than a clipped field.
            self.errors.push(RowError {
                file: file.to_string(),
                line,
                column: clip(column),
                value: clip(value),
                reason: reason.into(),
            });
        }
    }

    /// An invalid optional value dropped from a row that is kept: a warning, not a problem.
    fn dropped(&mut self, file: &str, line: u64, column: &str, value: &str, reason: &str) {
        self.dropped_count += 1;
        if self.dropped.len() < self.opts.max_errors {
            self.dropped.push(RowError {
                file: file.to_string(),
                line,
                column: clip(column),
                value: clip(value),
                reason: reason.to_string(),
            });
        }
    }

    /// In strict mode nothing is written once any problem is known: the transaction is
    /// rolled back anyway, and validation goes on to report every problem.
    fn writing(&self) -> bool {
        !self.fatal && (self.opts.skip_invalid || self.error_count == 0)
    }
}

struct PendingRow {
    line: u64,
    vals: Vec<Val>,
    raw: Option<csv::ByteRecord>,
    /// References not satisfied by this import's own rows: (ref, id, column).
    unresolved: Vec<(Ref, String, &'static str)>,
}

/// Imports every contract file found in `opts.dir`.
#[tracing::instrument(skip_all, fields(dir = %opts.dir.display()))]
pub async fn import_dir(db: &Db, opts: &ImportOptions) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let result = import_attempt(db, opts, started, started_at).await;
    if let Err(e @ (ImportError::Io { .. } | ImportError::Db(_))) = &result {
        // An attempt that stopped on an I/O or database error is on record too.
        record_failure(db, opts, started, started_at, e).await;
    }
    result
}

/// The audit row for an import that stopped on an error (best effort: the database may be
/// what failed).
async fn record_failure(
    db: &Db,
    opts: &ImportOptions,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    error: &ImportError,
) {
    let report = ImportReport {
        import_id: None,
        source: opts.dir.display().to_string(),
        status: "failed".into(),
        skip_invalid: opts.skip_invalid,
        files: Vec::new(),
        customers_created: 0,
        errors: Vec::new(),
        error_count: 1,
        dropped: Vec::new(),
        dropped_count: 0,
        warnings: Vec::new(),
        notes: Vec::new(),
        report_path: None,
        rejected_dir: None,
        elapsed_secs: started.elapsed().as_secs_f64(),
        // The error's own text (a path, an OS or driver message), not the input's.
        failure: Some(error.to_string().chars().take(1000).collect()),
        sqlite_journal: None,
    };
    let recorded = async {
        let mut tx = db.begin().await?;
        record_import(&mut tx, &report, started_at.timestamp()).await?;
        tx.commit().await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(error = %e, "could not record the failed import in `imports`");
    }
}

/// Why a contract file will not be read, found from its metadata before it is opened (a FIFO
/// would block the open, a link could point anywhere); `Ok(None)` when there is no such file.
fn open_input(path: &Path, follow_symlinks: bool) -> Result<Option<File>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the file: {e}")),
    };
    let meta = if meta.file_type().is_symlink() {
        if !follow_symlinks {
            return Err(
                "is a symbolic link, not read (set import.follow_symlinks = true to follow links)"
                    .into(),
            );
        }
        std::fs::metadata(path)
            .map_err(|e| format!("is a symbolic link whose target cannot be read: {e}"))?
    } else {
        meta
    };
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_kind(&meta.file_type())
        ));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Should the file be swapped between the check and the open: a FIFO does not block,
        // and a link is not followed unless allowed.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | if follow_symlinks { 0 } else { libc::O_NOFOLLOW });
    }
    let file = options
        .open(path)
        .map_err(|e| format!("cannot open the file: {e}"))?;
    let opened = file
        .metadata()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if !opened.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            file_kind(&opened.file_type())
        ));
    }
    Ok(Some(file))
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

async fn import_attempt(
    db: &Db,
    opts: &ImportOptions,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<ImportReport, ImportError> {
    let stamp = started_at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let report_folder = opts.report_dir.join(format!("import-{stamp}"));
    let mut state = State {
        opts,
        hasher: hasher(),
        errors: Vec::new(),
        error_count: 0,
        dropped: Vec::new(),
        dropped_count: 0,
        known_orders: HashIds::default(),
        known_products: HashIds::default(),
        customers_created: 0,
        rejected_dir: report_folder.join("rejected"),
        rejected_any: false,
        fatal: false,
        sql_cache: HashMap::new(),
        now: started_at.timestamp(),
    };
    let mut warnings = Vec::new();
    let mut files = Vec::new();

    if !opts.dir.is_dir() {
        return Err(ImportError::Io {
            path: opts.dir.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let mut entries: Vec<String> = std::fs::read_dir(&opts.dir)
        .map_err(|source| ImportError::Io {
            path: opts.dir.display().to_string(),
            source,
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    entries.sort();
    for name in &entries {
        if name.ends_with(".csv") && contract::spec(name).is_none() {
            warnings.push(format!(
                "{}: not part of the import contract, ignored",
                clip(name)
            ));
        }
    }
    // Every contract file is checked before the database is touched.
    let mut inputs = Vec::new();
    let mut missing_required = Vec::new();
    for spec in FILES {
        match open_input(&opts.dir.join(spec.file), opts.follow_symlinks) {
            Ok(Some(file)) => inputs.push((spec, file)),
            Ok(None) if spec.required => missing_required.push(spec),
            Ok(None) => {}
            Err(reason) => {
                state.fatal = true;
                state.error(spec.file, 0, "", "", reason);
            }
        }
    }

    let own = import_connection(db).await?;
    let journal = match (db, &own) {
        (Db::Sqlite(_), Some(Db::Sqlite(own_pool))) => {
            db.close_idle().await;
            Some(RollbackJournal::try_switch(own_pool).await)
        }
        _ => None,
    };
    let mut tx = own.as_ref().unwrap_or(db).begin().await?;
    // A required file (orders.csv) is required for a first load only: an update of
    // customers or products alone goes into a database that has its orders already.
    for spec in missing_required {
        if tx
            .fetch_i64(
                &format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM {} LIMIT 1) AS t",
                    spec.table
                ),
                &[],
            )
            .await?
            == 0
        {
            state.fatal = true;
            state.error(spec.file, 0, "", "", format!("required file is missing: the database has no {} yet, so the first import must include it", spec.table));
        }
    }
    if inputs.is_empty() && !state.fatal {
        let names: Vec<&str> = FILES.iter().map(|f| f.file).collect();
        warnings.push(format!(
            "{}: no contract file found (expected one of {}), nothing imported",
            clip(&opts.dir.display().to_string()),
            names.join(", ")
        ));
    }
    if let Some(c) = opts
        .country
        .as_deref()
        .filter(|c| phone::country(c).is_none())
    {
        warnings.push(format!("brand.country {:?} is not an ISO 3166 country code: national phone numbers are read only with a row's own `country`", clip(c)));
    }
    let tuning = SqliteTuning::apply(&mut tx).await;
    let result: Result<(), ImportError> = async {
        for (spec, file) in inputs {
            let path = opts.dir.join(spec.file);
            let stats = import_file(
                &mut tx,
                &mut state,
                tuning.as_ref(),
                spec,
                &path,
                file,
                &mut warnings,
            )
            .await?;
            files.push(stats);
        }
        Ok(())
    }
    .await;
    if let Some(t) = &tuning {
        t.restore(&mut tx).await;
    }
    if let Err(e) = result {
        // Rolled back and closed here, so that the failure can be recorded on `db` next.
        let _ = tx.rollback().await;
        if let (Some(Some(j)), Some(Db::Sqlite(own))) = (&journal, &own) {
            j.restore(own).await;
        }
        if let Some(own) = own {
            own.close().await;
        }
        return Err(e);
    }

    let status_ok = !state.fatal && (opts.skip_invalid || state.error_count == 0);
    let notes: Vec<String> = files
        .iter()
        .filter(|f| !f.attribute_columns.is_empty())
        .map(|f| {
            let n = f.attribute_columns.len();
            format!(
                "{}: {n} extra column{} kept as attributes: {}",
                f.file,
                if n == 1 { "" } else { "s" },
                f.attribute_columns.join(", ")
            )
        })
        .collect();
    let mut report = ImportReport {
        import_id: None,
        source: opts.dir.display().to_string(),
        status: if status_ok { "committed" } else { "rejected" }.into(),
        skip_invalid: opts.skip_invalid,
        files,
        customers_created: state.customers_created,
        errors: std::mem::take(&mut state.errors),
        error_count: state.error_count,
        dropped: std::mem::take(&mut state.dropped),
        dropped_count: state.dropped_count,
        warnings,
        notes,
        report_path: None,
        rejected_dir: state.rejected_any.then(|| state.rejected_dir.clone()),
        elapsed_secs: 0.0,
        failure: None,
        sqlite_journal: journal
            .as_ref()
            .map(|j| if j.is_some() { "rollback" } else { "wal" }.to_string()),
    };
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    for n in &report.notes {
        tracing::info!("{n}");
    }

    if status_ok {
        report.elapsed_secs = started.elapsed().as_secs_f64();
        let id = record_import(&mut tx, &report, started_at.timestamp()).await?;
        report.import_id = Some(id);
        tx.commit().await?;
    } else {
        tx.rollback().await?;
        // Rolled back: what was written before the first problem is gone again.
        for f in &mut report.files {
            f.rows_written = 0;
        }
        report.customers_created = 0;
    }
    if let (Some(Some(j)), Some(Db::Sqlite(own))) = (&journal, &own) {
        j.restore(own).await;
    }
    if status_ok {
        analyze_loaded(own.as_ref().unwrap_or(db), &report).await;
    } else {
        report.elapsed_secs = started.elapsed().as_secs_f64();
        // The failed attempt is still recorded, in its own transaction, for the audit trail.
        let mut tx = db.begin().await?;
        report.import_id = Some(record_import(&mut tx, &report, started_at.timestamp()).await?);
        tx.commit().await?;
    }
    if let Some(own) = own {
        own.close().await;
    }
    report.report_path = write_report(&report_folder, &report);
    if status_ok {
        Ok(report)
    } else {
        Err(ImportError::Rejected(Box::new(report)))
    }
}

/// PostgreSQL plans from table statistics, which a bulk load leaves stale until autovacuum
/// gets round to the table: on a fresh 1 M-customer import, a campaign run's purchase-history
/// query seq-scanned 12.7 M order lines per 500 customers (2.9 s each, 136 ms after ANALYZE).
/// So the tables written are analyzed after the commit (ANALYZE samples: ~1.5 s at 88 M rows).
/// A failure here only costs plan quality, so it is logged, not returned.
async fn analyze_loaded(db: &Db, report: &ImportReport) {
    let Db::Postgres(pool) = db else { return };
    let mut tables: Vec<&str> = report
        .files
        .iter()
        .filter(|f| f.rows_written > 0)
        .filter_map(|f| contract::spec(&f.file).map(|s| s.table))
        .collect();
    if report.customers_created > 0 && !tables.contains(&"customers") {
        tables.push("customers");
    }
    for table in tables {
        let started = Instant::now();
        match sqlx::query(AssertSqlSafe(format!("ANALYZE {}", quote_ident(table))))
            .execute(pool)
            .await
        {
            Ok(_) => tracing::debug!(table, secs = started.elapsed().as_secs_f64(), "analyzed"),
            Err(e) => {
                tracing::warn!(table, error = %e, "ANALYZE after the import failed; query plans may be poor until autovacuum analyzes it")
            }
        }
    }
}

async fn record_import(
    tx: &mut Tx,
    report: &ImportReport,
    started_at: i64,
) -> Result<i64, sqlx::Error> {
    let mut details = serde_json::json!({ "files": report.files, "customers_created": report.customers_created, "fields_dropped": report.dropped_count, "warnings": report.warnings, "notes": report.notes });
    if let Some(failure) = &report.failure {
        details["failure"] = failure.as_str().into();
    }
    let sql = "INSERT INTO imports (started_at, finished_at, source, status, skip_invalid, rows_read, rows_written, rows_rejected, error_count, details) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    let vals = [
        Val::Int(Some(started_at)),
        Val::Int(Some(chrono::Utc::now().timestamp())),
        Val::Text(Some(report.source.clone())),
        Val::Text(Some(report.status.clone())),
        Val::Bool(report.skip_invalid),
        Val::Int(Some(report.rows_read() as i64)),
        Val::Int(Some(report.rows_written() as i64)),
        Val::Int(Some(report.rows_rejected() as i64)),
        Val::Int(Some(report.error_count as i64)),
        Val::Text(Some(details.to_string())),
    ];
    tx.execute(sql, &vals).await?;
    tx.fetch_i64("SELECT MAX(import_id) FROM imports", &[])
        .await
}

fn write_report(folder: &Path, report: &ImportReport) -> Option<PathBuf> {
    let path = folder.join("report.json");
    let result = std::fs::create_dir_all(folder)
        .and_then(|_| std::fs::write(&path, serde_json::to_vec_pretty(report).unwrap_or_default()));
    match result {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "could not write the import report");
            None
        }
    }
}

/// Parsed chunks queued between the parsing thread and the writer.
const CHUNKS_IN_FLIGHT: usize = 4;
/// A chunk is sent once it holds this many rejected rows, even with no batch full yet.
const NOTES_PER_CHUNK: usize = 1024;

/// Reads, validates and upserts one file.
///
/// Parsing and validation run on a thread of their own while this task writes the previous
/// batch: the two used to take turns, and each is about half of the work. The parser sends
/// its findings in order (problems, then the batch they precede), so problems are reported
/// and rejected rows written in the same order as when one loop did both.
async fn import_file(
    tx: &mut Tx,
    state: &mut State<'_>,
    tuning: Option<&SqliteTuning>,
    spec: &'static FileSpec,
    path: &Path,
    file: File,
    warnings: &mut Vec<String>,
) -> Result<FileStats, ImportError> {
    let started = Instant::now();
    let io_err = |source| ImportError::Io {
        path: path.display().to_string(),
        source,
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(LineEnds::new(file));
    let mut stats = FileStats {
        file: spec.file.to_string(),
        ..Default::default()
    };
    let bar = progress_bar(state.opts.progress, size, spec.file);

    // Header.
    let mut header = csv::ByteRecord::new();
    let got = match rdr.read_byte_record(&mut header) {
        Ok(got) => got,
        Err(e) => {
            state.fatal = true;
            state.error(spec.file, 1, "", "", format!("unreadable CSV: {e}"));
            return Ok(stats);
        }
    };
    if !got {
        state.fatal = true;
        state.error(spec.file, 1, "", "", "empty file (expected a header row)");
        return Ok(stats);
    }
    // positions[i] = index in the record of spec.columns[i], if present.
    let mut positions: Vec<Option<usize>> = vec![None; spec.columns.len()];
    // Extra columns kept as attributes: (key, header name, index in the record).
    let mut extras: Vec<(String, String, usize)> = Vec::new();
    let mut extra_keys: HashSet<String> = HashSet::new();
    let mut extra_count = 0usize;
    let mut header_ok = true;
    for (idx, raw) in header.iter().enumerate() {
        let name = match std::str::from_utf8(raw) {
            Ok(n) => n.trim().trim_start_matches('\u{feff}').trim().to_string(),
            Err(_) => {
                state.error(
                    spec.file,
                    1,
                    &format!("#{}", idx + 1),
                    &String::from_utf8_lossy(raw),
                    "header is not valid UTF-8",
                );
                header_ok = false;
                continue;
            }
        };
        // `Loyalty Tier`, `loyalty-tier` and `LOYALTY_TIER` all name `loyalty_tier`.
        let key = contract::normalize_header(&name);
        match spec.columns.iter().position(|c| c.name == key) {
            Some(ci) if positions[ci].is_some() => {
                state.error(
                    spec.file,
                    1,
                    &name,
                    &name,
                    "column appears twice in the header",
                );
                header_ok = false;
            }
            Some(ci) => positions[ci] = Some(idx),
            None if spec.keeps_attributes => {
                // Past the limit the columns are only counted: one error below says so.
                extra_count += 1;
                if extra_count > MAX_ATTRIBUTE_COLUMNS {
                    continue;
                }
                if !contract::is_attribute_key(&key) {
                    let reason = if name.is_empty() {
                        "extra column without a name (it would be kept as an attribute)"
                    } else {
                        "not a valid attribute name (1 to 64 letters, digits, spaces, `_` or `-`)"
                    };
                    state.error(spec.file, 1, &name, &name, reason);
                    header_ok = false;
                } else if !extra_keys.insert(key.clone()) {
                    state.error(
                        spec.file,
                        1,
                        &name,
                        &name,
                        "column appears twice in the header",
                    );
                    header_ok = false;
                } else {
                    extras.push((key, name, idx));
                }
            }
            None => {
                stats.unknown_column_count += 1;
                if stats.unknown_columns.len() < UNKNOWN_COLUMNS_SHOWN {
                    stats.unknown_columns.push(clip(&name));
                }
            }
        }
    }
    if extra_count > MAX_ATTRIBUTE_COLUMNS {
        let reason = format!(
            "{extra_count} extra columns, over the limit of {MAX_ATTRIBUTE_COLUMNS} kept as customer attributes (remove the columns not needed)"
        );
        state.error(spec.file, 1, "", &extra_count.to_string(), reason);
        header_ok = false;
    }
    // One line per file, however many columns.
    if stats.unknown_column_count > 0 {
        let n = stats.unknown_column_count;
        let names: Vec<String> = stats
            .unknown_columns
            .iter()
            .map(|c| format!("`{c}`"))
            .collect();
        let more = if n > names.len() as u64 {
            format!(", … (first {} shown)", names.len())
        } else {
            String::new()
        };
        warnings.push(format!(
            "{}: {n} unknown column{} ignored: {}{more}",
            spec.file,
            if n == 1 { "" } else { "s" },
            names.join(", ")
        ));
    }
    for (ci, c) in spec.columns.iter().enumerate() {
        if c.required && positions[ci].is_none() {
            state.error(
                spec.file,
                1,
                c.name,
                "",
                "required column is missing from the header",
            );
            header_ok = false;
        }
    }
    if !header_ok {
        state.fatal = true;
        return Ok(stats);
    }
    stats.attribute_columns = extras.iter().map(|e| e.0.clone()).collect();

    // The table columns written: the present ones, plus the event key that is always derived.
    let always_key = spec.table == "events";
    let present: Vec<usize> = (0..spec.columns.len())
        .filter(|&ci| positions[ci].is_some() || (always_key && spec.columns[ci].db == "event_key"))
        .collect();
    let mut db_cols: Vec<&'static str> = present.iter().map(|&ci| spec.columns[ci].db).collect();
    // The attributes object, when there are extra columns, is the last value of each row.
    let attributes = Attributes::new(extras);
    if !attributes.columns.is_empty() {
        db_cols.push(ATTRIBUTES_COLUMN);
    }
    let key_idx: Vec<usize> = spec
        .key
        .iter()
        .map(|k| {
            db_cols
                .iter()
                .position(|c| c == k)
                .expect("key column present")
        })
        .collect();
    let customer_idx = db_cols
        .iter()
        .position(|c| *c == "customer_id")
        .filter(|_| spec.creates_customers);

    // PostgreSQL gets far larger chunks: sqlx 0.9 leaves Nagle's algorithm on, so a COPY can
    // wait ~40 ms for a delayed ACK at its end; fewer, larger COPYs mean fewer stalls.
    let batch_limit = match tx.backend() {
        Backend::Sqlite => state.opts.batch_rows,
        Backend::Postgres => PG_COPY_ROWS.max(state.opts.batch_rows),
    };
    let mut pg = match tx.backend() {
        Backend::Postgres => Some(PgLoad::begin(tx, spec, &db_cols).await?),
        Backend::Sqlite => None,
    };

    // Loading into an empty SQLite table: its secondary indexes are dropped now and built
    // once at the end, by sorting, instead of taking every row at a random place (the
    // time indexes of a large brand far outgrow the page cache). Same transaction, so a
    // rollback or a kill brings them back untouched.
    let dropped = match tuning {
        Some(t) => t.drop_secondary_indexes(tx, spec.table).await?,
        None => Vec::new(),
    };

    let country_pos = spec
        .columns
        .iter()
        .position(|c| c.name == "country")
        .and_then(|ci| positions[ci]);
    let parser = Parser {
        spec,
        rdr,
        ctx: ParseContext {
            country: state.opts.country.as_deref().and_then(phone::country),
            ..ParseContext::new(
                state.opts.tz,
                state.opts.currency.clone(),
                state.now,
                state.opts.max_future_days,
            )
        },
        hasher: state.hasher.clone(),
        skip_invalid: state.opts.skip_invalid,
        positions,
        event_key_idx: always_key
            .then(|| db_cols.iter().position(|c| *c == "event_key"))
            .flatten(),
        prev_key: None,
        present,
        attributes,
        key_idx,
        interners: (0..db_cols.len()).map(|_| Interner::default()).collect(),
        db_cols: db_cols.clone(),
        customer_idx,
        country_pos,
        backend: tx.backend(),
        sql_cache: SqlCache::new(),
        copy_row_bytes: 64,
        customers_named: HashSet::default(),
        n_header: header.len(),
        batch_limit,
        size,
        known_orders: std::mem::take(&mut state.known_orders),
        known_products: std::mem::take(&mut state.known_products),
        bar: bar.clone(),
    };
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let parsing = tokio::task::spawn_blocking(move || parser.run(sender));

    let mut rejected = RejectedWriter::new(spec.file, &header);
    let mut dropped_by_column: std::collections::BTreeMap<String, u64> =
        std::collections::BTreeMap::new();
    while let Some(chunk) = chunks.recv().await {
        stats.rows_read += chunk.read;
        stats.rows_valid += chunk.valid;
        stats.duplicates += chunk.duplicates;
        stats.rows_rejected += chunk.rejected;
        for note in chunk.notes {
            match note {
                Note::Rejected {
                    line,
                    problems,
                    raw,
                } => {
                    for (col, value, reason) in problems {
                        state.error(spec.file, line, &col, &value, reason.clone());
                        if state.opts.skip_invalid {
                            rejected.note(&reason, &col);
                        }
                    }
                    if let Some(raw) = raw {
                        rejected
                            .write(&state.rejected_dir, line, &raw)
                            .map_err(io_err)?;
                        state.rejected_any = true;
                    }
                }
                Note::Fatal { line, reason } => {
                    state.error(spec.file, line, "", "", reason);
                    state.fatal = true;
                }
                Note::Dropped { line, fields, raw } => {
                    for (col, value, reason) in fields {
                        state.dropped(spec.file, line, &col, &value, &reason);
                        rejected.note(
                            &format!("dropped, the row was kept without it: {reason}"),
                            &col,
                        );
                        stats.fields_dropped += 1;
                        *dropped_by_column.entry(col).or_insert(0u64) += 1;
                    }
                    rejected
                        .write(&state.rejected_dir, line, &raw)
                        .map_err(io_err)?;
                    state.rejected_any = true;
                }
            }
        }
        flush(
            tx,
            state,
            spec,
            &db_cols,
            customer_idx,
            pg.as_mut(),
            chunk.bound,
            chunk.batch,
            &mut stats,
            &mut rejected,
        )
        .await?;
    }
    if let Some(pg) = pg.as_ref() {
        pg.finish(tx).await?;
    }
    let (known_orders, known_products) = match parsing.await {
        Ok(sets) => sets,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(io_err(std::io::Error::other(e))),
    };
    state.known_orders = known_orders;
    state.known_products = known_products;
    bar.finish_and_clear();
    if stats.fields_dropped > 0 {
        let by: Vec<String> = dropped_by_column
            .iter()
            .map(|(c, n)| format!("`{c}` {n}"))
            .collect();
        warnings.push(format!(
            "{}: {} invalid optional value(s) dropped ({}), their rows kept without them",
            spec.file,
            stats.fields_dropped,
            by.join(", ")
        ));
    }
    let loaded = started.elapsed().as_secs_f64();
    if let Some(t) = tuning.filter(|_| !dropped.is_empty()) {
        t.recreate_indexes(tx, &dropped).await?;
    }
    tracing::debug!(
        file = spec.file,
        rows = stats.rows_read,
        load_s = loaded,
        total_s = started.elapsed().as_secs_f64(),
        "file imported"
    );
    Ok(stats)
}

/// What the parsing thread found, in file order.
#[derive(Default)]
struct Chunk {
    /// Problems on rows before the end of `batch`.
    notes: Vec<Note>,
    /// Valid rows whose references all point into this import, bound into one upsert.
    bound: Option<Bound>,
    /// Valid rows naming ids not in this import, to be looked up in the database first.
    batch: Vec<PendingRow>,
    read: u64,
    valid: u64,
    duplicates: u64,
    rejected: u64,
}

enum Note {
    /// A row that failed validation: (column, value, reason) per problem, and its fields
    /// with `--skip-invalid`.
    Rejected {
        line: u64,
        problems: Vec<(String, String, String)>,
        raw: Option<csv::ByteRecord>,
    },
    /// The file cannot be read further: fails the import.
    Fatal { line: u64, reason: String },
    /// A row kept without its invalid optional values: (column, value, reason) per value,
    /// and the row's fields.
    Dropped {
        line: u64,
        fields: Vec<(String, String, String)>,
        raw: csv::ByteRecord,
    },
}

/// Rows parsed ahead of the duplicate check: each row's slot in the duplicate table is
/// prefetched when it is parsed and read this many rows later, so the memory latency of
/// that random load (at 1 M customers the events table is ~1 GB) overlaps the parsing.
const PREFETCH_ROWS: usize = 16;

/// A row parsed, waiting for its duplicate check.
struct Parsed {
    line: u64,
    vals: Vec<Val>,
    unresolved: Vec<(Ref, String, &'static str)>,
    problems: Vec<(String, String, String)>,
    /// Invalid optional values set to NULL: (column, value, reason).
    dropped: Vec<(String, String, String)>,
    /// Key hash and 32-bit content digest; `None` for a row that already has problems.
    key: Option<(u64, u32)>,
    record: csv::ByteRecord,
}

/// How key `b` compares with key `a`, column by column; `None` if a pair is not text with
/// text or integer with integer (then the file is treated as unsorted).
fn key_order<'v>(a: &[Val], b: impl Iterator<Item = &'v Val>) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::Equal;
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Val::Text(Some(x)), Val::Text(Some(y))) => y.as_str().cmp(x.as_str()),
            (Val::Int(Some(x)), Val::Int(Some(y))) => y.cmp(x),
            _ => return None,
        };
        if o != Equal {
            return Some(o);
        }
    }
    Some(Equal)
}

/// Parses and validates one file's rows on a thread of its own.
struct Parser {
    spec: &'static FileSpec,
    rdr: csv::Reader<LineEnds<File>>,
    /// Index in the record of the `country` column (customers), for phone numbers.
    country_pos: Option<usize>,
    ctx: ParseContext,
    hasher: ahash::RandomState,
    skip_invalid: bool,
    positions: Vec<Option<usize>>,
    /// Indexes into `spec.columns` of the columns written, in `db_cols` order.
    present: Vec<usize>,
    /// Extra columns kept as attributes (their JSON object follows the `present` values).
    attributes: Attributes,
    key_idx: Vec<usize>,
    db_cols: Vec<&'static str>,
    customer_idx: Option<usize>,
    backend: Backend,
    sql_cache: SqlCache,
    /// Largest COPY text per row so far, to size the next chunk's buffer.
    copy_row_bytes: usize,
    /// PostgreSQL: the customer ids this file's rows have named so far, so that each is
    /// handed to the writer once, with the first chunk that names it.
    customers_named: HashSet<String, ahash::RandomState>,
    /// Per column, for SQLite: text values shared instead of allocated once per row.
    interners: Vec<Interner>,
    /// Where the derived event key goes (events only).
    event_key_idx: Option<usize>,
    /// The key of the last row checked for duplicates, while the file is in key order.
    prev_key: Option<Vec<Val>>,
    n_header: usize,
    batch_limit: usize,
    /// File size, to size the duplicate table once.
    size: u64,
    known_orders: HashIds,
    known_products: HashIds,
    bar: indicatif::ProgressBar,
}

impl Parser {
    /// Sends chunks until the file ends (or the receiver is gone); returns the id sets.
    fn run(mut self, out: tokio::sync::mpsc::Sender<Chunk>) -> (HashIds, HashIds) {
        let spec = self.spec;
        // Key hash -> the first row with it (content digest, line).
        let mut seen = Dedup::new();
        let mut chunk = Chunk {
            batch: Vec::with_capacity(self.batch_limit),
            ..Default::default()
        };
        // Rows parsed but not yet checked against `seen`, oldest first, and records to reuse.
        let mut waiting: VecDeque<Parsed> = VecDeque::with_capacity(PREFETCH_ROWS + 1);
        let mut spare: Vec<csv::ByteRecord> = Vec::new();
        let mut row_errors: Vec<(String, String, String)> = Vec::new();
        let mut records: u64 = 0;
        let mut fatal = None;
        let mut stopped = false;

        loop {
            let mut record = spare.pop().unwrap_or_default();
            match self.rdr.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    fatal = Some(Note::Fatal {
                        line,
                        reason: format!("unreadable CSV: {e}"),
                    });
                    break;
                }
            }
            // The reader has just read the record's final `\n` (line ends are all `\n`, see
            // `LineEnds`): its first line is that line less the line breaks inside its quoted
            // fields. (The record's own position is where the read began, before any blank
            // lines skipped.)
            let breaks = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
            let line = self.rdr.position().line().saturating_sub(1 + breaks);
            records += 1;
            if records.is_multiple_of(65_536) {
                self.bar
                    .set_position(record.position().map(|p| p.byte()).unwrap_or(0));
            }
            if records == 16_384 {
                // Rows in the whole file, from the length of these, plus a margin.
                let bytes = record.position().map(|p| p.byte()).unwrap_or(0).max(1);
                let estimate = (self.size as f64 * records as f64 / bytes as f64 * 1.05) as usize;
                seen.expect(estimate);
            }
            // A blank line is not a row.
            if record.len() == 1 && record[0].is_empty() {
                spare.push(record);
                continue;
            }
            chunk.read += 1;
            let mut vals: Vec<Val> = Vec::with_capacity(self.db_cols.len());
            let mut unresolved = Vec::new();
            let mut dropped = Vec::new();
            if record.len() != self.n_header {
                // Its fields are not where the header says: none of them is read.
                row_errors.push((
                    String::new(),
                    String::new(),
                    field_count_reason(record.len(), self.n_header),
                ));
                vals.resize(self.db_cols.len(), Val::Text(None));
                waiting.push_back(Parsed {
                    line,
                    vals,
                    unresolved,
                    problems: std::mem::take(&mut row_errors),
                    dropped,
                    key: None,
                    record,
                });
                if waiting.len() > PREFETCH_ROWS {
                    let row = waiting.pop_front().expect("a row waits");
                    if !self.finish_row(row, &mut seen, &mut chunk, &out, &mut spare) {
                        stopped = true;
                        break;
                    }
                }
                continue;
            }
            let row_country = self
                .country_pos
                .and_then(|p| record.get(p))
                .and_then(|b| std::str::from_utf8(b).ok());
            for &ci in &self.present {
                let col = &spec.columns[ci];
                let raw: &[u8] = self.positions[ci]
                    .and_then(|p| record.get(p))
                    .unwrap_or(b"");
                // An invalid optional contact detail is dropped from the row, not the row.
                let problems = if col.drops_when_invalid() {
                    &mut dropped
                } else {
                    &mut row_errors
                };
                if raw.len() > MAX_FIELD_BYTES {
                    problems.push((
                        col.name.into(),
                        String::from_utf8_lossy(&raw[..64]).into_owned(),
                        format!("field is {} bytes, over the 64 KiB limit", raw.len()),
                    ));
                    vals.push(Val::Text(None));
                    continue;
                }
                let text = match std::str::from_utf8(raw) {
                    Ok(t) => t,
                    Err(_) => {
                        problems.push((
                            col.name.into(),
                            String::from_utf8_lossy(raw).into_owned(),
                            "not valid UTF-8".into(),
                        ));
                        vals.push(Val::Text(None));
                        continue;
                    }
                };
                // The event key is optional per row: empty means "derive it".
                if col.db == "event_key" && text.trim().is_empty() {
                    vals.push(Val::Text(None));
                    continue;
                }
                match parse_field_in(col.kind, text, &self.ctx, row_country) {
                    Ok(v) => {
                        if let (Some(r), Val::Text(Some(id))) = (col.refers, &v) {
                            let h = self.hasher.hash_one(id.as_str());
                            let known = match r {
                                Ref::Order => self.known_orders.contains(&h),
                                Ref::Product => self.known_products.contains(&h),
                            };
                            if !known {
                                unresolved.push((r, id.clone(), col.name));
                            }
                        }
                        vals.push(v);
                    }
                    Err(reason) => {
                        problems.push((col.name.into(), text.to_string(), reason));
                        vals.push(Val::Text(None));
                    }
                }
            }
            if !self.attributes.columns.is_empty() {
                vals.push(Val::Text(self.attributes.object(&record, &mut row_errors)));
            }
            if let Some(k) = self.event_key_idx
                && vals[k] == Val::Text(None)
            {
                let rest: Vec<Val> = vals
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != k)
                    .map(|(_, v)| v.clone())
                    .collect();
                vals[k] = Val::Text(Some(event_digest(&rest)));
            }
            let key = row_errors.is_empty().then(|| {
                let key_hash = hash_vals(&self.hasher, self.key_idx.iter().map(|&i| &vals[i]));
                let content = hash_vals(&self.hasher, &vals);
                seen.prefetch(key_hash);
                (key_hash, (content ^ (content >> 32)) as u32)
            });
            waiting.push_back(Parsed {
                line,
                vals,
                unresolved,
                problems: std::mem::take(&mut row_errors),
                dropped,
                key,
                record,
            });
            if waiting.len() > PREFETCH_ROWS {
                let row = waiting.pop_front().expect("a row waits");
                if !self.finish_row(row, &mut seen, &mut chunk, &out, &mut spare) {
                    stopped = true;
                    break;
                }
            }
        }
        if !stopped {
            while let Some(row) = waiting.pop_front() {
                if !self.finish_row(row, &mut seen, &mut chunk, &out, &mut spare) {
                    return (self.known_orders, self.known_products);
                }
            }
            chunk.notes.extend(fatal);
            self.send(&out, &mut chunk);
        }
        (self.known_orders, self.known_products)
    }

    /// Checks a parsed row against the rows before it (duplicates and conflicting repeats)
    /// and adds it to the chunk, sending the chunk when full; false when the writer has
    /// stopped.
    fn finish_row(
        &mut self,
        row: Parsed,
        seen: &mut Dedup,
        chunk: &mut Chunk,
        out: &tokio::sync::mpsc::Sender<Chunk>,
        spare: &mut Vec<csv::ByteRecord>,
    ) -> bool {
        let spec = self.spec;
        let Parsed {
            line,
            vals,
            unresolved,
            problems: mut row_errors,
            dropped,
            key,
            record,
        } = row;
        if let Some((key_hash, content)) = key {
            // While the file is in key order, how this key compares with the previous one
            // (the first key has nothing before it: in order).
            let order = if seen.sorted() {
                let key = self.key_idx.iter().map(|&i| &vals[i]);
                let order = match &self.prev_key {
                    None => Some(std::cmp::Ordering::Greater),
                    Some(prev) => key_order(prev, key),
                };
                let prev = self
                    .prev_key
                    .get_or_insert_with(|| vec![Val::Text(None); self.key_idx.len()]);
                for (p, &i) in prev.iter_mut().zip(&self.key_idx) {
                    // Reuses the text buffers: this runs once per row.
                    match (p, &vals[i]) {
                        (Val::Text(Some(p)), Val::Text(Some(v))) => {
                            p.clear();
                            p.push_str(v);
                        }
                        (p, v) => *p = v.clone(),
                    }
                }
                order
            } else {
                None
            };
            match seen.get(key_hash, order) {
                Some(first) if first.content == content => {
                    chunk.duplicates += 1;
                    chunk.valid += 1;
                    spare.push(record);
                    return true;
                }
                Some(first) => {
                    let key_desc = self
                        .key_idx
                        .iter()
                        .map(|&i| val_text(&vals[i]))
                        .collect::<Vec<_>>()
                        .join(", ");
                    row_errors.push((
                        spec.key.join("+"),
                        key_desc,
                        format!(
                            "duplicate id with conflicting values (first seen on line {})",
                            first.line
                        ),
                    ));
                }
                None => {
                    seen.insert(
                        key_hash,
                        First {
                            content,
                            line: u32::try_from(line).unwrap_or(u32::MAX),
                        },
                    );
                    // Register ids others may reference.
                    match spec.table {
                        "orders" => {
                            self.known_orders
                                .insert(self.hasher.hash_one(text_ref(&vals[self.key_idx[0]])));
                        }
                        "products" => {
                            self.known_products
                                .insert(self.hasher.hash_one(text_ref(&vals[self.key_idx[0]])));
                        }
                        _ => {}
                    }
                }
            }
        }
        if !row_errors.is_empty() {
            // Rejected anyway: its invalid optional values are among its problems.
            row_errors.extend(dropped);
            chunk.rejected += 1;
            let raw = if self.skip_invalid {
                Some(record)
            } else {
                spare.push(record);
                None
            };
            chunk.notes.push(Note::Rejected {
                line,
                problems: row_errors,
                raw,
            });
            return chunk.notes.len() < NOTES_PER_CHUNK || self.send(out, chunk);
        }
        chunk.valid += 1;
        if !dropped.is_empty() {
            // The original fields go to the rejected-row file, whatever the mode.
            chunk.notes.push(Note::Dropped {
                line,
                fields: dropped,
                raw: record.clone(),
            });
        }
        let raw = if self.skip_invalid && !unresolved.is_empty() {
            Some(record)
        } else {
            spare.push(record);
            None
        };
        chunk.batch.push(PendingRow {
            line,
            vals,
            raw,
            unresolved,
        });
        chunk.batch.len() < self.batch_limit || self.send(out, chunk)
    }

    /// Hands the chunk over; false when the writer has stopped.
    fn send(&mut self, out: &tokio::sync::mpsc::Sender<Chunk>, chunk: &mut Chunk) -> bool {
        let next = Chunk {
            batch: Vec::with_capacity(self.batch_limit),
            ..Default::default()
        };
        let mut chunk = std::mem::replace(chunk, next);
        self.bind(&mut chunk);
        out.blocking_send(chunk).is_ok()
    }

    /// Binds the rows that need no database lookup into their upsert here, off the writer's
    /// path: binding 3,000 values took the writer as long as SQLite took to insert them.
    fn bind(&mut self, chunk: &mut Chunk) {
        let (ready, pending): (Vec<PendingRow>, Vec<PendingRow>) = std::mem::take(&mut chunk.batch)
            .into_iter()
            .partition(|p| p.unresolved.is_empty());
        chunk.batch = pending;
        if ready.is_empty() {
            return;
        }
        if self.backend == Backend::Postgres {
            let mut data = Vec::with_capacity(self.copy_row_bytes * ready.len());
            for p in &ready {
                push_copy_row(&mut data, &p.vals);
            }
            self.copy_row_bytes = self.copy_row_bytes.max(data.len() / ready.len() + 1);
            let mut customer_ids = Vec::new();
            if let Some(i) = self.customer_idx {
                for p in &ready {
                    let id = text_ref(&p.vals[i]);
                    if !self.customers_named.contains(id) {
                        self.customers_named.insert(id.to_owned());
                        customer_ids.push(id.to_owned());
                    }
                }
            }
            chunk.bound = Some(Bound::Copy { data, customer_ids });
            return;
        }
        let customer_ids: Vec<String> = match self.customer_idx {
            Some(i) => {
                let set: HashSet<&str> = ready.iter().map(|p| text_ref(&p.vals[i])).collect();
                set.into_iter().map(String::from).collect()
            }
            None => Vec::new(),
        };
        let sql = upsert_sql(
            &mut self.sql_cache,
            self.spec,
            &self.db_cols,
            ready.len(),
            self.backend,
        );
        let args = bind_rows(ready.into_iter().map(|p| p.vals), &mut self.interners);
        chunk.bound = Some(Bound::Sqlite {
            sql,
            args,
            customer_ids,
        });
    }
}

/// A file's extra columns, kept per row as one JSON object of strings.
struct Attributes {
    /// (`"key":` as JSON, header name, index in the record), sorted by key so that the object
    /// is the same text whatever the column order of the export (re-imports stay no-ops).
    columns: Vec<(String, String, usize)>,
}

impl Attributes {
    fn new(mut extras: Vec<(String, String, usize)>) -> Self {
        extras.sort();
        let columns = extras
            .into_iter()
            .map(|(key, name, idx)| {
                let mut member = String::with_capacity(key.len() + 3);
                contract::push_json_string(&mut member, &key);
                member.push(':');
                (member, name, idx)
            })
            .collect();
        Self { columns }
    }

    /// The row's object: trimmed values, empty ones left out; `None` when all are empty.
    /// Invalid values are added to `problems`.
    fn object(
        &self,
        record: &csv::ByteRecord,
        problems: &mut Vec<(String, String, String)>,
    ) -> Option<String> {
        let mut json = String::new();
        for (member, name, idx) in &self.columns {
            let raw = record.get(*idx).unwrap_or(b"");
            let Ok(text) = std::str::from_utf8(raw) else {
                problems.push((
                    name.clone(),
                    String::from_utf8_lossy(&raw[..raw.len().min(MAX_ATTRIBUTE_CHARS)])
                        .into_owned(),
                    "not valid UTF-8".into(),
                ));
                continue;
            };
            let value = text.trim();
            if value.is_empty() {
                continue;
            }
            if value.contains('\0') {
                problems.push((
                    name.clone(),
                    value.chars().take(64).collect(),
                    NUL_BYTE.into(),
                ));
                continue;
            }
            if value.len() > MAX_ATTRIBUTE_CHARS {
                let chars = value.chars().count();
                if chars > MAX_ATTRIBUTE_CHARS {
                    let shown: String = value.chars().take(64).collect();
                    problems.push((name.clone(), shown, format!("attribute value is {chars} characters, over the {MAX_ATTRIBUTE_CHARS} limit")));
                    continue;
                }
            }
            if json.is_empty() {
                // One allocation per row: every value fits unless it needs escaping.
                let len: usize = self
                    .columns
                    .iter()
                    .map(|(m, _, i)| m.len() + 3 + record.get(*i).map_or(0, <[u8]>::len))
                    .sum();
                json.reserve(len + 1);
                json.push('{');
            } else {
                json.push(',');
            }
            json.push_str(member);
            contract::push_json_string(&mut json, value);
        }
        if json.is_empty() {
            return None;
        }
        json.push('}');
        Some(json)
    }
}

/// The text of an id value (ids are always text).
fn text_ref(v: &Val) -> &str {
    match v {
        Val::Text(Some(s)) => s,
        _ => "",
    }
}

fn val_text(v: &Val) -> String {
    match v {
        Val::Text(s) => s.clone().unwrap_or_default(),
        Val::Int(i) => i.map(|i| i.to_string()).unwrap_or_default(),
        Val::Real(r) => r.map(|r| r.to_string()).unwrap_or_default(),
        Val::Bool(b) => b.to_string(),
        Val::Bytes(_) => unreachable!("the contract has no binary columns"),
    }
}

fn progress_bar(enabled: bool, size: u64, file: &str) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(file.to_string());
    bar
}

/// Resolves the batch's outstanding references against the database, then upserts it with
/// the rows bound by the parser.
#[allow(clippy::too_many_arguments)]
async fn flush(
    tx: &mut Tx,
    state: &mut State<'_>,
    spec: &'static FileSpec,
    db_cols: &[&'static str],
    customer_idx: Option<usize>,
    pg: Option<&mut PgLoad>,
    bound: Option<Bound>,
    mut batch: Vec<PendingRow>,
    stats: &mut FileStats,
    rejected: &mut RejectedWriter,
) -> Result<(), ImportError> {
    // References to rows imported earlier (not in this export) are looked up in one query per table.
    for (r, table, id_col) in [
        (Ref::Order, "orders", "order_id"),
        (Ref::Product, "products", "product_id"),
    ] {
        let wanted: Vec<String> = {
            let set: HashSet<&str> = batch
                .iter()
                .flat_map(|p| p.unresolved.iter())
                .filter(|u| u.0 == r)
                .map(|u| u.1.as_str())
                .collect();
            set.into_iter().map(String::from).collect()
        };
        if wanted.is_empty() {
            continue;
        }
        let mut found: HashSet<String> = HashSet::new();
        for chunk in wanted.chunks(500) {
            let placeholders: Vec<String> =
                (1..=chunk.len()).map(|i| param(tx.backend(), i)).collect();
            let sql = format!(
                "SELECT {id_col} FROM {table} WHERE {id_col} IN ({})",
                placeholders.join(",")
            );
            let vals: Vec<Val> = chunk.iter().map(|s| Val::Text(Some(s.clone()))).collect();
            found.extend(tx.fetch_strings(&sql, &vals).await?);
        }
        let mut keep = Vec::with_capacity(batch.len());
        for row in batch.drain(..) {
            let missing: Vec<&(Ref, String, &'static str)> = row
                .unresolved
                .iter()
                .filter(|u| u.0 == r && !found.contains(&u.1))
                .collect();
            if missing.is_empty() {
                keep.push(row);
                continue;
            }
            stats.rows_valid -= 1;
            stats.rows_rejected += 1;
            for (_, id, col) in missing {
                let reason = format!(
                    "no {} with this id in this import or the database",
                    if r == Ref::Order { "order" } else { "product" }
                );
                state.error(spec.file, row.line, col, id, reason.clone());
                if row.raw.is_some() {
                    rejected.note(&reason, col);
                }
            }
            if let Some(raw) = &row.raw {
                rejected
                    .write(&state.rejected_dir, row.line, raw)
                    .map_err(|source| ImportError::Io {
                        path: spec.file.into(),
                        source,
                    })?;
                state.rejected_any = true;
            }
        }
        batch = keep;
    }
    if !state.writing() || (bound.is_none() && batch.is_empty()) {
        return Ok(());
    }
    if let Some(pg) = pg {
        let (mut data, mut customer_ids) = match bound {
            Some(Bound::Copy { data, customer_ids }) => (data, customer_ids),
            None => (Vec::new(), Vec::new()),
            Some(Bound::Sqlite { .. }) => {
                unreachable!("rows are prepared for the transaction's own backend")
            }
        };
        for p in &batch {
            push_copy_row(&mut data, &p.vals);
        }
        // Rows that waited for a lookup were not seen by the parser's per-file set; a repeat
        // here costs one conflict check.
        customer_ids.extend(
            batch
                .iter()
                .filter_map(|p| customer_idx.map(|i| text_ref(&p.vals[i]).to_owned())),
        );
        let (written, created) = pg.load(tx, data, customer_ids).await?;
        stats.rows_written += written;
        state.customers_created += created;
        return Ok(());
    }
    // Customers named only by orders, sessions or events are created bare (no contact, no consent).
    if spec.creates_customers {
        let ids: Vec<String> = {
            let mut set: HashSet<&str> = batch
                .iter()
                .filter_map(|p| customer_idx.map(|i| text_ref(&p.vals[i])))
                .collect();
            if let Some(Bound::Sqlite { customer_ids, .. }) = &bound {
                set.extend(customer_ids.iter().map(String::as_str));
            }
            set.into_iter().map(String::from).collect()
        };
        let placeholders: Vec<String> = (1..=ids.len())
            .map(|i| format!("({})", param(tx.backend(), i)))
            .collect();
        let sql = format!(
            "INSERT INTO customers (customer_id) VALUES {} ON CONFLICT (customer_id) DO NOTHING",
            placeholders.join(",")
        );
        let vals: Vec<Val> = ids.into_iter().map(|s| Val::Text(Some(s))).collect();
        state.customers_created += tx.execute(&sql, &vals).await?;
    }
    if let Some(Bound::Sqlite { sql, args, .. }) = bound {
        stats.rows_written += execute_bound(tx, sql, args).await?;
    }
    if !batch.is_empty() {
        let sql = upsert_sql(
            &mut state.sql_cache,
            spec,
            db_cols,
            batch.len(),
            tx.backend(),
        );
        let args = bind_rows(batch.into_iter().map(|p| p.vals), &mut []);
        stats.rows_written += execute_bound(tx, sql, args).await?;
    }
    Ok(())
}

/// Rows prepared on the parser's thread, ready to write.
enum Bound {
    /// SQLite: one multi-row upsert with its values bound, and the distinct customer ids of
    /// its rows.
    Sqlite {
        sql: Arc<str>,
        args: Result<sqlx::sqlite::SqliteArguments, sqlx::error::BoxDynError>,
        customer_ids: Vec<String>,
    },
    /// PostgreSQL: the rows as `COPY … FROM STDIN` text (see [`push_copy_row`]), and the
    /// customer ids they name that no earlier chunk of the file named.
    Copy {
        data: Vec<u8>,
        customer_ids: Vec<String>,
    },
}

/// Binds rows' values by move, in order, for SQLite. Text values repeated within a column
/// share one allocation through `interners` (one per column; may be empty).
fn bind_rows(
    rows: impl Iterator<Item = Vec<Val>>,
    interners: &mut [Interner],
) -> Result<sqlx::sqlite::SqliteArguments, sqlx::error::BoxDynError> {
    use sqlx::Arguments;
    let mut args = sqlx::sqlite::SqliteArguments::default();
    for vals in rows {
        for (c, v) in vals.into_iter().enumerate() {
            match v {
                Val::Text(Some(s)) => match interners.get_mut(c) {
                    Some(i) => args.add(i.share(s))?,
                    None => args.add(s)?,
                },
                Val::Text(None) => args.add(None::<String>)?,
                Val::Int(i) => args.add(i)?,
                Val::Real(r) => args.add(r)?,
                Val::Bool(b) => args.add(b)?,
                Val::Bytes(b) => args.add(b)?,
            }
        }
    }
    Ok(args)
}

async fn execute_bound(
    tx: &mut Tx,
    sql: Arc<str>,
    args: Result<sqlx::sqlite::SqliteArguments, sqlx::error::BoxDynError>,
) -> sqlx::Result<u64> {
    let args = args.map_err(sqlx::Error::Encode)?;
    match tx {
        Tx::Sqlite(t) => Ok(sqlx::query_with(AssertSqlSafe(sql), args)
            .execute(&mut **t)
            .await?
            .rows_affected()),
        Tx::Postgres(_) => unreachable!("PostgreSQL rows are written through COPY"),
    }
}

/// Rows per chunk on PostgreSQL (each chunk is one COPY).
const PG_COPY_ROWS: usize = 50_000;

/// Appends one row in COPY's text format: fields separated by tabs, `\N` for NULL, and
/// backslash, tab, newline and carriage return escaped (other bytes, UTF-8 included, go as they
/// are; the connection's client encoding is UTF-8).
fn push_copy_row(out: &mut Vec<u8>, vals: &[Val]) {
    use std::io::Write;
    for (i, v) in vals.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match v {
            Val::Text(Some(s)) => crate::bulk::push_copy_text(out, s.as_bytes()),
            Val::Int(Some(n)) => {
                let _ = write!(out, "{n}");
            }
            // Shortest text that reads back as the same f64 (values are finite).
            Val::Real(Some(r)) => {
                let _ = write!(out, "{r}");
            }
            Val::Text(None) | Val::Int(None) | Val::Real(None) => out.extend_from_slice(b"\\N"),
            Val::Bool(b) => out.push(if *b { b't' } else { b'f' }),
            Val::Bytes(_) => unreachable!("the contract has no binary columns"),
        }
    }
    out.push(b'\n');
}

/// Writes one file's chunks on PostgreSQL: each is streamed with COPY into a temporary
/// staging table, then upserted from there with the same `ON CONFLICT` clause as SQLite's
/// statements. A table that was empty when its file began is copied into directly instead:
/// the parser lets no key through twice, so nothing can conflict (see [`PgLoad::begin`]).
struct PgLoad {
    copy: String,
    /// `None` when copying straight into the table.
    staged: Option<Staged>,
    /// Indexes of an empty table dropped for the load, rebuilt by [`PgLoad::finish`].
    dropped: Vec<PgIndex>,
}

struct Staged {
    truncate: String,
    upsert: String,
    /// The staging table holds the previous chunk.
    dirty: bool,
}

impl PgLoad {
    async fn begin(
        tx: &mut Tx,
        spec: &'static FileSpec,
        db_cols: &[&'static str],
    ) -> sqlx::Result<PgLoad> {
        let table = spec.table;
        let cols = db_cols.join(", ");
        let direct = Self::empty_and_locked(tx, table).await?;
        let target = if direct {
            table.to_string()
        } else {
            format!("import_stage_{table}")
        };
        let staged = if direct {
            None
        } else {
            // Dropped at commit; a rollback (or a kill) undoes its creation.
            tx.execute(
                &format!(
                    "CREATE TEMP TABLE {target} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"
                ),
                &[],
            )
            .await?;
            let upsert = format!(
                "INSERT INTO {table} ({cols}) SELECT {cols} FROM {target} {}",
                on_conflict(spec, db_cols, Backend::Postgres)
            );
            Some(Staged {
                truncate: format!("TRUNCATE {target}"),
                upsert,
                dirty: false,
            })
        };
        let dropped = if direct {
            Self::drop_indexes(tx, table).await?
        } else {
            Vec::new()
        };
        Ok(PgLoad {
            copy: format!("COPY {target} ({cols}) FROM STDIN"),
            staged,
            dropped,
        })
    }

    /// Drops the indexes of an empty table about to be copied into, keys included, and
    /// returns how to build them again. Each row used to be inserted into every index at a
    /// random place (event keys are digests), which cost far more than the copy itself once
    /// the indexes outgrew shared_buffers; one sorted build per index at the end is cheaper.
    /// Same transaction: a failure or a kill rolls the drop back with the rows, and the key's
    /// rebuild checks uniqueness again. DROP takes an ACCESS EXCLUSIVE lock, so readers of
    /// this (empty) table wait until the import commits. A key that a foreign key points at
    /// cannot be dropped and stays.
    async fn drop_indexes(tx: &mut Tx, table: &str) -> sqlx::Result<Vec<PgIndex>> {
        let Tx::Postgres(t) = tx else {
            unreachable!("PostgreSQL's indexes")
        };
        let found: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT i.relname::text, \
                    COALESCE(pg_get_constraintdef(c.oid), pg_get_indexdef(x.indexrelid)), \
                    c.conname::text \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid \
             WHERE x.indrelid = $1::regclass AND x.indisvalid \
               AND (c.oid IS NULL OR c.contype IN ('p', 'u')) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = x.indexrelid) \
             ORDER BY c.oid IS NULL, i.relname",
        )
        .bind(table)
        .fetch_all(&mut **t)
        .await?;
        let mut dropped = Vec::with_capacity(found.len());
        for (index, definition, constraint) in found {
            let drop = match &constraint {
                Some(c) => format!("ALTER TABLE {table} DROP CONSTRAINT {}", quote_ident(c)),
                None => format!("DROP INDEX {}", quote_ident(&index)),
            };
            sqlx::query(AssertSqlSafe(drop)).execute(&mut **t).await?;
            let create = match &constraint {
                Some(c) => format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
                    quote_ident(c)
                ),
                None => definition,
            };
            dropped.push(PgIndex {
                name: index,
                create,
            });
        }
        Ok(dropped)
    }

    /// Whether `table` is empty, and then locked against other writers until the import
    /// commits: only this file's rows can then meet in it, and the parser lets no key through
    /// twice, so no upsert is needed. The lock is taken only for an empty table, so imports
    /// into a filled database block nobody.
    async fn empty_and_locked(tx: &mut Tx, table: &str) -> sqlx::Result<bool> {
        let rows = format!("SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT 1) AS t");
        if tx.fetch_i64(&rows, &[]).await? > 0 {
            return Ok(false);
        }
        // Self-exclusive and against row writes; readers go on. Checked again once held.
        tx.execute(
            &format!("LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"),
            &[],
        )
        .await?;
        Ok(tx.fetch_i64(&rows, &[]).await? == 0)
    }

    /// Loads one chunk of COPY text and creates the customers it names that are not in
    /// the database yet (bare: no contact, no consent); returns (rows written, customers
    /// created). The ids come from the parser, each once per file: reading them back out of
    /// the loaded table took a scan of it per file (3.3 s of a 48 s import for the events of
    /// 100 k customers).
    async fn load(
        &mut self,
        tx: &mut Tx,
        data: Vec<u8>,
        customer_ids: Vec<String>,
    ) -> sqlx::Result<(u64, u64)> {
        let Tx::Postgres(t) = tx else {
            unreachable!("COPY is PostgreSQL's")
        };
        let mut created = 0;
        if !customer_ids.is_empty() {
            created = sqlx::query("INSERT INTO customers (customer_id) SELECT * FROM unnest($1::text[]) ON CONFLICT (customer_id) DO NOTHING")
                .bind(customer_ids)
                .execute(&mut **t)
                .await?
                .rows_affected();
        }
        if data.is_empty() {
            return Ok((0, created));
        }
        if let Some(s) = self.staged.as_mut().filter(|s| s.dirty) {
            sqlx::query(AssertSqlSafe(s.truncate.as_str()))
                .execute(&mut **t)
                .await?;
            s.dirty = false;
        }
        let mut copy = t.copy_in_raw(&self.copy).await?;
        copy.send(data).await?;
        let copied = copy.finish().await?;
        let Some(s) = self.staged.as_mut() else {
            return Ok((copied, created));
        };
        s.dirty = true;
        let written = sqlx::query(AssertSqlSafe(s.upsert.as_str()))
            .execute(&mut **t)
            .await?
            .rows_affected();
        Ok((written, created))
    }

    /// After the last chunk: builds the dropped indexes again. Also for an import that will
    /// roll back: the statements after this file in its transaction need them.
    async fn finish(&self, tx: &mut Tx) -> sqlx::Result<()> {
        if self.dropped.is_empty() {
            return Ok(());
        }
        // More sort memory than the server's 64 MB default, for these builds only.
        tx.execute(
            &format!("SET LOCAL maintenance_work_mem = '{PG_INDEX_BUILD_MEMORY}'"),
            &[],
        )
        .await?;
        for index in &self.dropped {
            let started = Instant::now();
            tx.execute(&index.create, &[]).await?;
            tracing::debug!(
                index = index.name.as_str(),
                secs = started.elapsed().as_secs_f64(),
                "index built"
            );
        }
        tx.execute("SET LOCAL maintenance_work_mem TO DEFAULT", &[])
            .await?;
        Ok(())
    }
}

/// An index dropped for a load: its name and the statement that builds it again.
struct PgIndex {
    name: String,
    create: String,
}

/// Sort memory for rebuilding an import's indexes, per build (PostgreSQL splits it between
/// its parallel workers).
const PG_INDEX_BUILD_MEMORY: &str = "256MB";

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Shares repeated text values of one column: the value of the row before (ids in sorted
/// exports) and, while the column has few distinct values, any value seen (event types,
/// product ids, sources). A shared value is bound without allocating, and freeing it is a
/// reference count, not a free() on SQLite's thread of memory the parser allocated.
#[derive(Default)]
struct Interner {
    last: Option<Arc<str>>,
    seen: HashMap<Arc<str>, (), ahash::RandomState>,
    /// Too many distinct values: only `last` is used.
    saturated: bool,
}

/// Distinct values a column may have and still be interned.
const INTERN_MAX: usize = 4096;

impl Interner {
    fn share(&mut self, s: String) -> Arc<str> {
        if let Some(last) = &self.last
            && **last == *s
        {
            return last.clone();
        }
        let shared = if self.saturated {
            Arc::<str>::from(s)
        } else if let Some((k, _)) = self.seen.get_key_value(s.as_str()) {
            k.clone()
        } else {
            let k = Arc::<str>::from(s);
            if self.seen.len() < INTERN_MAX {
                self.seen.insert(k.clone(), ());
            } else {
                self.saturated = true;
                self.seen = HashMap::default();
            }
            k
        };
        self.last = Some(shared.clone());
        shared
    }
}

/// The import's connection: its own, from the pool's settings, so that what the import
/// changes on it stays with it, and without sqlx's per-statement logging, which flags every
/// index build (and, on PostgreSQL, every large COPY) over a second as a "slow statement"
/// warning. `None` for in-memory SQLite databases (a second connection would not see the
/// same data): the pool is used.
async fn import_connection(db: &Db) -> Result<Option<Db>, sqlx::Error> {
    use sqlx::ConnectOptions;
    let pool = match db {
        Db::Sqlite(pool) => pool,
        Db::Postgres(pool) => {
            let opts = (*pool.connect_options())
                .clone()
                .disable_statement_logging();
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await?;
            return Ok(Some(Db::Postgres(pool)));
        }
    };
    let opts = (*pool.connect_options()).clone();
    let name = opts.get_filename().to_string_lossy().into_owned();
    if name.is_empty()
        || name == ":memory:"
        || name.contains("sqlx-in-memory")
        || name.contains("mode=memory")
    {
        return Ok(None);
    }
    // One connection for the whole import: its pragmas (journal, temp store) must stay on it.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(opts.disable_statement_logging())
        .await?;
    Ok(Some(Db::Sqlite(pool)))
}

/// The import writing through SQLite's rollback journal instead of the WAL.
///
/// The import is one transaction, so in WAL mode every page it writes goes to the WAL first
/// and is copied into the database by the checkpoint after the commit: at 1 M customers the
/// WAL was 8.0 GB (and growing) beside a 10.0 GB database, every page written twice, and with
/// the 5.4 GB of CSV more than the page cache holds. With the rollback journal, pages appended to the file are not
/// journalled at all, so a load into a new or growing database writes each page once: the
/// 1 M import took 269 s with the WAL (1.44 times as long per row as at 100 k) and 195 s
/// with this alone (see the README).
///
/// SQLite can leave WAL mode only on the only connection to the database, so this is tried
/// when nothing else has it open: the caller's idle pool connections are closed first (the
/// pool opens new ones when next asked), and if any other connection, in this process or
/// another, still has the database open the switch fails at once and the import keeps the WAL.
/// The catch, documented in the README: while such an import runs, another process cannot
/// open the database (it waits its busy timeout, then fails), where in WAL mode it could read.
struct RollbackJournal;

impl RollbackJournal {
    /// Switches `own` (a one-connection pool) to the rollback journal; `Some` if it did. The
    /// caller has closed its own pool's idle connections first.
    async fn try_switch(own: &sqlx::SqlitePool) -> Option<RollbackJournal> {
        let mut conn = own.acquire().await.ok()?;
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .ok()?;
        // Not waiting for other connections: any at all means the switch cannot happen.
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut *conn)
            .await
            .ok()?;
        let mode: Option<String> = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut *conn)
            .await
            .ok();
        let _ = sqlx::query(AssertSqlSafe(format!("PRAGMA busy_timeout = {busy}")))
            .execute(&mut *conn)
            .await;
        if mode.as_deref() != Some("delete") {
            tracing::debug!(
                mode = mode.as_deref().unwrap_or("error"),
                "another connection has the database open: the import writes through the WAL"
            );
            return None;
        }
        // NORMAL is safe with the WAL; with the rollback journal only FULL is safe against
        // power loss. It costs one more sync of the (small) journal per cache spill.
        if let Err(e) = sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
        {
            tracing::warn!(error = %e, "could not set synchronous = FULL for the import");
        }
        tracing::debug!("the import writes through the rollback journal");
        Some(RollbackJournal)
    }

    /// Puts the database back in WAL mode once the import's transaction has ended. If this
    /// fails (or the import ends early with an error), the next connection does it: every
    /// connection the daemon opens asks for WAL mode.
    async fn restore(&self, own: &sqlx::SqlitePool) {
        let res: sqlx::Result<String> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(own)
            .await;
        match res {
            Ok(mode) if mode == "wal" => {}
            Ok(mode) => tracing::warn!(
                mode,
                "the database stayed in rollback-journal mode after the import; the next connection switches it back to WAL"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not switch the database back to WAL mode after the import; the next connection does")
            }
        }
        let _ = sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(own)
            .await;
    }
}

/// Index builds in the import's SQLite transaction.
struct SqliteTuning {
    /// `PRAGMA temp_store` as found (2 = MEMORY), put back at the end.
    temp_store: i64,
    /// Whether `temp_store` can be switched to files inside the transaction, which index
    /// builds need: with temp_store=MEMORY SQLite's sorter holds the whole index in RAM
    /// (0.85 GB for 16 M events); with files it works in `cache_size` of memory.
    can_rebuild: bool,
}

impl SqliteTuning {
    async fn apply(tx: &mut Tx) -> Option<SqliteTuning> {
        if tx.backend() != Backend::Sqlite {
            return None;
        }
        let temp_store = tx.fetch_i64("PRAGMA temp_store", &[]).await.ok()?;
        let mut can_rebuild = true;
        if temp_store == 2 {
            // Fails if this connection ever opened its temporary database; then indexes stay.
            can_rebuild = tx.execute("PRAGMA temp_store = FILE", &[]).await.is_ok()
                && tx.execute("PRAGMA temp_store = MEMORY", &[]).await.is_ok();
        }
        Some(SqliteTuning {
            temp_store,
            can_rebuild,
        })
    }

    async fn restore(&self, tx: &mut Tx) {
        let sql = format!("PRAGMA temp_store = {}", self.temp_store);
        if let Err(e) = tx.execute(&sql, &[]).await {
            tracing::warn!(error = %e, "could not restore {sql} after the import");
        }
    }

    /// Drops `table`'s plain secondary indexes if the table is empty; returns them
    /// (name, SQL) for [`Self::recreate_indexes`].
    async fn drop_secondary_indexes(
        &self,
        tx: &mut Tx,
        table: &str,
    ) -> sqlx::Result<Vec<(String, String)>> {
        let Tx::Sqlite(t) = tx else {
            return Ok(Vec::new());
        };
        if !self.can_rebuild {
            return Ok(Vec::new());
        }
        let empty: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut **t)
        .await?;
        if !empty {
            return Ok(Vec::new());
        }
        // Only indexes made by CREATE INDEX (not keys), and not unique ones: those check rows
        // as they come in.
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.name, m.sql FROM sqlite_master m JOIN pragma_index_list(?1) l ON l.name = m.name \
             WHERE m.type = 'index' AND m.tbl_name = ?1 AND m.sql IS NOT NULL AND l.\"unique\" = 0 AND l.origin = 'c' \
             ORDER BY m.rowid",
        )
        .bind(table)
        .fetch_all(&mut **t)
        .await?;
        for (name, _) in &indexes {
            let quoted = name.replace('"', "\"\"");
            sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{quoted}\"")))
                .execute(&mut **t)
                .await?;
        }
        Ok(indexes)
    }

    /// Builds the dropped indexes again from their own SQL, sorting through temporary files.
    async fn recreate_indexes(
        &self,
        tx: &mut Tx,
        indexes: &[(String, String)],
    ) -> sqlx::Result<()> {
        let switch = self.temp_store == 2;
        if switch && let Err(e) = tx.execute("PRAGMA temp_store = FILE", &[]).await {
            tracing::warn!(error = %e, "index builds will sort in memory");
        }
        // One helper thread for the sort: it sorts and writes one run while this thread fills
        // the next (the 55 M-row events index of a 1 M brand, in a sqlite3 shell with this
        // cache_size: 34.9 s -> 31.6 s, 138 -> 204 MB), for one more sort buffer.
        let threads = tx.fetch_i64("PRAGMA threads", &[]).await.unwrap_or(0);
        let _ = tx.execute("PRAGMA threads = 1", &[]).await;
        for (name, sql) in indexes {
            let started = Instant::now();
            tx.execute(sql, &[]).await?;
            tracing::debug!(
                index = name.as_str(),
                secs = started.elapsed().as_secs_f64(),
                "index built"
            );
        }
        let _ = tx
            .execute(&format!("PRAGMA threads = {threads}"), &[])
            .await;
        if switch && let Err(e) = tx.execute("PRAGMA temp_store = MEMORY", &[]).await {
            tracing::warn!(error = %e, "could not set temp_store back to MEMORY");
        }
        Ok(())
    }
}

type SqlCache = HashMap<(&'static str, usize, Vec<&'static str>), Arc<str>>;

/// `INSERT … ON CONFLICT (key) DO UPDATE … WHERE <something changed>` for `rows` rows.
fn upsert_sql(
    cache: &mut SqlCache,
    spec: &'static FileSpec,
    db_cols: &[&'static str],
    rows: usize,
    backend: Backend,
) -> Arc<str> {
    let key = (spec.table, rows, db_cols.to_vec());
    if let Some(sql) = cache.get(&key) {
        return sql.clone();
    }
    let n = db_cols.len();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        spec.table,
        db_cols.join(", ")
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..n {
            if c > 0 {
                sql.push(',');
            }
            push_param(&mut sql, backend, r * n + c + 1);
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(&on_conflict(spec, db_cols, backend));
    let sql: Arc<str> = sql.into();
    cache.insert(key, sql.clone());
    sql
}

/// `ON CONFLICT (key) DO UPDATE SET <other columns> WHERE <something changed>` (or `DO
/// NOTHING` when every column is in the key).
fn on_conflict(spec: &FileSpec, db_cols: &[&'static str], backend: Backend) -> String {
    let updates: Vec<&str> = db_cols
        .iter()
        .copied()
        .filter(|c| !spec.key.contains(c))
        .collect();
    let mut sql = format!("ON CONFLICT ({}) ", spec.key.join(", "));
    if updates.is_empty() {
        sql.push_str("DO NOTHING");
    } else {
        let set: Vec<String> = updates
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let distinct = match backend {
            Backend::Sqlite => "IS NOT",
            Backend::Postgres => "IS DISTINCT FROM",
        };
        let changed: Vec<String> = updates
            .iter()
            .map(|c| format!("{}.{c} {distinct} excluded.{c}", spec.table))
            .collect();
        sql.push_str(&format!(
            "DO UPDATE SET {} WHERE {}",
            set.join(", "),
            changed.join(" OR ")
        ));
    }
    sql
}

/// The `i`-th (1-based) bind parameter. SQLite gets anonymous `?`: sqlx resolves a named
/// parameter such as `$7` through `sqlite3_bind_parameter_name`, a linear search per parameter,
/// which made 3,000-parameter batches quadratic (80% of import time in a profile).
fn param(backend: Backend, i: usize) -> String {
    let mut s = String::new();
    push_param(&mut s, backend, i);
    s
}

fn push_param(sql: &mut String, backend: Backend, i: usize) {
    match backend {
        Backend::Sqlite => sql.push('?'),
        Backend::Postgres => {
            sql.push('$');
            sql.push_str(&i.to_string());
        }
    }
}

/// Why a row with `got` fields, under a header of `header`, is rejected.
fn field_count_reason(got: usize, header: usize) -> String {
    if got > header {
        format!(
            "{got} fields, header has {header} — an unquoted comma? (quote values that contain commas)"
        )
    } else {
        format!("{got} fields, header has {header} — a missing field?")
    }
}

/// Reads `inner` with every line end as `\n`: `\r\n` (Excel and Windows exports) and a lone
/// `\r` (old Mac exports) become `\n`, and input that does not end with one gets one. The csv
/// reader ends a CRLF record at its `\r` and counts the `\n` into the next record, so every
/// line number after the header was one too low; with `\n` alone, and a final one, the
/// reader's line after each record is exact. Inside quoted values a CRLF becomes `\n` too.
struct LineEnds<R> {
    inner: R,
    /// The last byte read was a `\r`: a `\n` first in the next read belongs to it.
    after_cr: bool,
    /// The last byte handed out.
    last: Option<u8>,
    eof: bool,
}

impl<R: Read> LineEnds<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            after_cr: false,
            last: None,
            eof: false,
        }
    }
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.eof {
                return Ok(0);
            }
            let n = self.inner.read(buf)?;
            if n == 0 {
                self.eof = true;
                if self.last.is_some_and(|b| b != b'\n') {
                    buf[0] = b'\n';
                    return Ok(1);
                }
                return Ok(0);
            }
            // Compacted in place: bytes only ever move towards the front.
            let (mut r, mut w) = (0, 0);
            if std::mem::take(&mut self.after_cr) && buf[0] == b'\n' {
                r = 1;
            }
            while r < n {
                let Some(i) = memchr::memchr(b'\r', &buf[r..n]) else {
                    buf.copy_within(r..n, w);
                    w += n - r;
                    break;
                };
                buf.copy_within(r..r + i, w);
                w += i;
                buf[w] = b'\n';
                w += 1;
                r += i + 1;
                if r == n {
                    self.after_cr = true;
                } else if buf[r] == b'\n' {
                    r += 1;
                }
            }
            if w > 0 {
                self.last = Some(buf[w - 1]);
                return Ok(w);
            }
        }
    }
}

/// Writes rejected rows (original fields, plus line and reasons) to `rejected/<file>`.
struct RejectedWriter {
    file: &'static str,
    header: csv::ByteRecord,
    writer: Option<csv::Writer<File>>,
    reasons: Vec<String>,
}

impl RejectedWriter {
    fn new(file: &'static str, header: &csv::ByteRecord) -> Self {
        Self {
            file,
            header: header.clone(),
            writer: None,
            reasons: Vec::new(),
        }
    }

    fn note(&mut self, reason: &str, column: &str) {
        self.reasons.push(if column.is_empty() {
            reason.to_string()
        } else {
            format!("{column}: {reason}")
        });
    }

    fn write(&mut self, dir: &Path, line: u64, record: &csv::ByteRecord) -> std::io::Result<()> {
        if self.writer.is_none() {
            std::fs::create_dir_all(dir)?;
            let mut w = csv::Writer::from_writer(File::create(dir.join(self.file))?);
            // Every cell is the input's own text (the header too): neutralized for spreadsheets.
            let mut header = crate::csv_safe::neutralize_record(&self.header);
            header.push_field(b"_line");
            header.push_field(b"_reasons");
            w.write_byte_record(&header)?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("just created");
        // One cell per header column, whatever the row had (the csv writer refuses a row
        // longer or shorter than the header): a short row is padded, and the fields past the
        // header's last column go into it, joined by commas as they were in the input.
        let n = self.header.len();
        let mut out = crate::csv_safe::neutralize_record(record);
        if out.len() > n {
            let mut last = Vec::new();
            for (i, f) in record.iter().enumerate().skip(n.saturating_sub(1)) {
                if i >= n {
                    last.push(b',');
                }
                last.extend_from_slice(f);
            }
            let mut fitted = csv::ByteRecord::new();
            for f in out.iter().take(n.saturating_sub(1)) {
                fitted.push_field(f);
            }
            fitted.push_field(&crate::csv_safe::neutralize_bytes(&last));
            out = fitted;
        }
        while out.len() < n {
            out.push_field(b"");
        }
        out.push_field(line.to_string().as_bytes());
        out.push_field(&crate::csv_safe::neutralize_bytes(
            self.reasons.join("; ").as_bytes(),
        ));
        self.reasons.clear();
        w.write_byte_record(&out)?;
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `LineEnds` hands out for `input` read `chunk` bytes at a time.
    fn line_ends(input: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        LineEnds::new(Chunked(input, chunk))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn line_ends_become_lf_across_read_boundaries() {
        for chunk in [1, 2, 3, 7, 1024] {
            assert_eq!(
                line_ends(b"a,b\r\nc,\"d\r\ne\"\r\n", chunk),
                b"a,b\nc,\"d\ne\"\n",
                "{chunk}"
            );
            assert_eq!(line_ends(b"a\rb\r\rc", chunk), b"a\nb\n\nc\n", "{chunk}");
            assert_eq!(line_ends(b"a\nb\n", chunk), b"a\nb\n", "{chunk}");
            assert_eq!(line_ends(b"a\r\n\r\nb", chunk), b"a\n\nb\n", "{chunk}");
            assert_eq!(line_ends(b"", chunk), b"");
        }
    }

    /// Line numbers of rows (the first line of each), as the parser computes them, for LF,
    /// CRLF and CR files, with blank lines and quoted line breaks.
    #[test]
    fn record_lines_are_exact_for_every_line_end() {
        let lf = "h1,h2\nA,1\n\nB,\"two\nlines\"\nC,3\nD,\"x\n\ny\"\nE,5";
        for text in [
            lf.to_string(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(LineEnds::new(text.as_bytes()));
            let mut record = csv::ByteRecord::new();
            let mut lines = Vec::new();
            while rdr.read_byte_record(&mut record).unwrap() {
                let breaks = record.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
                lines.push((
                    String::from_utf8_lossy(&record[0]).into_owned(),
                    rdr.position().line() - 1 - breaks,
                ));
            }
            let expected: Vec<(String, u64)> =
                [("h1", 1), ("A", 2), ("B", 4), ("C", 6), ("D", 7), ("E", 10)]
                    .iter()
                    .map(|(k, l)| (k.to_string(), *l))
                    .collect();
            assert_eq!(lines, expected, "{text:?}");
        }
    }

    #[test]
    fn event_digest_is_stable_and_discriminating() {
        let a = vec![Val::Text(Some("C1".into())), Val::Int(Some(5))];
        let b = vec![Val::Text(Some("C1".into())), Val::Int(Some(6))];
        assert_eq!(event_digest(&a), event_digest(&a.clone()));
        assert_ne!(event_digest(&a), event_digest(&b));
        // Pinned: stored keys must not change between releases.
        assert_eq!(event_digest(&a).len(), 34);
    }

    /// Reads COPY text back the way PostgreSQL does (tab-separated fields, `\N` = NULL,
    /// backslash escapes), to check what [`push_copy_row`] writes.
    fn read_copy_row(line: &[u8]) -> Vec<Option<Vec<u8>>> {
        let line = line.strip_suffix(b"\n").expect("a row ends with a newline");
        assert!(
            !line.contains(&b'\n') && !line.contains(&b'\r'),
            "raw line break inside a row: {line:?}"
        );
        line.split(|&b| b == b'\t')
            .map(|field| {
                if field == b"\\N" {
                    return None;
                }
                let mut out = Vec::new();
                let mut bytes = field.iter();
                while let Some(&b) = bytes.next() {
                    if b != b'\\' {
                        out.push(b);
                        continue;
                    }
                    match bytes.next() {
                        Some(b't') => out.push(b'\t'),
                        Some(b'n') => out.push(b'\n'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b'\\') => out.push(b'\\'),
                        other => panic!("escape PostgreSQL would read differently: \\{other:?}"),
                    }
                }
                Some(out)
            })
            .collect()
    }

    /// Values COPY's text format treats specially, plus ordinary and non-ASCII ones.
    fn tricky_values() -> Vec<Val> {
        vec![
            Val::Text(Some("plain".into())),
            Val::Text(Some("tab\there".into())),
            Val::Text(Some("line\nbreak\r\nand CR\r".into())),
            Val::Text(Some(r"back\slash\\ and \N and \. and \t".into())),
            Val::Text(Some("\\".into())),
            Val::Text(Some("\\.".into())),
            Val::Text(Some(String::new())),
            Val::Text(None),
            Val::Text(Some(r"\N".into())),
            Val::Text(Some("ünïcödé ✓ 日本 \u{2028} \u{1}\u{b}\u{c}\u{7f}".into())),
            Val::Text(Some(r#"{"tier":"a\"b\\c\nd"}"#.into())),
            Val::Int(Some(0)),
            Val::Int(Some(i64::MIN)),
            Val::Int(Some(i64::MAX)),
            Val::Int(None),
            Val::Real(Some(0.1)),
            Val::Real(Some(1.0 / 3.0)),
            Val::Real(Some(-0.0)),
            Val::Real(Some(5e-324)),
            Val::Real(Some(1e21)),
            Val::Real(Some(f64::MAX)),
            Val::Real(None),
            Val::Bool(true),
            Val::Bool(false),
        ]
    }

    #[test]
    fn copy_text_escapes_what_copy_would_read_otherwise() {
        let mut out = Vec::new();
        push_copy_row(
            &mut out,
            &[
                Val::Text(Some("a\tb\nc\rd\\e".into())),
                Val::Text(Some(String::new())),
                Val::Text(None),
                Val::Text(Some(r"\N".into())),
                Val::Text(Some("é✓".into())),
                Val::Int(Some(-42)),
                Val::Real(Some(12.5)),
                Val::Bool(true),
                Val::Bool(false),
            ],
        );
        assert_eq!(
            out,
            "a\\tb\\nc\\rd\\\\e\t\t\\N\t\\\\N\té✓\t-42\t12.5\tt\tf\n".as_bytes()
        );

        let vals = tricky_values();
        let mut out = Vec::new();
        push_copy_row(&mut out, &vals);
        let fields = read_copy_row(&out);
        assert_eq!(fields.len(), vals.len());
        for (v, f) in vals.iter().zip(&fields) {
            let text = f.as_ref().map(|b| String::from_utf8(b.clone()).unwrap());
            match v {
                Val::Text(s) => assert_eq!(&text, s),
                Val::Int(i) => assert_eq!(text.map(|t| t.parse::<i64>().unwrap()), *i),
                // The same bits: no rounding on the way.
                Val::Real(r) => assert_eq!(
                    text.as_deref().map(|t| t.parse::<f64>().unwrap().to_bits()),
                    r.map(f64::to_bits),
                    "{text:?}"
                ),
                Val::Bool(b) => assert_eq!(text.as_deref(), Some(if *b { "t" } else { "f" })),
                Val::Bytes(_) => unreachable!(),
            }
        }
    }

    /// The same values through a real COPY, when a PostgreSQL server is configured
    /// (`RETENTIOND_TEST_POSTGRES_URL`; required when `CI` is set, as for the integration tests).
    #[tokio::test]
    async fn copy_text_round_trips_through_postgres() {
        use sqlx::{Connection, Row};
        let url = match std::env::var("RETENTIOND_TEST_POSTGRES_URL") {
            Ok(u) => u,
            Err(_) if std::env::var_os("CI").is_some() => {
                "postgres://postgres@127.0.0.1:5432/test".into()
            }
            Err(_) => {
                // Straight to stderr: `eprintln!` is captured by the test harness and never shown.
                let _ = std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED: set RETENTIOND_TEST_POSTGRES_URL to round-trip COPY text through PostgreSQL\n");
                return;
            }
        };
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("PostgreSQL is reachable");
        let vals = tricky_values();
        let columns: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ty = match v {
                    Val::Text(_) => "TEXT",
                    Val::Int(_) => "BIGINT",
                    Val::Real(_) => "DOUBLE PRECISION",
                    Val::Bool(_) => "BOOLEAN",
                    Val::Bytes(_) => unreachable!(),
                };
                format!("c{i} {ty}")
            })
            .collect();
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TEMP TABLE copy_escape ({})",
            columns.join(", ")
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let mut data = Vec::new();
        push_copy_row(&mut data, &vals);
        push_copy_row(&mut data, &vals);
        let mut copy = conn
            .copy_in_raw("COPY copy_escape FROM STDIN")
            .await
            .unwrap();
        copy.send(data).await.unwrap();
        assert_eq!(copy.finish().await.unwrap(), 2);
        let rows = sqlx::query("SELECT * FROM copy_escape")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        for row in rows {
            for (i, v) in vals.iter().enumerate() {
                let got = match v {
                    Val::Text(_) => Val::Text(row.get(i)),
                    Val::Int(_) => Val::Int(row.get(i)),
                    Val::Real(r) => {
                        let got: Option<f64> = row.get(i);
                        assert_eq!(got.map(f64::to_bits), r.map(f64::to_bits), "column {i}");
                        Val::Real(got)
                    }
                    Val::Bool(_) => Val::Bool(row.get(i)),
                    Val::Bytes(_) => unreachable!(),
                };
                assert_eq!(&got, v, "column {i}");
            }
        }
    }

    #[test]
    fn attributes_are_one_sorted_json_object() {
        let attrs = Attributes::new(vec![
            ("tier".into(), "Tier".into(), 2),
            ("channel".into(), "channel".into(), 0),
        ]);
        let object = |fields: &[&str]| {
            let mut problems = Vec::new();
            let json = attrs.object(&csv::ByteRecord::from(fields.to_vec()), &mut problems);
            (json, problems)
        };
        assert_eq!(
            object(&[" web ", "C1", "gold"]),
            (
                Some(r#"{"channel":"web","tier":"gold"}"#.to_string()),
                vec![]
            )
        );
        assert_eq!(
            object(&["", "C1", "a\"b\\c\nd\n"]),
            (Some(r#"{"tier":"a\"b\\c\nd"}"#.to_string()), vec![])
        );
        assert_eq!(object(&["  ", "C1", ""]), (None, vec![]));
        // The limit counts characters, not bytes.
        let at_limit = "é".repeat(MAX_ATTRIBUTE_CHARS);
        assert!(object(&["", "C1", &at_limit]).1.is_empty());
        let over = "é".repeat(MAX_ATTRIBUTE_CHARS + 1);
        let (_, problems) = object(&["", "C1", &over]);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            (problems[0].0.as_str(), problems[0].1.chars().count()),
            ("Tier", 64)
        );
        assert!(
            problems[0].2.contains("1001 characters"),
            "{:?}",
            problems[0]
        );
    }
}
