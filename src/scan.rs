//! Bulk reads of query results, row by row, without materializing them.
//!
//! On SQLite, sqlx decodes every row into an owned value and ships it from its worker thread
//! over a channel (~2–3 µs a row: a minute for the 20 M order lines and events behind a 1 M
//! customer training run). Here the query runs on the connection's raw handle through the C API,
//! reading columns in place. On PostgreSQL the query runs as `COPY (…) TO STDOUT` and its text
//! rows are split in place. Both present a row through [`ScanRow`], so the loaders have one
//! code path.

use futures_util::TryStreamExt;

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
pub async fn scan(
    db: &Db,
    sql: &str,
    binds: &[i64],
    f: impl FnMut(&dyn ScanRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let binds: Vec<Bind<'_>> = binds.iter().map(|b| Bind::Int(*b)).collect();
    scan_with(db, sql, &binds, f).await
}

/// Runs `sql` with integer or text binds and calls `f` on every row.
pub async fn scan_with(
    db: &Db,
    sql: &str,
    binds: &[Bind<'_>],
    mut f: impl FnMut(&dyn ScanRow) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
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
            // `COPY (query) TO STDOUT`: the server writes rows as text and they are split here
            // in place, instead of a decoded `PgRow` per row (at 1 M customers, the 19 M order
            // rows and lines of a score took 20 s through rows). COPY takes no parameters, so
            // the values are written into the query as literals.
            let copy = format!("COPY ({}) TO STDOUT", inline_binds(sql, binds));
            let mut conn = pool.acquire().await?;
            let mut stream = conn.copy_out_raw(&copy).await?;
            let mut reader = copy_text::Reader::default();
            let mut failed: Option<anyhow::Error> = None;
            while let Some(chunk) = stream.try_next().await? {
                // After a failure the rest is drained, so the connection leaves COPY mode.
                if failed.is_none()
                    && let Err(e) = reader.feed(&chunk, &mut f)
                {
                    failed = Some(e);
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            reader.finish(&mut f)
        }
    }
}

/// `sql` with each `$N` outside quoted strings replaced by bind N as a literal: integers as
/// `(123)` (parenthesized, so `a -$1` cannot become a `--` comment), text as an escape string
/// `E'…'` with backslashes and quotes doubled, which reads the same whatever
/// `standard_conforming_strings` is.
fn inline_binds(sql: &str, binds: &[Bind<'_>]) -> String {
    let mut out = String::with_capacity(sql.len() + binds.len() * 12);
    let mut chars = sql.char_indices();
    let mut quoted = false;
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        } else if c == '$' && !quoted {
            let digits = sql[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let bind = sql[i + 1..i + 1 + digits]
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|k| binds.get(k));
            if let Some(bind) = bind {
                match *bind {
                    Bind::Int(v) => out.push_str(&format!("({v})")),
                    Bind::Text(t) => {
                        out.push_str("E'");
                        out.push_str(&t.replace('\\', "\\\\").replace('\'', "''"));
                        out.push('\'');
                    }
                }
                for _ in 0..digits {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// PostgreSQL's `COPY … TO STDOUT` text format: one row a line, columns separated by tabs,
/// `\N` for NULL, and backslash escapes inside values.
mod copy_text {
    use super::ScanRow;

    #[derive(Default)]
    pub(super) struct Reader {
        /// The start of a line cut off by the end of the previous chunk.
        carry: Vec<u8>,
        row: Row,
    }

    #[derive(Default)]
    struct Row {
        /// The line's values, unescaped, back to back.
        data: Vec<u8>,
        /// Per column, its range in `data` (None: NULL).
        fields: Vec<Option<(usize, usize)>>,
    }

    impl Reader {
        pub(super) fn feed(
            &mut self,
            chunk: &[u8],
            f: &mut dyn FnMut(&dyn ScanRow) -> anyhow::Result<()>,
        ) -> anyhow::Result<()> {
            let mut rest = chunk;
            if !self.carry.is_empty() {
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    self.carry.extend_from_slice(rest);
                    return Ok(());
                };
                self.carry.extend_from_slice(&rest[..nl]);
                let line = std::mem::take(&mut self.carry);
                self.row.parse(&line)?;
                f(&self.row)?;
                self.carry = line;
                self.carry.clear();
                rest = &rest[nl + 1..];
            }
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                self.row.parse(&rest[..nl])?;
                f(&self.row)?;
                rest = &rest[nl + 1..];
            }
            self.carry.extend_from_slice(rest);
            Ok(())
        }

        pub(super) fn finish(
            &mut self,
            f: &mut dyn FnMut(&dyn ScanRow) -> anyhow::Result<()>,
        ) -> anyhow::Result<()> {
            if self.carry.is_empty() {
                return Ok(());
            }
            let line = std::mem::take(&mut self.carry);
            self.row.parse(&line)?;
            f(&self.row)
        }
    }

    impl Row {
        fn parse(&mut self, line: &[u8]) -> anyhow::Result<()> {
            self.data.clear();
            self.fields.clear();
            for field in line.split(|&b| b == b'\t') {
                if field == b"\\N" {
                    self.fields.push(None);
                    continue;
                }
                let start = self.data.len();
                let mut i = 0;
                while i < field.len() {
                    let b = field[i];
                    if b != b'\\' || i + 1 == field.len() {
                        self.data.push(b);
                        i += 1;
                        continue;
                    }
                    let e = field[i + 1];
                    i += 2;
                    match e {
                        b'n' => self.data.push(b'\n'),
                        b't' => self.data.push(b'\t'),
                        b'r' => self.data.push(b'\r'),
                        b'b' => self.data.push(0x08),
                        b'f' => self.data.push(0x0c),
                        b'v' => self.data.push(0x0b),
                        b'0'..=b'7' => {
                            // Up to three octal digits.
                            let mut v = u32::from(e - b'0');
                            let mut k = 0;
                            while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                                v = v * 8 + u32::from(field[i] - b'0');
                                i += 1;
                                k += 1;
                            }
                            self.data.push(v as u8);
                        }
                        other => self.data.push(other),
                    }
                }
                self.fields.push(Some((start, self.data.len())));
            }
            Ok(())
        }

        fn field(&self, i: usize) -> anyhow::Result<Option<&[u8]>> {
            match self.fields.get(i) {
                Some(Some((a, b))) => Ok(Some(&self.data[*a..*b])),
                Some(None) => Ok(None),
                None => anyhow::bail!(
                    "column {i} is not in the row ({} columns)",
                    self.fields.len()
                ),
            }
        }
    }

    impl ScanRow for Row {
        fn text(&self, i: usize) -> anyhow::Result<Option<&str>> {
            Ok(self.field(i)?.map(std::str::from_utf8).transpose()?)
        }
        fn int(&self, i: usize) -> anyhow::Result<Option<i64>> {
            self.parsed(i, "an integer")
        }
        fn real(&self, i: usize) -> anyhow::Result<Option<f64>> {
            self.parsed(i, "a number")
        }
    }

    impl Row {
        /// Column `i` parsed from its text; an error names the column, the text and `what`.
        fn parsed<T: std::str::FromStr>(&self, i: usize, what: &str) -> anyhow::Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            let Some(v) = self.field(i)? else {
                return Ok(None);
            };
            let s = std::str::from_utf8(v)?;
            Ok(Some(s.parse().map_err(|e| {
                anyhow::anyhow!("column {i}: {s:?} is not {what}: {e}")
            })?))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn rows(chunks: &[&[u8]]) -> Vec<Vec<Option<String>>> {
            let mut out = Vec::new();
            let mut r = Reader::default();
            let mut f = |row: &dyn ScanRow| {
                out.push(
                    (0..3)
                        .map(|i| row.text(i).unwrap().map(str::to_owned))
                        .collect(),
                );
                Ok(())
            };
            for c in chunks {
                r.feed(c, &mut f).unwrap();
            }
            r.finish(&mut f).unwrap();
            out
        }

        #[test]
        fn lines_split_across_chunks_nulls_and_escapes() {
            let want = vec![
                vec![Some("a\tb".to_string()), None, Some("12".to_string())],
                vec![
                    Some("back\\slash\nline".to_string()),
                    Some(String::new()),
                    Some("-3.5".to_string()),
                ],
            ];
            let text: &[u8] = b"a\\tb\t\\N\t12\nback\\\\slash\\nline\t\t-3.5\n";
            assert_eq!(rows(&[text]), want);
            for cut in 1..text.len() {
                assert_eq!(rows(&[&text[..cut], &text[cut..]]), want, "cut at {cut}");
            }
            assert_eq!(
                rows(&[b"x\\101\\by\t\\N\t1"]),
                vec![vec![
                    Some("xA\u{8}y".to_string()),
                    None,
                    Some("1".to_string())
                ]]
            );
        }

        #[test]
        fn numbers_parse_and_bad_ones_say_which_column() {
            let mut r = Row::default();
            r.parse(b"42\t-0.25\tNaN\tx").unwrap();
            assert_eq!(r.int(0).unwrap(), Some(42));
            assert_eq!(r.real(1).unwrap(), Some(-0.25));
            assert!(r.real(2).unwrap().unwrap().is_nan());
            assert!(r.int(3).unwrap_err().to_string().contains("column 3"));
            assert!(r.text(4).is_err());
        }
    }
}

#[cfg(test)]
mod inline_tests {
    use super::{Bind, inline_binds};

    #[test]
    fn binds_become_literals_outside_quotes_only() {
        let sql = "SELECT a FROM t WHERE x >= $1 AND y < $2 AND z = $10 AND w = '$1' AND v -$1 > 0 AND s = $3";
        let mut binds = vec![Bind::Int(-5), Bind::Int(7), Bind::Text("it's")];
        binds.extend(std::iter::repeat_n(Bind::Int(0), 6));
        binds.push(Bind::Int(99));
        assert_eq!(
            inline_binds(sql, &binds),
            "SELECT a FROM t WHERE x >= (-5) AND y < (7) AND z = (99) AND w = '$1' AND v -(-5) > 0 AND s = E'it''s'"
        );
        assert_eq!(
            inline_binds("SELECT 'é' || $1", &[Bind::Text("ü\\'")]),
            "SELECT 'é' || E'ü\\\\'''"
        );
    }
}

pub(crate) mod sqlite {
    use std::ffi::{CStr, c_int};

    use anyhow::bail;
    use libsqlite3_sys as ffi;

    use super::ScanRow;

    /// A prepared statement, finalized on drop (shared with the bulk writer).
    pub(crate) struct Stmt(pub(crate) *mut ffi::sqlite3_stmt);

    impl Drop for Stmt {
        fn drop(&mut self) {
            // SAFETY: the statement came from sqlite3_prepare_v2 and is finalized once.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }

    struct Row<'s>(&'s Stmt);

    pub(crate) fn error(db: *mut ffi::sqlite3) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        unsafe {
            CStr::from_ptr(ffi::sqlite3_errmsg(db))
                .to_string_lossy()
                .into_owned()
        }
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
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                db,
                sql.as_ptr().cast(),
                sql.len() as c_int,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
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
                    super::Bind::Text(t) => ffi::sqlite3_bind_text(
                        stmt.0,
                        i as c_int + 1,
                        t.as_ptr().cast(),
                        t.len() as c_int,
                        ffi::SQLITE_TRANSIENT(),
                    ),
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
                if p.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(p, n as usize)
                }
            };
            Ok(Some(std::str::from_utf8(bytes)?))
        }
        fn int(&self, i: usize) -> anyhow::Result<Option<i64>> {
            // SAFETY: valid statement positioned on a row.
            Ok((!self.is_null(i))
                .then(|| unsafe { ffi::sqlite3_column_int64(self.0.0, i as c_int) }))
        }
        fn real(&self, i: usize) -> anyhow::Result<Option<f64>> {
            // SAFETY: valid statement positioned on a row.
            Ok((!self.is_null(i))
                .then(|| unsafe { ffi::sqlite3_column_double(self.0.0, i as c_int) }))
        }
    }
}
