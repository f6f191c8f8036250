//! Test databases on both backends.
//!
//! SQLite tests need nothing. PostgreSQL tests connect to `RETENTIOND_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`), create a fresh database per test and
//! drop it afterwards. Without a server they print why they skip, unless `CI` is set, where
//! PostgreSQL is required and its absence fails the test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use retentiond::config::DatabaseSettings;
use retentiond::db::Db;
use sqlx::Connection;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestDb {
    pub db: Db,
    pub url: String,
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_drop.take() {
            // Drop runs outside any runtime guarantee: use a small one of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: url.to_string(),
        max_connections: 4,
        busy_timeout_ms: 30_000,
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let db = Db::connect_and_migrate(&settings(&url)).await.unwrap();
    TestDb {
        db,
        url,
        name: "sqlite",
        _dir: Some(dir),
        pg_drop: None,
    }
}

pub fn pg_admin_url() -> String {
    std::env::var("RETENTIOND_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

/// A fresh PostgreSQL database, or `None` (with a printed reason) when none is reachable
/// outside CI.
pub async fn postgres() -> Option<TestDb> {
    static N: AtomicU32 = AtomicU32::new(0);
    let admin = pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "CI is set, so PostgreSQL tests are required, but {admin} is unreachable: {e}"
                );
            }
            skipped(&format!(
                "PostgreSQL test: cannot connect to {admin} ({e}); set RETENTIOND_TEST_POSTGRES_URL or start PostgreSQL"
            ));
            return None;
        }
    };
    let name = format!(
        "rtd_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        rand_suffix()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("bad admin URL {admin}"),
    };
    let db = Db::connect_and_migrate(&settings(&url)).await.unwrap();
    Some(TestDb {
        db,
        url,
        name: "postgres",
        _dir: None,
        pg_drop: Some((admin, name)),
    })
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1_000_000
}

/// Defines two tests, one per backend, that run `body(TestDb)`.
#[macro_export]
macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $body:path) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            $body($crate::helpers::sqlite().await).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            if let Some(t) = $crate::helpers::postgres().await {
                $body(t).await;
            }
        }
    };
}

/// Writes `files` (name, content) into a fresh temp folder.
pub fn write_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

/// Says that a test skipped and why, on the process's stderr: `eprintln!` would be swallowed by
/// the test harness's output capture, so a skipped test would look like a passed one.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// A folder of the shared reference data (`../shared/data` beside the repository, or
/// `RETENTIOND_SHARED_DATA`), or `None` with a visible `SKIPPED:` line; with `CI` set it must
/// be there, so a real-data test cannot pass without its data.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let root = std::env::var_os("RETENTIOND_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let p = root.join(rel);
    if p.exists() {
        return Some(p);
    }
    let why = format!(
        "{} not found (the shared reference data sits beside the repository, or set RETENTIOND_SHARED_DATA)",
        p.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so the real-data tests are required, but {why}");
    }
    skipped(&why);
    None
}

/// Row counts of every raw table, to show a failed import changed nothing.
pub async fn table_counts(db: &Db) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for t in [
        "customers",
        "products",
        "orders",
        "order_items",
        "sessions",
        "events",
    ] {
        out.push((t, db.count(t).await.unwrap()));
    }
    out
}

/// A digest of the raw tables' contents (not just counts).
pub async fn table_digest(db: &Db) -> String {
    let sqls = [
        "SELECT customer_id || '|' || COALESCE(email,'') || '|' || COALESCE(first_name,'') || '|' || CASE WHEN email_opt_in THEN 1 ELSE 0 END FROM customers ORDER BY customer_id",
        "SELECT order_id || '|' || customer_id || '|' || CAST(ordered_at AS TEXT) || '|' || status || '|' || COALESCE(CAST(total_amount AS TEXT),'') FROM orders ORDER BY order_id",
        "SELECT order_id || '|' || product_id || '|' || CAST(quantity AS TEXT) FROM order_items ORDER BY order_id, product_id",
        "SELECT product_id || '|' || category FROM products ORDER BY product_id",
        "SELECT event_key || '|' || event_type FROM events ORDER BY event_key",
        "SELECT session_id || '|' || customer_id FROM sessions ORDER BY session_id",
    ];
    let mut out = String::new();
    for sql in sqls {
        let rows: Vec<String> = retentiond::with_pool!(&db, p => sqlx::query_scalar::<_, String>(sql).fetch_all(p).await.unwrap());
        out.push_str(&rows.join("\n"));
        out.push('#');
    }
    out
}
