//! The import contract: every kind of bad input is reported with file, line, column, value
//! and reason, and leaves the database exactly as it was — on SQLite and PostgreSQL.

use std::path::Path;

use retentiond::db::Db;
use retentiond::ingest::{ImportError, ImportOptions, ImportReport, import_dir};

use crate::helpers::{TestDb, table_counts, table_digest, write_dir};
use crate::on_both_backends;

const PRODUCTS: &str =
    "product_id,category,name,price\nP1,hair care,Bhringraj Oil,299\nP2,teas,Tulsi Tea,199\n";
const CUSTOMERS: &str = "customer_id,email,phone,first_name,country,timezone,email_opt_in,sms_opt_in,whatsapp_opt_in,created_at\n\
C1,asha@example.com,+91 98000 00001,Asha,IN,Asia/Kolkata,yes,no,1,2023-01-01\n";
const ORDERS: &str = "order_id,customer_id,ordered_at,total_amount,currency,status\n\
O1,C1,2024-01-05T10:00:00Z,498,INR,completed\nO2,C2,2024-02-01 12:00:00,199,,cancelled\n";
const ITEMS: &str =
    "order_id,product_id,quantity,unit_price\nO1,P1,1,299\nO1,P2,1,199\nO2,P2,1,199\n";
const SESSIONS: &str =
    "session_id,customer_id,started_at,source,device\nS1,C1,2024-01-05T09:50:00Z,organic,mobile\n";
const EVENTS: &str = "customer_id,event_type,occurred_at,product_id,session_id,event_id\n\
C1,view,2024-01-05T09:51:00Z,P1,S1,E1\nC1,add_to_cart,2024-01-05T09:55:00Z,P1,S1,\n";

fn base() -> Vec<(&'static str, String)> {
    vec![
        ("products.csv", PRODUCTS.into()),
        ("customers.csv", CUSTOMERS.into()),
        ("orders.csv", ORDERS.into()),
        ("order_items.csv", ITEMS.into()),
        ("sessions.csv", SESSIONS.into()),
        ("events.csv", EVENTS.into()),
    ]
}

