//! Real third-party data converted to the contract imports cleanly.

use retentiond::datasets::{Dataset, convert};
use retentiond::ingest::import_dir;

use crate::helpers::{TestDb, shared_data};
use crate::import::options;
use crate::on_both_backends;

async fn cdnow_imports_cleanly(t: TestDb) {
    let Some(src) = shared_data("cdnow") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let summary = convert(Dataset::Cdnow, &src, out.path()).unwrap();
    assert_eq!((summary.orders, summary.customers), (6919, 2357));
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), reports.path());
    opts.batch_rows = 500;
    let report = import_dir(&t.db, &opts).await.unwrap();
    assert_eq!(report.error_count, 0);
    assert_eq!(t.db.count("orders").await.unwrap(), 6919);
    assert_eq!(t.db.count("customers").await.unwrap(), 2357);
    let total: f64 = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT SUM(total_amount) FROM orders").fetch_one(p).await.unwrap());
    assert!((total - 244_091.94).abs() < 0.01, "sum of dollars {total}");
}
on_both_backends!(cdnow_sqlite, cdnow_postgres, cdnow_imports_cleanly);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completejourney_imports_cleanly() {
    let Some(src) = shared_data("completejourney") else {
        return;
    };
    let t = crate::helpers::sqlite().await;
    let out = tempfile::tempdir().unwrap();
    let summary = convert(Dataset::CompletejourneyProductCategory, &src, out.path()).unwrap();
    assert_eq!((summary.customers, summary.orders), (2469, 155_848));
    let reports = tempfile::tempdir().unwrap();
    let mut opts = options(out.path(), reports.path());
    opts.batch_rows = 500;
    let report = import_dir(&t.db, &opts).await.unwrap();
    assert_eq!(report.error_count, 0);
    assert_eq!(t.db.count("orders").await.unwrap(), 155_848);
    assert_eq!(
        t.db.count("order_items").await.unwrap() as u64,
        summary.order_items
    );
    assert_eq!(t.db.count("customers").await.unwrap(), 2469);
    let categories: i64 = retentiond::with_pool!(&t.db, p => sqlx::query_scalar("SELECT COUNT(DISTINCT category) FROM products").fetch_one(p).await.unwrap());
    assert!(
        categories > 250,
        "product_category has ~300 values, got {categories}"
    );
}
