//! Bulk reads of query results, row by row, without materializing them.
//!
//! On SQLite, sqlx decodes every row into an owned value and ships it from its worker thread
//! over a channel (~2–3 µs a row: a minute for the 20 M order lines and events behind a 1 M
//! customer training run). Here the query runs on the connection's raw handle through the C API,
//! reading columns in place. PostgreSQL rows stream through sqlx as usual. Both present a row
//! through [`ScanRow`], so the loaders have one code path.

use futures_util::TryStreamExt;
use sqlx::Row;

use crate::db::Db;

/// Read access to the current row's columns (0-based).
pub trait ScanRow {
    fn text(&self, i: usize) -> anyhow::Result<Option<&str>>;
    fn int(&self, i: usize) -> anyhow::Result<Option<i64>>;
    fn real(&self, i: usize) -> anyhow::Result<Option<f64>>;
}

/// A value bound to `$1, $2, …` of a scan.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Int(i64),
    Text(&'a str),
}

/// Runs `sql` with integer binds `$1, $2, …` and calls `f` on every row.
pub async fn scan(db: &Db, sql: &str, binds: &[i64], f: impl FnMut(&dyn ScanRow) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let binds: Vec<Bind<'_>> = binds.iter().map(|b| Bind::Int(*b)).collect();
    scan_with(db, sql, &binds, f).await
}

/// Runs `sql` with integer or text binds and calls `f` on every row.
pub async fn scan_with(db: &Db, sql: &str, binds: &[Bind<'_>], mut f: impl FnMut(&dyn ScanRow) -> anyhow::Result<()>) -> anyhow::Result<()> {
    match db {
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            let mut handle = conn.lock_handle().await?;
            let raw = handle.as_raw_handle();
            // The scan is CPU-bound C calls: keep the runtime's other tasks moving.
            let mut run = || sqlite::scan(raw.as_ptr(), sql, binds, &mut f);
            match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => run(),
                _ => tokio::task::block_in_place(run),
            }
        }
        Db::Postgres(pool) => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in binds {
                q = match *b {
                    Bind::Int(i) => q.bind(i),
                    Bind::Text(t) => q.bind(t),
                };
            }
            let mut rows = q.fetch(pool);
            while let Some(row) = rows.try_next().await? {
                f(&PgScanRow(&row))?;
            }
            Ok(())
        }
    }
}

struct PgScanRow<'r>(&'r sqlx::postgres::PgRow);

impl ScanRow for PgScanRow<'_> {
    fn text(&self, i: usize) -> anyhow::Result<Option<&str>> {
        Ok(self.0.try_get(i)?)
    }
    fn int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        // BIGINT columns, and INTEGER expressions such as `CASE … THEN 1 ELSE 0 END`.
        match self.0.try_get::<Option<i64>, _>(i) {
            Ok(v) => Ok(v),
            Err(e) => match self.0.try_get::<Option<i32>, _>(i) {
                Ok(v) => Ok(v.map(i64::from)),
                Err(_) => Err(e.into()),
            },
        }
    }
    fn real(&self, i: usize) -> anyhow::Result<Option<f64>> {
        Ok(self.0.try_get(i)?)
    }
}

mod sqlite {
    use std::ffi::{CStr, c_int};

    use anyhow::bail;
    use libsqlite3_sys as ffi;

    use super::ScanRow;

    struct Stmt(*mut ffi::sqlite3_stmt);

    impl Drop for Stmt {
        fn drop(&mut self) {
            // SAFETY: the statement came from sqlite3_prepare_v2 and is finalized once.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }

    struct Row<'s>(&'s Stmt);

    fn error(db: *mut ffi::sqlite3) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy().into_owned() }
    }

    pub(super) fn scan(
        db: *mut ffi::sqlite3,
        sql: &str,
        binds: &[super::Bind<'_>],
        f: &mut dyn FnMut(&dyn ScanRow) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `db` is a live connection locked for this thread by sqlx's LockedSqliteHandle;
        // `sql` outlives the call and its length is passed explicitly.
        let rc = unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), sql.len() as c_int, &mut raw, std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            bail!("cannot prepare {sql:?}: {}", error(db));
        }
        let stmt = Stmt(raw);
        for (i, b) in binds.iter().enumerate() {
            // SAFETY: valid statement, 1-based parameter index; SQLITE_TRANSIENT makes SQLite
            // copy the text before the call returns.
            let rc = unsafe {
                match *b {
                    super::Bind::Int(v) => ffi::sqlite3_bind_int64(stmt.0, i as c_int + 1, v),
                    super::Bind::Text(t) => ffi::sqlite3_bind_text(stmt.0, i as c_int + 1, t.as_ptr().cast(), t.len() as c_int, ffi::SQLITE_TRANSIENT()),
                }
            };
            if rc != ffi::SQLITE_OK {
                bail!("cannot bind parameter {} of {sql:?}: {}", i + 1, error(db));
            }
        }
        loop {
            // SAFETY: valid statement.
            match unsafe { ffi::sqlite3_step(stmt.0) } {
                ffi::SQLITE_ROW => f(&Row(&stmt))?,
                ffi::SQLITE_DONE => return Ok(()),
                _ => bail!("query {sql:?} failed: {}", error(db)),
            }
        }
    }

    impl Row<'_> {
        fn is_null(&self, i: usize) -> bool {
            // SAFETY: valid statement positioned on a row; out-of-range columns read as NULL.
            unsafe { ffi::sqlite3_column_type(self.0.0, i as c_int) == ffi::SQLITE_NULL }
        }
    }

    impl ScanRow for Row<'_> {
        fn text(&self, i: usize) -> anyhow::Result<Option<&str>> {
            if self.is_null(i) {
                return Ok(None);
            }
            // SAFETY: the pointer and length describe the column's UTF-8 text, valid until the
            // next step; the borrow of `self` (and so of the statement) ends before that.
            let bytes = unsafe {
                let p = ffi::sqlite3_column_text(self.0.0, i as c_int);
                let n = ffi::sqlite3_column_bytes(self.0.0, i as c_int);
                if p.is_null() { &[][..] } else { std::slice::from_raw_parts(p, n as usize) }
            };
            Ok(Some(std::str::from_utf8(bytes)?))
        }
        fn int(&self, i: usize) -> anyhow::Result<Option<i64>> {
            // SAFETY: valid statement positioned on a row.
            Ok((!self.is_null(i)).then(|| unsafe { ffi::sqlite3_column_int64(self.0.0, i as c_int) }))
        }
        fn real(&self, i: usize) -> anyhow::Result<Option<f64>> {
            // SAFETY: valid statement positioned on a row.
            Ok((!self.is_null(i)).then(|| unsafe { ffi::sqlite3_column_double(self.0.0, i as c_int) }))
        }
    }
}