/// The base export with some files replaced (or removed when the content is `None`).
fn export(overrides: &[(&'static str, Option<Vec<u8>>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in base() {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    for (name, content) in overrides {
        match content {
            Some(bytes) => std::fs::write(dir.path().join(name), bytes).unwrap(),
            None => std::fs::remove_file(dir.path().join(name)).unwrap(),
        }
    }
    dir
}

pub fn options(dir: &Path, report_dir: &Path) -> ImportOptions {
    ImportOptions {
        dir: dir.to_path_buf(),
        skip_invalid: false,
        max_errors: 100,
        batch_rows: 2,
        report_dir: report_dir.to_path_buf(),
        tz: chrono_tz::Asia::Kolkata,
        currency: "INR".into(),
        progress: false,
        follow_symlinks: false,
        max_future_days: 1,
        country: None,
    }
}

async fn import(db: &Db, dir: &Path) -> Result<ImportReport, ImportError> {
    let reports = tempfile::tempdir().unwrap();
    import_dir(db, &options(dir, reports.path())).await
}

/// A valid change that must not survive when the rest of the import is rejected.
const ORDERS_PLUS_O3: &str = "order_id,customer_id,ordered_at,total_amount,currency,status\n\
O1,C1,2024-01-05T10:00:00Z,498,INR,completed\nO2,C2,2024-02-01 12:00:00,199,,cancelled\nO3,C3,2024-03-01,50,INR,completed\n";
const CUSTOMERS_CHANGED: &str =
    "customer_id,email,first_name\nC1,new@example.com,Changed\nC9,c9@example.com,Nine\n";

fn bytes(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

struct Case {
    name: &'static str,
    files: Vec<(&'static str, Option<Vec<u8>>)>,
    /// Expected rendering of the first error: "file:line: column `c`, value \"v\": reason…".
    expect: &'static str,
}

fn bad_cases() -> Vec<Case> {
    let mut invalid_utf8 = b"customer_id,email,first_name\nC1,asha@example.com,".to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, b'x']);
    invalid_utf8.extend_from_slice(b"\n");
    let huge = format!(
        "product_id,category,name\nP1,hair care,{}\n",
        "x".repeat(70 * 1024)
    );
    vec![
        Case {
            name: "missing required column",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes("order_id,customer_id,total_amount\nO1,C1,5\n"),
                ),
            ],
            expect: "orders.csv:1: column `ordered_at`, value \"\": required column is missing from the header",
        },
        Case {
            name: "unparseable date",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!("{ORDERS}O4,C1,2024-02-30,10,INR,completed\n")),
                ),
            ],
            expect: "orders.csv:4: column `ordered_at`, value \"2024-02-30\": not a timestamp",
        },
        Case {
            name: "unparseable number",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!("{ORDERS}O4,C1,2024-02-03,12.5.1,INR,completed\n")),
                ),
            ],
            expect: "orders.csv:4: column `total_amount`, value \"12.5.1\": not a number",
        },
        Case {
            name: "negative quantity",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                ("order_items.csv", bytes(&format!("{ITEMS}O3,P1,-1,299\n"))),
            ],
            expect: "order_items.csv:5: column `quantity`, value \"-1\": must not be negative",
        },
        Case {
            name: "unknown status",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!("{ORDERS}O4,C1,2024-02-03,10,INR,shipped\n")),
                ),
            ],
            expect: "orders.csv:4: column `status`, value \"shipped\": unknown status (expected one of completed, cancelled, refunded)",
        },
        Case {
            name: "unknown event type",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                (
                    "events.csv",
                    bytes(&format!("{EVENTS}C1,click,2024-01-05T09:56:00Z,P1,S1,E9\n")),
                ),
            ],
            expect: "events.csv:4: column `event_type`, value \"click\": unknown event type",
        },
        Case {
            name: "item whose product is missing",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                ("order_items.csv", bytes(&format!("{ITEMS}O3,P9,1,10\n"))),
            ],
            expect: "order_items.csv:5: column `product_id`, value \"P9\": no product with this id in this import or the database",
        },
        Case {
            name: "item whose order is missing",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                ("order_items.csv", bytes(&format!("{ITEMS}O9,P1,1,10\n"))),
            ],
            expect: "order_items.csv:5: column `order_id`, value \"O9\": no order with this id in this import or the database",
        },
        Case {
            name: "duplicate id with conflicting values",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!(
                        "{ORDERS}O1,C1,2024-01-05T10:00:00Z,999,INR,completed\n"
                    )),
                ),
            ],
            expect: "orders.csv:4: column `order_id`, value \"O1\": duplicate id with conflicting values (first seen on line 2)",
        },
        Case {
            name: "empty file",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                ("orders.csv", bytes("")),
            ],
            expect: "orders.csv:1: column ``, value \"\": empty file (expected a header row)",
        },
        Case {
            name: "invalid UTF-8",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                ("customers.csv", Some(invalid_utf8)),
            ],
            expect: "customers.csv:2: column `first_name`, value \"\u{fffd}\u{fffd}x\": not valid UTF-8",
        },
        Case {
            name: "field over 64 KiB",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                ("products.csv", bytes(&huge)),
            ],
            expect: "over the 64 KiB limit",
        },
        Case {
            name: "amount over the bound",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!("{ORDERS}O4,C1,2024-02-03,1e308,INR,completed\n")),
                ),
            ],
            expect: "orders.csv:4: column `total_amount`, value \"1e308\": over the maximum amount of 1000000000",
        },
        Case {
            name: "quantity over the bound",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                (
                    "order_items.csv",
                    bytes(&format!("{ITEMS}O3,P1,1000001,299\n")),
                ),
            ],
            expect: "order_items.csv:5: column `quantity`, value \"1000001\": over the maximum quantity of 1000000",
        },
        Case {
            name: "order in year 0001",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!("{ORDERS}O4,C1,0001-01-01,10,INR,completed\n")),
                ),
            ],
            expect: "orders.csv:4: column `ordered_at`, value \"0001-01-01\": before 1970-01-01",
        },
        Case {
            name: "order in year 9999",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!(
                        "{ORDERS}O4,C1,9999-12-31T00:00:00Z,10,INR,completed\n"
                    )),
                ),
            ],
            expect: "orders.csv:4: column `ordered_at`, value \"9999-12-31T00:00:00Z\": more than 1 day(s) in the future (import.max_future_days)",
        },
        Case {
            name: "session in the future",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                (
                    "sessions.csv",
                    bytes(&format!("{SESSIONS}S2,C1,2999-01-01,organic,mobile\n")),
                ),
            ],
            expect: "sessions.csv:3: column `started_at`, value \"2999-01-01\": more than 1 day(s) in the future",
        },
        Case {
            name: "event before 1970",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                (
                    "events.csv",
                    bytes(&format!("{EVENTS}C1,view,1969-12-31T23:59:59Z,P1,S1,E9\n")),
                ),
            ],
            expect: "events.csv:4: column `occurred_at`, value \"1969-12-31T23:59:59Z\": before 1970-01-01",
        },
        Case {
            name: "customer created in the future",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                (
                    "customers.csv",
                    bytes("customer_id,created_at\nC1,2999-01-01\n"),
                ),
            ],
            expect: "customers.csv:2: column `created_at`, value \"2999-01-01\": more than 1 day(s) in the future",
        },
        Case {
            name: "NUL byte in an id",
            files: vec![
                ("customers.csv", bytes(CUSTOMERS_CHANGED)),
                (
                    "orders.csv",
                    bytes(&format!("{ORDERS}O4,C\u{0}1,2024-02-03,10,INR,completed\n")),
                ),
            ],
            expect: "orders.csv:4: column `customer_id`, value \"C\\01\": contains a NUL byte",
        },
        Case {
            name: "NUL byte in a name",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                (
                    "customers.csv",
                    bytes("customer_id,first_name\nC1,As\u{0}ha\n"),
                ),
            ],
            expect: "customers.csv:2: column `first_name`, value \"As\\0ha\": contains a NUL byte",
        },
        Case {
            name: "NUL byte in an attribute",
            files: vec![
                ("orders.csv", bytes(ORDERS_PLUS_O3)),
                ("customers.csv", bytes("customer_id,tier\nC1,go\u{0}ld\n")),
            ],
            expect: "customers.csv:2: column `tier`, value \"go\\0ld\": contains a NUL byte",
        },
    ]
}

/// Every index of the raw tables with its definition (keys included on PostgreSQL), sorted:
/// an import into empty tables drops some and must leave the same set behind.
async fn raw_indexes(db: &Db) -> Vec<(String, String)> {
    let sql = match db {
        Db::Sqlite(_) => {
            "SELECT name, COALESCE(sql, 'auto') FROM sqlite_master WHERE type = 'index' \
                          AND tbl_name IN ('customers', 'products', 'orders', 'order_items', 'sessions', 'events') ORDER BY name"
        }
        Db::Postgres(_) => {
            "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) || COALESCE(' ' || c.contype::text, '') \
                            FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
                            LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid \
                            WHERE t.relname IN ('customers', 'products', 'orders', 'order_items', 'sessions', 'events') ORDER BY 1"
        }
    };
    retentiond::with_pool!(db, p => sqlx::query_as::<_, (String, String)>(sql).fetch_all(p).await.unwrap())
}

