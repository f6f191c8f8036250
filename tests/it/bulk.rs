//! The bulk writer (`src/bulk.rs`) and the bulk reader (`src/scan.rs`) round-trip every value
//! exactly on both backends: text that COPY escapes, NULLs, extreme numbers, and text binds
//! that the PostgreSQL reader writes into its query as literals.

use retentiond::bulk::{RowSink, write_rows};
use retentiond::scan::{Bind, scan_with};

use crate::helpers::TestDb;
use crate::on_both_backends;

type Row = (Option<String>, Option<i64>, Option<f64>);

fn tricky_rows() -> Vec<Row> {
    let texts = [
        Some("plain".to_string()),
        Some("tab\there".into()),
        Some("line\nbreak\r\nand CR\r".into()),
        Some(r"back\slash\\ and \N and \. and \t".into()),
        Some("\\".into()),
        Some("it's 'quoted'".into()),
        Some(r"\'; SELECT 1; --".into()),
        Some(String::new()),
        None,
        Some(r"\N".into()),
        Some("ünïcödé ✓ 日本 \u{1}\u{8}\u{b}\u{c}\u{7f}".into()),
    ];
    let ints = [Some(0), Some(i64::MIN), Some(i64::MAX), None, Some(-1)];
    let reals = [
        Some(0.1),
        Some(1.0 / 3.0),
        Some(-0.0),
        Some(5e-324),
        Some(1e21),
        Some(f64::MAX),
        None,
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), ints[i % ints.len()], reals[i % reals.len()]))
        .collect()
}

async fn bulk_rows_round_trip(t: TestDb) {
    let rows = tricky_rows();
    let mut tx = t.db.begin().await.unwrap();
    tx.execute(
        "CREATE TABLE bulk_probe (n BIGINT NOT NULL, t TEXT, i BIGINT, r DOUBLE PRECISION)",
        &[],
    )
    .await
    .unwrap();
    let written = write_rows(
        &mut tx,
        "bulk_probe",
        &["n", "t", "i", "r"],
        rows.len(),
        |k, out: &mut dyn RowSink| {
            let (s, i, r) = &rows[k];
            out.int(Some(k as i64));
            out.text(s.as_deref());
            out.int(*i);
            out.real(*r);
        },
    )
    .await
    .unwrap();
    assert_eq!(written as usize, rows.len(), "[{}]", t.name);
    tx.commit().await.unwrap();

    let mut back: Vec<(i64, Row)> = Vec::new();
    scan_with(
        &t.db,
        "SELECT n, t, i, r FROM bulk_probe ORDER BY n",
        &[],
        |r| {
            back.push((
                r.int(0)?.unwrap(),
                (r.text(1)?.map(str::to_owned), r.int(2)?, r.real(3)?),
            ));
            Ok(())
        },
    )
    .await
    .unwrap();
    assert_eq!(back.len(), rows.len(), "[{}]", t.name);
    for ((n, got), want) in back.iter().zip(&rows) {
        assert_eq!((&got.0, got.1), (&want.0, want.1), "[{}] row {n}", t.name);
        // The same bits: no rounding on the way in or out. (SQLite stores a REAL with no
        // fraction as an integer, so -0.0 reads back as 0.0 there; equal, not the same bits.)
        assert_eq!(got.2, want.2, "[{}] row {n}", t.name);
        if want.2 != Some(0.0) {
            assert_eq!(
                got.2.map(f64::to_bits),
                want.2.map(f64::to_bits),
                "[{}] row {n}",
                t.name
            );
        }
    }

    // Every text value found again through a text bind (PostgreSQL: a literal in the query).
    for (k, (s, _, _)) in rows.iter().enumerate() {
        let Some(s) = s else { continue };
        let mut found = Vec::new();
        scan_with(
            &t.db,
            "SELECT n FROM bulk_probe WHERE t = $1 AND n >= $2",
            &[Bind::Text(s), Bind::Int(-1)],
            |r| {
                found.push(r.int(0)?.unwrap());
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(found, [k as i64], "[{}] lookup of {s:?}", t.name);
    }
}
on_both_backends!(
    bulk_rows_round_trip_sqlite,
    bulk_rows_round_trip_postgres,
    bulk_rows_round_trip
);

/// A row with the wrong number of values fails the write and leaves nothing behind once the
/// transaction is dropped.
async fn a_short_row_fails_the_write(t: TestDb) {
    let mut tx = t.db.begin().await.unwrap();
    tx.execute("CREATE TABLE bulk_short (a BIGINT, b BIGINT)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = t.db.begin().await.unwrap();
    let err = write_rows(
        &mut tx,
        "bulk_short",
        &["a", "b"],
        3,
        |k, out: &mut dyn RowSink| {
            out.int(Some(k as i64));
            if k != 2 {
                out.int(Some(0));
            }
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row 2"), "[{}] {err}", t.name);
    drop(tx);
    assert_eq!(t.db.count("bulk_short").await.unwrap(), 0, "[{}]", t.name);
}
on_both_backends!(
    a_short_row_fails_the_write_sqlite,
    a_short_row_fails_the_write_postgres,
    a_short_row_fails_the_write
);
