//! The database: SQLite (embedded default) or PostgreSQL (production, several replicas),
//! behind one enum so the rest of the code has a single path.
//!
//! SQL is written once with `$1` placeholders, which both backends accept, and executed through
//! [`with_pool!`], which type-checks the same body against each concrete pool. `sqlx::Any` is
//! avoided on purpose (it has no date/time types). Migrations live in one folder per backend
//! and are embedded in the binary.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

// Dynamic SQL here is assembled only from contract constants (table and column names);
// every value is bound, never interpolated.
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{DatabaseSettings, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url}: {source}")]
    BadUrl { url: String, source: sqlx::Error },
    #[error("cannot create the directory for the SQLite database {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrations failed on {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool on either backend.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`; the body is compiled once
/// per backend, so it may use backend-specific types where it needs to.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Connects without migrating.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Db, DbError> {
        let url = settings.url.as_str();
        let shown = redact_url(url);
        let timeout = Duration::from_millis(settings.busy_timeout_ms);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url).map_err(|source| DbError::BadUrl {
                url: shown.clone(),
                source,
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await
                .map_err(|source| DbError::Connect { url: shown, source })?;
            Ok(Db::Postgres(pool))
        } else {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|source| DbError::BadUrl {
                    url: shown.clone(),
                    source,
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout)
                .pragma("cache_size", "-65536")
                .pragma("temp_store", "memory");
            let path = opts.get_filename();
            if let Some(dir) = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.exists())
            {
                std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
                    path: path.display().to_string(),
                    source,
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await
                .map_err(|source| DbError::Connect { url: shown, source })?;
            Ok(Db::Sqlite(pool))
        }
    }

    /// Connects and applies pending migrations: what every command does at start.
    pub async fn connect_and_migrate(settings: &DatabaseSettings) -> Result<Db, DbError> {
        let db = Db::connect(settings).await?;
        db.migrate(&settings.url).await?;
        Ok(db)
    }

    pub async fn migrate(&self, url: &str) -> Result<(), DbError> {
        let res = match self {
            Db::Sqlite(p) => {
                // Index builds sort through temp storage: on files, not in memory, so building
                // an index on a large table stays within the memory budget.
                let mut conn = p.acquire().await.map_err(|e| DbError::Migrate {
                    url: redact_url(url),
                    source: e.into(),
                })?;
                let _ = sqlx::query("PRAGMA temp_store = FILE")
                    .execute(&mut *conn)
                    .await;
                let res = SQLITE_MIGRATOR.run(&mut *conn).await;
                let _ = sqlx::query("PRAGMA temp_store = MEMORY")
                    .execute(&mut *conn)
                    .await;
                res
            }
            Db::Postgres(p) => POSTGRES_MIGRATOR.run(p).await,
        };
        res.map_err(|source| DbError::Migrate {
            url: redact_url(url),
            source,
        })
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    /// Closes the pool's idle connections, keeping the pool usable (it opens new ones when
    /// next asked): on SQLite, so that another connection can find the database not in use.
    pub async fn close_idle(&self) {
        with_pool!(self, p => {
            while let Some(conn) = p.try_acquire() {
                let _ = conn.close().await;
            }
        })
    }

    /// Row count of a table; `table` must be a trusted identifier.
    pub async fn count(&self, table: &str) -> sqlx::Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        with_pool!(self, p => sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.as_str())).fetch_one(p).await)
    }
}

/// Returns true when `path` looks like a SQLite database URL's file (for messages).
pub fn sqlite_path(url: &str) -> Option<&Path> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| Path::new(p.split('?').next().unwrap_or(p)))
}

/// A value bound into a statement built at run time (bulk upserts, dynamic column sets).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// An open transaction on either backend.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

macro_rules! bind_vals {
    ($q:expr, $vals:expr) => {{
        let mut q = $q;
        for v in $vals {
            q = match v {
                Val::Text(s) => q.bind(s.as_deref()),
                Val::Int(i) => q.bind(*i),
                Val::Real(r) => q.bind(*r),
                Val::Bool(b) => q.bind(*b),
                Val::Bytes(b) => q.bind(b.as_slice()),
            };
        }
        q
    }};
}

impl Db {
    pub async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match self {
            Db::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }
}

impl Tx {
    /// Executes `sql` with positional values; returns rows affected.
    pub async fn execute(&mut self, sql: &str, vals: &[Val]) -> sqlx::Result<u64> {
        Ok(match self {
            Tx::Sqlite(tx) => bind_vals!(sqlx::query(AssertSqlSafe(sql)), vals)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Postgres(tx) => bind_vals!(sqlx::query(AssertSqlSafe(sql)), vals)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a query returning one text column.
    pub async fn fetch_strings(&mut self, sql: &str, vals: &[Val]) -> sqlx::Result<Vec<String>> {
        match self {
            Tx::Sqlite(tx) => {
                bind_vals!(sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)), vals)
                    .fetch_all(&mut **tx)
                    .await
            }
            Tx::Postgres(tx) => {
                bind_vals!(sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)), vals)
                    .fetch_all(&mut **tx)
                    .await
            }
        }
    }

    /// Runs a query returning one integer.
    pub async fn fetch_i64(&mut self, sql: &str, vals: &[Val]) -> sqlx::Result<i64> {
        match self {
            Tx::Sqlite(tx) => {
                bind_vals!(sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)), vals)
                    .fetch_one(&mut **tx)
                    .await
            }
            Tx::Postgres(tx) => {
                bind_vals!(sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)), vals)
                    .fetch_one(&mut **tx)
                    .await
            }
        }
    }

    pub async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }
}

/// `(…), (…)` value tuples for a multi-row INSERT of `rows × cols` parameters. SQLite gets
/// anonymous `?` (sqlx's `$N` lookup is quadratic in the parameter count there).
pub fn value_tuples(backend: Backend, rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 4);
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

impl Tx {
    /// Inserts `rows` (each `columns.len()` values) into `table` in multi-row statements.
    /// `table` and `columns` must be trusted identifiers.
    pub async fn insert_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[Vec<Val>],
    ) -> sqlx::Result<u64> {
        let cols = columns.len();
        // Stay under SQLite's 32766-parameter limit; PostgreSQL allows 65535.
        let per = (30_000 / cols.max(1)).max(1);
        let mut written = 0;
        for chunk in rows.chunks(per) {
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES {}",
                columns.join(", "),
                value_tuples(self.backend(), chunk.len(), cols)
            );
            let vals: Vec<Val> = chunk.iter().flat_map(|r| r.iter().cloned()).collect();
            written += self.execute(&sql, &vals).await?;
        }
        Ok(written)
    }
}