async fn bad_inputs_change_nothing(t: TestDb) {
    import(&t.db, export(&[]).path())
        .await
        .expect("the base export is valid");
    let counts = table_counts(&t.db).await;
    let digest = table_digest(&t.db).await;
    for case in bad_cases() {
        let dir = export(&case.files);
        let report = match import(&t.db, dir.path()).await {
            Err(ImportError::Rejected(r)) => r,
            other => panic!(
                "[{}] {}: expected a rejected import, got {other:?}",
                t.name, case.name
            ),
        };
        assert_eq!(report.status, "rejected");
        let shown: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            shown.iter().any(|e| e.contains(case.expect)),
            "[{}] {}: expected {:?} among {shown:#?}",
            t.name,
            case.name,
            case.expect
        );
        assert_eq!(
            table_counts(&t.db).await,
            counts,
            "[{}] {}: row counts changed",
            t.name,
            case.name
        );
        assert_eq!(
            table_digest(&t.db).await,
            digest,
            "[{}] {}: contents changed",
            t.name,
            case.name
        );
    }
    // Each rejected attempt is on record, beside the one committed import.
    let rejected: i64 = retentiond::with_pool!(&t.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM imports WHERE status = 'rejected'").fetch_one(p).await.unwrap());
    assert_eq!(rejected as usize, bad_cases().len());
}
on_both_backends!(
    bad_inputs_change_nothing_sqlite,
    bad_inputs_change_nothing_postgres,
    bad_inputs_change_nothing
);

async fn every_problem_is_reported_up_to_the_cap(t: TestDb) {
    let orders = format!(
        "{ORDERS}O4,C1,nope,1,INR,completed\nO5,C1,2024-01-01,-3,INR,completed\nO6,,2024-01-01,1,XXXX,completed\n"
    );
    let dir = export(&[("orders.csv", bytes(&orders))]);
    let indexes = raw_indexes(&t.db).await;
    let Err(ImportError::Rejected(report)) = import(&t.db, dir.path()).await else {
        panic!("expected rejection")
    };
    assert_eq!(
        raw_indexes(&t.db).await,
        indexes,
        "[{}] a rejected import into empty tables keeps every index",
        t.name
    );
    let cols: Vec<(u64, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_str()))
        .collect();
    assert_eq!(
        cols,
        vec![
            (4, "ordered_at"),
            (5, "total_amount"),
            (6, "customer_id"),
            (6, "currency")
        ]
    );
    assert_eq!(report.error_count, 4);

    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.max_errors = 2;
    let Err(ImportError::Rejected(report)) = import_dir(&t.db, &opts).await else {
        panic!("expected rejection")
    };
    assert_eq!(report.errors.len(), 2);
    assert_eq!(
        report.error_count, 4,
        "errors beyond the cap are still counted"
    );
    assert!(report.summary().contains("4 problem(s), first 2 shown"));
    assert_eq!(
        table_counts(&t.db).await.iter().map(|c| c.1).sum::<i64>(),
        0
    );
}
on_both_backends!(
    every_problem_is_reported_sqlite,
    every_problem_is_reported_postgres,
    every_problem_is_reported_up_to_the_cap
);

async fn skip_invalid_keeps_valid_rows_and_writes_rejects(t: TestDb) {
    let items = format!("{ITEMS}O1,P9,1,10\nO2,P1,-4,10\n");
    let dir = export(&[("order_items.csv", bytes(&items))]);
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.skip_invalid = true;
    let report = import_dir(&t.db, &opts)
        .await
        .expect("skip-invalid commits");
    assert_eq!(report.status, "committed");
    assert_eq!(t.db.count("order_items").await.unwrap(), 3);
    assert_eq!(t.db.count("orders").await.unwrap(), 2);
    let items_stats = report
        .files
        .iter()
        .find(|f| f.file == "order_items.csv")
        .unwrap();
    assert_eq!(
        (
            items_stats.rows_read,
            items_stats.rows_valid,
            items_stats.rows_rejected
        ),
        (5, 3, 2)
    );
    let rejected_dir = report.rejected_dir.clone().expect("rejected folder");
    assert_eq!(
        rejected_dir.parent(),
        report.report_path.as_ref().unwrap().parent(),
        "rejected/ sits beside the report"
    );
    let rejected = std::fs::read_to_string(rejected_dir.join("order_items.csv")).unwrap();
    let lines: Vec<&str> = rejected.lines().collect();
    assert_eq!(
        lines[0],
        "order_id,product_id,quantity,unit_price,_line,_reasons"
    );
    assert_eq!(lines.len(), 3, "{rejected}");
    // Raw input cells that a spreadsheet would read as a formula get a leading `'`.
    assert!(
        rejected.contains("O2,P1,'-4,10,6,quantity: must not be negative"),
        "{rejected}"
    );
    assert!(
        rejected.contains("O1,P9,1,10,5,product_id: no product with this id"),
        "{rejected}"
    );
    let recorded: (i64, i64) = retentiond::with_pool!(&t.db, p => sqlx::query_as::<_, (i64, i64)>("SELECT rows_rejected, error_count FROM imports WHERE status = 'committed'").fetch_one(p).await.unwrap());
    assert_eq!(recorded, (2, 2));
}
on_both_backends!(
    skip_invalid_sqlite,
    skip_invalid_postgres,
    skip_invalid_keeps_valid_rows_and_writes_rejects
);

async fn reimport_is_a_no_op_and_newer_exports_update_in_place(t: TestDb) {
    let first = import(&t.db, export(&[]).path()).await.unwrap();
    assert_eq!(first.rows_written(), 2 + 1 + 2 + 3 + 1 + 2);
    assert_eq!(first.customers_created, 1, "C2 appears only in orders");
    let digest = table_digest(&t.db).await;
    let again = import(&t.db, export(&[]).path()).await.unwrap();
    assert_eq!(again.rows_written(), 0, "{}", again.summary());
    assert_eq!(again.customers_created, 0);
    assert_eq!(table_digest(&t.db).await, digest);

    // A newer export: one changed order, one changed customer (only the columns it carries).
    let orders = ORDERS.replace(
        "O1,C1,2024-01-05T10:00:00Z,498,INR,completed",
        "O1,C1,2024-01-05T10:00:00Z,498,INR,refunded",
    );
    let newer = import(
        &t.db,
        export(&[
            ("orders.csv", bytes(&orders)),
            (
                "customers.csv",
                bytes("customer_id,first_name\nC1,Asha R.\n"),
            ),
        ])
        .path(),
    )
    .await
    .unwrap();
    assert_eq!(newer.rows_written(), 2, "{}", newer.summary());
    let (status, name, email, optin): (String, String, String, bool) = retentiond::with_pool!(&t.db, p => sqlx::query_as(
        "SELECT o.status, c.first_name, c.email, c.email_opt_in FROM orders o JOIN customers c ON c.customer_id = o.customer_id WHERE o.order_id = 'O1'"
    ).fetch_one(p).await.unwrap());
    assert_eq!(
        (status.as_str(), name.as_str(), email.as_str(), optin),
        ("refunded", "Asha R.", "asha@example.com", true)
    );
}
on_both_backends!(
    reimport_sqlite,
    reimport_postgres,
    reimport_is_a_no_op_and_newer_exports_update_in_place
);

