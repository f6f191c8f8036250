//! Imports keep good data (issue 19, items 5–7): a row with an extra field is one rejected
//! row, line numbers are exact for CRLF files and quoted line breaks, a bad optional value is
//! dropped from its row instead of losing the row, headers are normalized, phones are stored
//! in E.164, `orders.csv` is needed only for a first load, and a rolled-back import says it
//! wrote nothing — on SQLite and PostgreSQL.

use std::path::Path;

use retentiond::db::Db;
use retentiond::ingest::{ImportError, ImportReport, import_dir};

use crate::helpers::{TestDb, table_counts, table_digest, write_dir};
use crate::import::options;
use crate::on_both_backends;

const PRODUCTS: &str =
    "product_id,category,name,price\nP1,hair care,Bhringraj Oil,299\nP2,teas,Tulsi Tea,199\n";
const ORDERS: &str = "order_id,customer_id,ordered_at,total_amount\n\
O1,C1,2024-01-05,10\nO2,C2,2024-01-06,20\nO3,C3,2024-01-07,30\nO4,C4,2024-01-08,40\n";

async fn recorded(db: &Db, status: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM imports WHERE status = $1").bind(status).fetch_one(p).await.unwrap())
}

/// The rejected-row file of `file`, as records (every row must have the header's length).
fn rejected_rows(report: &ImportReport, file: &str) -> Vec<Vec<String>> {
    let path = report
        .rejected_dir
        .as_ref()
        .expect("a rejected folder")
        .join(file);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(false)
        .from_path(&path)
        .unwrap();
    rdr.records()
        .map(|r| {
            r.expect("a rectangular file")
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// An unquoted comma (one field too many) and a short row: without `--skip-invalid` the
/// import is rejected with file:line, on record, nothing written (and the summary says 0
/// written); with it the two rows are rejected like any invalid row, the rest imported, and
/// report.json and the rejected file are complete.
async fn a_row_with_an_extra_field_is_one_rejected_row(t: TestDb) {
    let customers = "customer_id,first_name,address,city\n\
C1,Asha,Linking Road,Mumbai\nC2,Ravi,12 MG Road, Bandra,Mumbai\nC3,Meera\nC4,Dev,\"4 Park St, Salt Lake\",Kolkata\n";
    let dir = write_dir(&[
        ("products.csv", PRODUCTS),
        ("customers.csv", customers),
        ("orders.csv", ORDERS),
    ]);
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());

    let Err(ImportError::Rejected(report)) = import_dir(&t.db, &opts).await else {
        panic!("[{}] expected a rejection", t.name)
    };
    let shown: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        shown,
        [
            "customers.csv:3: column ``, value \"\": 5 fields, header has 4 — an unquoted comma? (quote values that contain commas)",
            "customers.csv:4: column ``, value \"\": 2 fields, header has 4 — a missing field?",
        ],
        "[{}]",
        t.name
    );
    assert_eq!(
        table_counts(&t.db).await.iter().map(|c| c.1).sum::<i64>(),
        0,
        "[{}] nothing half-written",
        t.name
    );
    assert_eq!(recorded(&t.db, "rejected").await, 1);
    // products.csv was written before the first problem, then rolled back: 0 written.
    let products = report
        .files
        .iter()
        .find(|f| f.file == "products.csv")
        .unwrap();
    assert_eq!(
        (products.rows_valid, products.rows_written),
        (2, 0),
        "[{}]",
        t.name
    );
    assert_eq!(report.rows_written(), 0);
    assert!(
        report
            .summary()
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["products.csv", "2", "2", "0", "0", "0"]),
        "{}",
        report.summary()
    );
    let written: i64 = retentiond::with_pool!(&t.db, p => sqlx::query_scalar::<_, i64>("SELECT rows_written FROM imports").fetch_one(p).await.unwrap());
    assert_eq!(written, 0);

    opts.skip_invalid = true;
    let report = import_dir(&t.db, &opts)
        .await
        .expect("skip-invalid commits");
    assert_eq!(report.status, "committed");
    let stats = report
        .files
        .iter()
        .find(|f| f.file == "customers.csv")
        .unwrap();
    assert_eq!(
        (stats.rows_read, stats.rows_valid, stats.rows_rejected),
        (4, 2, 2),
        "[{}]",
        t.name
    );
    let ids: Vec<String> = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT customer_id FROM customers WHERE first_name IS NOT NULL ORDER BY 1").fetch_all(p).await.unwrap());
    assert_eq!(
        ids,
        ["C1", "C4"],
        "[{}] the rows after the bad one are imported",
        t.name
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report.report_path.as_ref().expect("report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["error_count"], 2);
    assert_eq!(json["errors"][0]["line"], 3);
    let rows = rejected_rows(&report, "customers.csv");
    assert_eq!(
        rows[0],
        [
            "customer_id",
            "first_name",
            "address",
            "city",
            "_line",
            "_reasons"
        ]
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    // The fields past the header's last column stay in it, joined as they were.
    assert_eq!(
        rows[1][..5],
        ["C2", "Ravi", "12 MG Road", " Bandra,Mumbai", "3"]
    );
    assert!(rows[1][5].contains("an unquoted comma?"), "{:?}", rows[1]);
    assert_eq!(rows[2][..5], ["C3", "Meera", "", "", "4"]);
    assert_eq!(recorded(&t.db, "committed").await, 1);
}
on_both_backends!(
    extra_field_row_sqlite,
    extra_field_row_postgres,
    a_row_with_an_extra_field_is_one_rejected_row
);

/// Line numbers (errors and `_line`) are those an editor shows, for LF, CRLF (Excel,
/// Windows) and CR files, with a blank line and quoted values that span lines.
async fn line_numbers_are_exact_for_crlf_and_quoted_line_breaks(t: TestDb) {
    let lf = "customer_id,first_name,created_at\nC1,Asha,2023-01-01\nC2,\"Ravi\nKumar\",nope\nC3,Meera,2023-01-01\n\nC4,\"Dev\n\nDas\",2023-02-30\nC5,Ira,later\n";
    for (ending, text) in [
        ("LF", lf.to_string()),
        ("CRLF", lf.replace('\n', "\r\n")),
        ("CR", lf.replace('\n', "\r")),
    ] {
        let dir = write_dir(&[("customers.csv", &text), ("orders.csv", ORDERS)]);
        let reports = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), reports.path());
        opts.skip_invalid = true;
        let report = import_dir(&t.db, &opts).await.unwrap();
        let lines: Vec<(u64, &str)> = report
            .errors
            .iter()
            .map(|e| (e.line, e.value.as_str()))
            .collect();
        assert_eq!(
            lines,
            [(3, "nope"), (7, "2023-02-30"), (10, "later")],
            "[{}] {ending}",
            t.name
        );
        let rows = rejected_rows(&report, "customers.csv");
        let at: Vec<(&str, &str)> = rows[1..]
            .iter()
            .map(|r| (r[0].as_str(), r[3].as_str()))
            .collect();
        assert_eq!(
            at,
            [("C2", "3"), ("C4", "7"), ("C5", "10")],
            "[{}] {ending}",
            t.name
        );
        // A line break inside a quoted value is kept (as `\n`).
        let name: String = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT first_name FROM customers WHERE customer_id = 'C3'").fetch_one(p).await.unwrap());
        assert_eq!(name, "Meera");
        assert_eq!(rows[1][1], "Ravi\nKumar", "[{}] {ending}", t.name);
    }
}
on_both_backends!(
    crlf_lines_sqlite,
    crlf_lines_postgres,
    line_numbers_are_exact_for_crlf_and_quoted_line_breaks
);

/// Headers as spreadsheets write them, a bad email, phone and time zone: each bad value is
/// dropped from its row with a warning and a line in the rejected file, and the row keeps its
/// phone, consent and attributes (the customer is not re-created bare from orders). National
/// phone numbers are stored in E.164 with the row's or the brand's country.
async fn a_bad_optional_value_is_dropped_not_the_row(t: TestDb) {
    let customers = "Customer ID, Email ,Phone,First Name,Country,TimeZone,WhatsApp Opt-In,Loyalty Tier\n\
C1,asha@example,98765 43210,Asha,IN,Asia/Kolkata,yes,gold\n\
C2,ravi@example.com,12345,Ravi,in,Mars/Base,no,silver\n\
C3,meera@example.com,+44 7400 123456,Meera,GB,,yes,\n\
C4,dev@example.com,98765 43211,Dev,,,yes,gold\n";
    let dir = write_dir(&[("customers.csv", customers), ("orders.csv", ORDERS)]);
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.country = Some("IN".into());
    // Not even strict mode loses the rows: a dropped value is a warning.
    let report = import_dir(&t.db, &opts)
        .await
        .expect("dropped values do not reject the import");
    assert_eq!(
        (
            report.status.as_str(),
            report.error_count,
            report.customers_created
        ),
        ("committed", 0, 0),
        "[{}] {:?}",
        t.name,
        report.errors
    );
    assert_eq!(
        report.notes,
        ["customers.csv: 1 extra column kept as attributes: loyalty_tier"]
    );
    let dropped: Vec<String> = report.dropped.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        dropped,
        [
            "customers.csv:2: column `email`, value \"asha@example\": not an email address",
            "customers.csv:3: column `phone`, value \"12345\": not a valid phone number in IN",
            "customers.csv:3: column `timezone`, value \"Mars/Base\": not an IANA time zone",
        ],
        "[{}]",
        t.name
    );
    assert!(
        report.warnings.contains(&"customers.csv: 3 invalid optional value(s) dropped (`email` 1, `phone` 1, `timezone` 1), their rows kept without them".to_string()),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .summary()
            .contains("3 invalid optional value(s) dropped"),
        "{}",
        report.summary()
    );

    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        bool,
        Option<String>,
    );
    let stored: Vec<Row> = retentiond::with_pool!(&t.db, p => sqlx::query_as(
        "SELECT customer_id, email, phone, timezone, whatsapp_opt_in, attributes FROM customers ORDER BY customer_id"
    ).fetch_all(p).await.unwrap());
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        stored,
        vec![
            (
                "C1".into(),
                None,
                s("+919876543210"),
                s("Asia/Kolkata"),
                true,
                s(r#"{"loyalty_tier":"gold"}"#)
            ),
            (
                "C2".into(),
                s("ravi@example.com"),
                None,
                None,
                false,
                s(r#"{"loyalty_tier":"silver"}"#)
            ),
            (
                "C3".into(),
                s("meera@example.com"),
                s("+447400123456"),
                None,
                true,
                None
            ),
            // No country of its own: the brand's.
            (
                "C4".into(),
                s("dev@example.com"),
                s("+919876543211"),
                None,
                true,
                s(r#"{"loyalty_tier":"gold"}"#)
            ),
        ],
        "[{}]",
        t.name
    );
    let rows = rejected_rows(&report, "customers.csv");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!((rows[1][0].as_str(), rows[1][8].as_str()), ("C1", "2"));
    assert_eq!(
        rows[1][9],
        "email: dropped, the row was kept without it: not an email address"
    );
    assert!(
        rows[2][9].contains("phone: dropped") && rows[2][9].contains("timezone: dropped"),
        "{:?}",
        rows[2]
    );

    // Without a country (none on the row, no brand.country) a national number is dropped.
    let dir = write_dir(&[("customers.csv", "customer_id,phone\nC4,98765 43212\n")]);
    let report = import_dir(&t.db, &options(dir.path(), reports.path()))
        .await
        .unwrap();
    assert!(
        report.dropped[0]
            .reason
            .contains("no country to read it in"),
        "{:?}",
        report.dropped
    );
    let phone: Option<String> = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT phone FROM customers WHERE customer_id = 'C4'").fetch_one(p).await.unwrap());
    assert_eq!(phone, None);
}
on_both_backends!(
    dropped_values_sqlite,
    dropped_values_postgres,
    a_bad_optional_value_is_dropped_not_the_row
);

/// `orders.csv` is required for a first load only: into an empty database its absence is a
/// clear error (on record); into one that has orders, customers or products alone update.
async fn orders_are_required_only_for_a_first_load(t: TestDb) {
    let reports = tempfile::tempdir().unwrap();
    let customers_only =
        write_dir(&[("customers.csv", "customer_id,email\nC1,asha@example.com\n")]);
    let Err(ImportError::Rejected(report)) =
        import_dir(&t.db, &options(customers_only.path(), reports.path())).await
    else {
        panic!("[{}] an empty database needs orders.csv", t.name)
    };
    assert_eq!(
        report.errors[0].to_string(),
        "orders.csv:0: column ``, value \"\": required file is missing: the database has no orders yet, so the first import must include it"
    );
    assert_eq!(t.db.count("customers").await.unwrap(), 0);
    assert_eq!(recorded(&t.db, "rejected").await, 1);

    let first = write_dir(&[("products.csv", PRODUCTS), ("orders.csv", ORDERS)]);
    import_dir(&t.db, &options(first.path(), reports.path()))
        .await
        .unwrap();
    let digest = table_digest(&t.db).await;

    let report = import_dir(&t.db, &options(customers_only.path(), reports.path()))
        .await
        .expect("a customers-only update");
    assert_eq!(
        report.rows_written(),
        1,
        "[{}] {}",
        t.name,
        report.summary()
    );
    let email: Option<String> = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT email FROM customers WHERE customer_id = 'C1'").fetch_one(p).await.unwrap());
    assert_eq!(email.as_deref(), Some("asha@example.com"));
    assert_ne!(table_digest(&t.db).await, digest);

    let products_only = write_dir(&[(
        "products.csv",
        "product_id,category,name,price\nP1,hair care,Bhringraj Oil,349\n",
    )]);
    let report = import_dir(&t.db, &options(products_only.path(), reports.path()))
        .await
        .expect("a products-only update");
    assert_eq!(report.rows_written(), 1);
    assert_eq!(t.db.count("orders").await.unwrap(), 4, "orders untouched");

    // A folder with no contract file at all says so.
    let empty = tempfile::tempdir().unwrap();
    let report = import_dir(&t.db, &options(empty.path(), reports.path()))
        .await
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no contract file found")),
        "{:?}",
        report.warnings
    );
    assert!(Path::new(report.report_path.as_ref().unwrap()).exists());
}
on_both_backends!(
    orders_first_load_sqlite,
    orders_first_load_postgres,
    orders_are_required_only_for_a_first_load
);