async fn values_are_normalized(t: TestDb) {
    import(&t.db, export(&[]).path()).await.unwrap();
    // Customers known only from orders have no contact details and no consent.
    let c2: (Option<String>, Option<String>, bool, bool, bool) = retentiond::with_pool!(&t.db, p => sqlx::query_as(
        "SELECT email, phone, email_opt_in, sms_opt_in, whatsapp_opt_in FROM customers WHERE customer_id = 'C2'"
    ).fetch_one(p).await.unwrap());
    assert_eq!(c2, (None, None, false, false, false));
    let c1: (String, bool, bool, bool) = retentiond::with_pool!(&t.db, p => sqlx::query_as(
        "SELECT phone, email_opt_in, sms_opt_in, whatsapp_opt_in FROM customers WHERE customer_id = 'C1'"
    ).fetch_one(p).await.unwrap());
    assert_eq!(c1, ("+919800000001".into(), true, false, true));
    // Naive timestamps are read in the configured zone (Asia/Kolkata, +05:30); currency defaults.
    let o2: (i64, String, String) = retentiond::with_pool!(&t.db, p => sqlx::query_as(
        "SELECT ordered_at, currency, status FROM orders WHERE order_id = 'O2'"
    ).fetch_one(p).await.unwrap());
    assert_eq!(o2, (1706769000, "INR".into(), "cancelled".into()));
    // An event without an id gets a stable digest key.
    let keys: Vec<String> = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT event_key FROM events ORDER BY event_key").fetch_all(p).await.unwrap());
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], "E1");
    assert!(keys[1].starts_with("h:"));
}
on_both_backends!(
    values_are_normalized_sqlite,
    values_are_normalized_postgres,
    values_are_normalized
);

async fn unknown_columns_warn_and_identical_repeats_are_kept_once(t: TestDb) {
    let orders = format!(
        "{}\n",
        "order_id,customer_id,ordered_at,coupon,status\nO1,C1,2024-01-01,X,completed\nO1,C1,2024-01-01,X,completed"
    );
    let dir = write_dir(&[("orders.csv", &orders), ("notes.csv", "a\n1\n")]);
    let report = import(&t.db, dir.path()).await.unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w == "orders.csv: 1 unknown column ignored: `coupon`"),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("notes.csv: not part of the import contract"))
    );
    assert_eq!(report.files[0].duplicates, 1);
    assert_eq!(t.db.count("orders").await.unwrap(), 1);
}
on_both_backends!(
    unknown_columns_sqlite,
    unknown_columns_postgres,
    unknown_columns_warn_and_identical_repeats_are_kept_once
);

/// customers.csv with two extra columns (mixed case, padded, a hyphen, quoted values, one
/// empty cell).
const CUSTOMERS_ATTRS: &str = "customer_id,email,Loyalty_Tier,first_name, skin-type \n\
C1,asha@example.com, gold ,Asha,oily\nC3,,,Ravi,\nC4,,silver,Meera,\"dry, \"\"sensitive\"\"\"\n";

async fn stored_attributes(db: &Db) -> Vec<(String, Option<String>)> {
    retentiond::with_pool!(db, p => sqlx::query_as("SELECT customer_id, attributes FROM customers ORDER BY customer_id").fetch_all(p).await.unwrap())
}

async fn extra_customer_columns_are_kept_as_attributes(t: TestDb) {
    let report = import(
        &t.db,
        export(&[("customers.csv", bytes(CUSTOMERS_ATTRS))]).path(),
    )
    .await
    .unwrap();
    let line = "customers.csv: 2 extra columns kept as attributes: loyalty_tier, skin_type";
    assert_eq!(report.notes, vec![line.to_string()]);
    assert!(report.summary().contains(line), "{}", report.summary());
    assert!(
        report.warnings.iter().all(|w| !w.contains("customers.csv")),
        "{:?}",
        report.warnings
    );
    let stats = report
        .files
        .iter()
        .find(|f| f.file == "customers.csv")
        .unwrap();
    assert_eq!(
        (
            stats.attribute_columns.len(),
            stats.unknown_columns.len(),
            stats.unknown_column_count
        ),
        (2, 0, 0)
    );
    let expected = vec![
        (
            "C1".to_string(),
            Some(r#"{"loyalty_tier":"gold","skin_type":"oily"}"#.to_string()),
        ),
        ("C2".to_string(), None), // created by orders.csv
        ("C3".to_string(), None), // every extra cell empty
        (
            "C4".to_string(),
            Some(r#"{"loyalty_tier":"silver","skin_type":"dry, \"sensitive\""}"#.to_string()),
        ),
    ];
    assert_eq!(stored_attributes(&t.db).await, expected, "[{}]", t.name);
    let c4: serde_json::Value = serde_json::from_str(expected[3].1.as_deref().unwrap()).unwrap();
    assert_eq!(c4["skin_type"], "dry, \"sensitive\"");

    // The same export again, even with its columns in another order, writes nothing.
    let again = import(
        &t.db,
        export(&[("customers.csv", bytes(CUSTOMERS_ATTRS))]).path(),
    )
    .await
    .unwrap();
    assert_eq!(again.rows_written(), 0, "{}", again.summary());
    let reordered =
        "skin-type,first_name,customer_id,loyalty_tier,email\noily,Asha,C1,gold,asha@example.com\n";
    let again = import(&t.db, export(&[("customers.csv", bytes(reordered))]).path())
        .await
        .unwrap();
    assert_eq!(again.rows_written(), 0, "{}", again.summary());

    // A changed attribute updates the row like any other column; a file without extra
    // columns leaves stored attributes alone.
    let changed = CUSTOMERS_ATTRS.replace(" gold ", "platinum");
    let newer = import(&t.db, export(&[("customers.csv", bytes(&changed))]).path())
        .await
        .unwrap();
    assert_eq!(newer.rows_written(), 1, "{}", newer.summary());
    let plain = import(
        &t.db,
        export(&[("customers.csv", bytes("customer_id,first_name\nC1,Asha\n"))]).path(),
    )
    .await
    .unwrap();
    assert!(plain.notes.is_empty());
    assert_eq!(
        stored_attributes(&t.db).await[0].1.as_deref(),
        Some(r#"{"loyalty_tier":"platinum","skin_type":"oily"}"#)
    );

    // A header that cannot be an attribute name, or a value over 1,000 characters, rejects
    // the import with the usual file:line: column, value, reason.
    let counts = table_counts(&t.db).await;
    let digest = stored_attributes(&t.db).await;
    let long = format!("customer_id,skin_type\nC1,{}\n", "é".repeat(1001));
    for (file, expect) in [
        (
            "customer_id,tier!\nC1,gold\n".to_string(),
            "customers.csv:1: column `tier!`, value \"tier!\": not a valid attribute name",
        ),
        (
            "customer_id,Loyalty Tier,loyalty-tier\nC1,gold,gold\n".to_string(),
            "customers.csv:1: column `loyalty-tier`, value \"loyalty-tier\": column appears twice in the header",
        ),
        (
            "customer_id,tier,TIER\nC1,gold,gold\n".to_string(),
            "customers.csv:1: column `TIER`, value \"TIER\": column appears twice in the header",
        ),
        (long, "customers.csv:2: column `skin_type`, value \"éééé"),
    ] {
        let Err(ImportError::Rejected(report)) =
            import(&t.db, export(&[("customers.csv", bytes(&file))]).path()).await
        else {
            panic!("[{}] expected a rejection: {expect}", t.name)
        };
        let shown: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            shown.iter().any(|e| e.contains(expect)),
            "[{}] expected {expect:?} among {shown:#?}",
            t.name
        );
        if expect.contains(".csv:1:") {
            assert!(
                report.notes.is_empty(),
                "a rejected header keeps nothing: {:?}",
                report.notes
            );
        }
        assert_eq!(table_counts(&t.db).await, counts);
        assert_eq!(stored_attributes(&t.db).await, digest);
    }
    let Err(ImportError::Rejected(report)) = import(
        &t.db,
        export(&[(
            "customers.csv",
            bytes(&format!("customer_id,skin_type\nC1,{}\n", "x".repeat(1001))),
        )])
        .path(),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(
        report.errors[0].reason,
        "attribute value is 1001 characters, over the 1000 limit"
    );
}
on_both_backends!(
    attributes_sqlite,
    attributes_postgres,
    extra_customer_columns_are_kept_as_attributes
);

/// `generate` then `import` gives the same row counts, and a second import changes nothing.
async fn generated_brand_round_trips(t: TestDb) {
    let out = tempfile::tempdir().unwrap();
    let end = chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap();
    let summary = retentiond::generate::generate(
        &retentiond::generate::GenerateParams::new(1500, 11, end),
        out.path(),
        &|_| {},
    )
    .unwrap();
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), reports.path());
    opts.batch_rows = 500;
    let indexes = raw_indexes(&t.db).await;
    assert!(
        indexes.iter().any(|(name, _)| name == "events_time"),
        "[{}] {indexes:?}",
        t.name
    );
    let report = import_dir(&t.db, &opts).await.unwrap();
    assert_eq!(report.error_count, 0);
    // The load into empty tables drops their indexes and builds them again, keys included.
    assert_eq!(
        raw_indexes(&t.db).await,
        indexes,
        "[{}] indexes after loading empty tables",
        t.name
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("ground_truth.csv")),
        "the truth file is not imported"
    );
    assert_eq!(
        report.notes,
        vec![
            "customers.csv: 2 extra columns kept as attributes: loyalty_tier, acquisition_channel"
                .to_string()
        ]
    );
    let expected = [
        ("customers", summary.customers),
        ("products", summary.products),
        ("orders", summary.orders),
        ("order_items", summary.order_items),
        ("sessions", summary.sessions),
        ("events", summary.events),
    ];
    for (table, n) in expected {
        assert_eq!(
            t.db.count(table).await.unwrap() as u64,
            n,
            "[{}] {table}",
            t.name
        );
    }
    assert_eq!(
        report.customers_created, 0,
        "every customer is in customers.csv"
    );
    let again = import_dir(&t.db, &opts).await.unwrap();
    assert_eq!(again.rows_written(), 0);
}
on_both_backends!(
    generated_round_trip_sqlite,
    generated_round_trip_postgres,
    generated_brand_round_trips
);

/// Tables of the raw data whose statistics a manual ANALYZE has set (PostgreSQL).
async fn analyzed_tables(db: &Db) -> Vec<String> {
    let Db::Postgres(p) = db else {
        unreachable!("PostgreSQL only")
    };
    sqlx::query_scalar::<_, String>(
        "SELECT relname::text FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL \
         AND relname IN ('customers', 'products', 'orders', 'order_items', 'sessions', 'events') ORDER BY 1",
    )
    .fetch_all(p)
    .await
    .unwrap()
}

/// PostgreSQL plans from table statistics: a committed import analyzes the tables it wrote
/// (the purchase-history query of a campaign run went from 2.9 s to 136 ms per 500 customers
/// at 1 M customers), a rejected one leaves them alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_import_analyzes_the_tables_it_wrote() {
    let Some(t) = crate::helpers::postgres().await else {
        return;
    };
    let bad = format!("{ORDERS}O9,C1,nope,1,INR,completed\n");
    assert!(
        import(&t.db, export(&[("orders.csv", bytes(&bad))]).path())
            .await
            .is_err()
    );
    assert_eq!(
        analyzed_tables(&t.db).await,
        Vec::<String>::new(),
        "a rejected import analyzes nothing"
    );
    // Only products and orders: orders name customer C2, whom the import creates.
    let dir = export(&[
        ("customers.csv", None),
        ("order_items.csv", None),
        ("sessions.csv", None),
        ("events.csv", None),
    ]);
    import(&t.db, dir.path()).await.unwrap();
    assert_eq!(
        analyzed_tables(&t.db).await,
        ["customers", "orders", "products"]
    );
    import(&t.db, export(&[]).path()).await.unwrap();
    assert_eq!(
        analyzed_tables(&t.db).await,
        [
            "customers",
            "events",
            "order_items",
            "orders",
            "products",
            "sessions"
        ]
    );
}

/// SQLite: the import writes through the rollback journal when it is the only connection to
/// the database (each page written once instead of to the WAL and again by the checkpoint),
/// through the WAL when anything else has the database open, and leaves it in WAL mode
/// either way, committed or rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_import_leaves_the_wal_only_when_alone() {
    let t = crate::helpers::sqlite().await;
    let Db::Sqlite(pool) = &t.db else {
        unreachable!()
    };
    let journal_mode = || async {
        sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let path = t.url.strip_prefix("sqlite://").unwrap().to_string();

    // Another connection open (and reading): the WAL is kept, and so is the reader.
    let mut reader = pool.acquire().await.unwrap();
    let dir = export(&[]);
    let report = import(&t.db, dir.path()).await.unwrap();
    assert_eq!(report.sqlite_journal.as_deref(), Some("wal"));
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(n, 2, "the open connection sees the import");
    drop(reader);

    // Alone (the pool's idle connections are closed by the import): rollback journal.
    let dir = export(&[("customers.csv", bytes(CUSTOMERS_CHANGED))]);
    let reports = tempfile::tempdir().unwrap();
    let report = import_dir(&t.db, &options(dir.path(), reports.path()))
        .await
        .unwrap();
    assert_eq!(report.sqlite_journal.as_deref(), Some("rollback"));
    assert_eq!(
        journal_mode().await,
        "wal",
        "the database is back in WAL mode"
    );
    assert!(
        !Path::new(&format!("{path}-journal")).exists(),
        "no journal left behind"
    );
    assert_eq!(
        t.db.count("customers").await.unwrap(),
        3,
        "C1, C2 (from orders) and the new C9"
    );
    let email: String = sqlx::query_scalar("SELECT email FROM customers WHERE customer_id = 'C1'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(email, "new@example.com");
    let report_json = std::fs::read_to_string(report.report_path.as_ref().unwrap()).unwrap();
    assert!(
        report_json.contains("\"sqlite_journal\": \"rollback\""),
        "{report_json}"
    );

    // A rejected import alone: rolled back through the journal, nothing changed, WAL again.
    let digest = table_digest(&t.db).await;
    t.db.close_idle().await;
    let dir = export(&[
        (
            "customers.csv",
            bytes("customer_id,email\nC1,other@example.com\n"),
        ),
        (
            "orders.csv",
            bytes(&format!("{ORDERS}O4,C1,nope,1,INR,completed\n")),
        ),
    ]);
    let Err(ImportError::Rejected(report)) = import(&t.db, dir.path()).await else {
        panic!("expected rejection")
    };
    assert_eq!(report.sqlite_journal.as_deref(), Some("rollback"));
    assert_eq!(table_digest(&t.db).await, digest);
    assert_eq!(journal_mode().await, "wal");
}

/// Repeats are found whether the file is in key order (checked against the previous key
/// only) or not (a table of every key seen): here the file is sorted for its first rows,
/// then goes out of order, and repeats of an early key come after that.
async fn repeats_are_found_in_sorted_and_unsorted_stretches(t: TestDb) {
    let orders = "order_id,customer_id,ordered_at,total_amount\n\
O1,C1,2024-01-01,10\nO2,C1,2024-01-02,20\nO2,C1,2024-01-02,20\nO3,C1,2024-01-03,30\n\
O1,C1,2024-01-01,10\nO4,C1,2024-01-04,40\nO2,C1,2024-01-09,99\nO0,C1,2024-01-05,5\n";
    let dir = write_dir(&[("orders.csv", orders)]);
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.skip_invalid = true;
    let report = import_dir(&t.db, &opts).await.unwrap();
    let f = &report.files[0];
    assert_eq!(
        (f.rows_read, f.duplicates, f.rows_rejected),
        (8, 2, 1),
        "[{}] {f:?}",
        t.name
    );
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        report.errors[0].to_string(),
        "orders.csv:8: column `order_id`, value \"O2\": duplicate id with conflicting values (first seen on line 3)"
    );
    assert_eq!(t.db.count("orders").await.unwrap(), 5, "O0 to O4");
}
on_both_backends!(
    repeats_sorted_and_unsorted_sqlite,
    repeats_sorted_and_unsorted_postgres,
    repeats_are_found_in_sorted_and_unsorted_stretches
);

/// Import attempts on record, by status.
async fn recorded(db: &Db, status: &str) -> i64 {
    retentiond::with_pool!(db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM imports WHERE status = $1").bind(status).fetch_one(p).await.unwrap())
}

/// Runs an import that must be rejected; returns its report. A hang (a FIFO opened for
/// reading blocks until a writer comes) fails the test instead of stalling it.
async fn rejected_with(db: &Db, opts: &ImportOptions) -> Box<ImportReport> {
    match tokio::time::timeout(std::time::Duration::from_secs(60), import_dir(db, opts)).await {
        Ok(Err(ImportError::Rejected(r))) => r,
        Ok(other) => panic!("expected a rejected import, got {other:?}"),
        Err(_) => panic!("the import hung"),
    }
}

/// A FIFO, a directory or a device in place of a contract file, and a symbolic link unless
/// `import.follow_symlinks` is set, are refused by name before anything is read, and each
/// attempt is recorded in `imports`; so is one whose folder does not exist.
async fn only_regular_files_are_read(t: TestDb) {
    let reports = tempfile::tempdir().unwrap();
    let mut expected_rejected = 0;

    // A FIFO as orders.csv: nobody ever writes to it, so opening it to read would block.
    let dir = export(&[("orders.csv", None)]);
    let fifo = dir.path().join("orders.csv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A directory as customers.csv.
    std::fs::remove_file(dir.path().join("customers.csv")).unwrap();
    std::fs::create_dir(dir.path().join("customers.csv")).unwrap();
    let report = rejected_with(&t.db, &options(dir.path(), reports.path())).await;
    expected_rejected += 1;
    let shown: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        shown.contains(
            &"orders.csv:0: column ``, value \"\": is a FIFO (named pipe), not a regular file"
                .to_string()
        ),
        "[{}] {shown:#?}",
        t.name
    );
    assert!(
        shown.contains(
            &"customers.csv:0: column ``, value \"\": is a directory, not a regular file"
                .to_string()
        ),
        "[{}] {shown:#?}",
        t.name
    );
    assert_eq!(
        table_counts(&t.db).await.iter().map(|c| c.1).sum::<i64>(),
        0
    );
    assert_eq!(recorded(&t.db, "rejected").await, expected_rejected);

    // A symbolic link to a valid file elsewhere: refused by default, read when allowed.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("products.csv"), PRODUCTS).unwrap();
    let dir = export(&[("products.csv", None)]);
    std::os::unix::fs::symlink(
        elsewhere.path().join("products.csv"),
        dir.path().join("products.csv"),
    )
    .unwrap();
    let mut opts = options(dir.path(), reports.path());
    let report = rejected_with(&t.db, &opts).await;
    expected_rejected += 1;
    assert_eq!(
        report.errors[0].to_string(),
        "products.csv:0: column ``, value \"\": is a symbolic link, not read (set import.follow_symlinks = true to follow links)"
    );
    opts.follow_symlinks = true;
    import_dir(&t.db, &opts)
        .await
        .expect("the link is followed when allowed");
    assert_eq!(t.db.count("products").await.unwrap(), 2);
    assert_eq!(recorded(&t.db, "committed").await, 1);

    // Followed, a link still has to end at a regular file: /dev/null is a device.
    let dir = export(&[("sessions.csv", None)]);
    std::os::unix::fs::symlink("/dev/null", dir.path().join("sessions.csv")).unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.follow_symlinks = true;
    let report = rejected_with(&t.db, &opts).await;
    expected_rejected += 1;
    assert_eq!(
        report.errors[0].to_string(),
        "sessions.csv:0: column ``, value \"\": is a device, not a regular file"
    );
    assert_eq!(recorded(&t.db, "rejected").await, expected_rejected);

    // No folder at all: an I/O error, recorded as a failed attempt.
    let gone = reports.path().join("no-such-folder");
    let err = import_dir(&t.db, &options(&gone, reports.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Io { .. }), "{err:?}");
    assert_eq!(recorded(&t.db, "failed").await, 1);
    let details: String = retentiond::with_pool!(&t.db, p => sqlx::query_scalar::<_, String>("SELECT details FROM imports WHERE status = 'failed'").fetch_one(p).await.unwrap());
    assert!(
        details.contains("no-such-folder: not a directory"),
        "{details}"
    );
}
on_both_backends!(
    only_regular_files_sqlite,
    only_regular_files_postgres,
    only_regular_files_are_read
);

/// A line of a file the export should never have pointed at (a password hash), and a field
/// far longer than anything shown: errors, warnings, the summary, report.json and the
/// `imports` row show at most the first 100 characters of the offending field.
async fn file_contents_are_shown_only_as_one_clipped_field(t: TestDb) {
    // 100 characters that may be shown, then a tail that must never be.
    let shown_part = format!("root:$6$salt${}", "h".repeat(87));
    assert_eq!(shown_part.chars().count(), 100);
    let secret = format!(
        "{shown_part}TAILSECRET{}:19000:0:99999:7:::",
        "t".repeat(200)
    );
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("shadow"),
        format!("{secret}\nroot2:x\n"),
    )
    .unwrap();
    let dir = export(&[("orders.csv", None)]);
    std::os::unix::fs::symlink(
        elsewhere.path().join("shadow"),
        dir.path().join("orders.csv"),
    )
    .unwrap();
    let reports = tempfile::tempdir().unwrap();
    let everything = |report: &ImportReport| {
        let json = std::fs::read_to_string(report.report_path.as_ref().unwrap()).unwrap();
        format!("{}\n{json}\n{:?}", report.summary(), report)
    };

    // Refused as a link: nothing of the target is shown at all.
    let report = rejected_with(&t.db, &options(dir.path(), reports.path())).await;
    let text = everything(&report);
    assert!(!text.contains("root:"), "[{}] {text}", t.name);

    // Followed: its first line is read as a header, and shown only clipped.
    let mut opts = options(dir.path(), reports.path());
    opts.follow_symlinks = true;
    let report = rejected_with(&t.db, &opts).await;
    let text = everything(&report);
    assert!(
        text.contains("required column is missing from the header"),
        "{text}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("orders.csv: 1 unknown column ignored: `root:$6$salt$hhh")),
        "{:?}",
        report.warnings
    );
    assert!(
        !text.contains("TAILSECRET"),
        "[{}] more than 100 characters of the field shown: {text}",
        t.name
    );
    let details: Vec<String> = retentiond::with_pool!(&t.db, p => sqlx::query_scalar::<_, String>("SELECT details FROM imports").fetch_all(p).await.unwrap());
    assert!(
        details.iter().all(|d| !d.contains("TAILSECRET")),
        "{details:?}"
    );

    // The same for a long value in a row, and a long header that is not UTF-8.
    let mut bad_header = b"order_id,customer_id,ordered_at,".to_vec();
    bad_header.extend_from_slice(shown_part.as_bytes());
    bad_header.extend_from_slice(b"\xffTAILSECRET\n");
    for orders in [
        format!("order_id,customer_id,ordered_at\nO1,C1,{secret}\n").into_bytes(),
        bad_header,
    ] {
        let dir = export(&[("orders.csv", Some(orders))]);
        let report = rejected_with(&t.db, &options(dir.path(), reports.path())).await;
        let text = everything(&report);
        assert!(text.contains(&shown_part[..50]), "{text}");
        assert!(!text.contains("TAILSECRET"), "[{}] {text}", t.name);
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.value.chars().count() <= 101 && e.column.chars().count() <= 101),
            "{:?}",
            report.errors
        );
    }
}
on_both_backends!(
    clipped_fields_sqlite,
    clipped_fields_postgres,
    file_contents_are_shown_only_as_one_clipped_field
);

/// At most 256 extra customers.csv columns (checked in time linear in the header: 100,000
/// of them took the old header check ~25 s); unknown columns of any number give one warning
/// line per file.
async fn wide_headers_fail_fast_and_warn_once(t: TestDb) {
    let reports = tempfile::tempdir().unwrap();
    let wide = |n: usize, prefix: &str| {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        let values = vec!["x"; n].join(",");
        (names.join(","), values)
    };

    // 256 attributes are kept.
    let (names, values) = wide(256, "a");
    let dir = export(&[(
        "customers.csv",
        Some(format!("customer_id,{names}\nC1,{values}\n").into_bytes()),
    )]);
    let report = import_dir(&t.db, &options(dir.path(), reports.path()))
        .await
        .unwrap();
    assert_eq!(
        report
            .files
            .iter()
            .find(|f| f.file == "customers.csv")
            .unwrap()
            .attribute_columns
            .len(),
        256
    );

    // 100,000 extra columns: one error, at once.
    let (names, values) = wide(100_000, "a");
    let dir = export(&[(
        "customers.csv",
        Some(format!("customer_id,{names}\nC1,{values}\n").into_bytes()),
    )]);
    let started = std::time::Instant::now();
    let report = rejected_with(&t.db, &options(dir.path(), reports.path())).await;
    let secs = started.elapsed().as_secs_f64();
    assert!(
        secs < 10.0,
        "[{}] a 100,000-column header took {secs:.1} s",
        t.name
    );
    assert_eq!(report.error_count, 1, "{:?}", report.errors);
    assert_eq!(
        report.errors[0].to_string(),
        "customers.csv:1: column ``, value \"100000\": 100000 extra columns, over the limit of 256 kept as customer attributes (remove the columns not needed)"
    );

    // 100,000 unknown columns in orders.csv: one warning, ten names, the rest counted.
    let (names, values) = wide(100_000, "u");
    let orders = format!("order_id,customer_id,ordered_at,{names}\nO1,C1,2024-01-01,{values}\n");
    let dir = write_dir(&[("orders.csv", &orders)]);
    let report = import_dir(&t.db, &options(dir.path(), reports.path()))
        .await
        .unwrap();
    let about_orders: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains("orders.csv"))
        .collect();
    assert_eq!(
        about_orders,
        vec![
            "orders.csv: 100000 unknown columns ignored: `u0`, `u1`, `u2`, `u3`, `u4`, `u5`, `u6`, `u7`, `u8`, `u9`, … (first 10 shown)"
        ]
    );
    let stats = &report.files[0];
    assert_eq!(
        (stats.unknown_column_count, stats.unknown_columns.len()),
        (100_000, 10)
    );
    let json = std::fs::read_to_string(report.report_path.as_ref().unwrap()).unwrap();
    assert!(
        json.len() < 20_000,
        "report.json lists every unknown column: {} bytes",
        json.len()
    );
    assert_eq!(
        report
            .summary()
            .lines()
            .filter(|l| l.contains("unknown column"))
            .count(),
        1
    );
}
on_both_backends!(
    wide_headers_sqlite,
    wide_headers_postgres,
    wide_headers_fail_fast_and_warn_once
);

/// With `--skip-invalid`, rows out of bounds or holding a NUL byte are rejected one by one,
/// the rest imported; nothing with a NUL byte reaches either database. The future bound
/// follows `import.max_future_days`.
async fn out_of_bounds_rows_are_skipped_with_skip_invalid(t: TestDb) {
    let soon = (chrono::Utc::now() + chrono::Duration::days(3))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let orders = format!(
        "{ORDERS}O3,C1,0001-01-01,10,INR,completed\nO4,C1,2024-03-01,1e308,INR,completed\nO5,C\u{0}1,2024-03-01,10,INR,completed\nO6,C1,{soon},10,INR,completed\n"
    );
    let dir = export(&[("orders.csv", bytes(&orders))]);
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), reports.path());
    opts.skip_invalid = true;
    let report = import_dir(&t.db, &opts)
        .await
        .expect("skip-invalid commits");
    let lines: Vec<(u64, &str)> = report
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (4, "before 1970-01-01"),
            (5, "over the maximum amount of 1000000000"),
            (6, "contains a NUL byte"),
            (
                7,
                "more than 1 day(s) in the future (import.max_future_days)"
            )
        ],
        "[{}]",
        t.name
    );
    assert_eq!(t.db.count("orders").await.unwrap(), 2);
    let nul: i64 = retentiond::with_pool!(&t.db, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM customers WHERE customer_id LIKE 'C_1'").fetch_one(p).await.unwrap());
    assert_eq!(nul, 0);
    // A week's allowance takes the order three days ahead.
    opts.max_future_days = 7;
    let report = import_dir(&t.db, &opts).await.unwrap();
    assert_eq!(report.error_count, 3, "{:?}", report.errors);
    assert_eq!(t.db.count("orders").await.unwrap(), 3);
}
on_both_backends!(
    out_of_bounds_skip_sqlite,
    out_of_bounds_skip_postgres,
    out_of_bounds_rows_are_skipped_with_skip_invalid
);
