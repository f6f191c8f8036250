//! A local mock provider for benchmarks: accepts retentiond's signed webhook
//! (`[delivery.webhook]`) as fast as it can and counts receipts.
//!
//! ```text
//! cargo run --release --example mock_provider -- 127.0.0.1:8999
//! ```
//!
//! `POST /` (any path) answers 200 `{"id": "mock-N"}`; `GET /stats` answers
//! `{"received": N, "unique_keys": N, "duplicates": N}` counted by `Idempotency-Key`, so a
//! benchmark can check that nothing was sent twice as well as how fast it went;
//! `DELETE /stats` resets the counts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::HeaderMap, routing::get};
use serde_json::{Value, json};

#[derive(Default)]
struct Counts {
    received: u64,
    keys: HashSet<String>,
}

type Shared = Arc<Mutex<Counts>>;

async fn receive(State(counts): State<Shared>, headers: HeaderMap) -> Json<Value> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut c = counts.lock().expect("counts lock");
    c.received += 1;
    c.keys.insert(key);
    Json(json!({ "id": format!("mock-{}", c.received) }))
}

async fn reset(State(counts): State<Shared>) -> Json<Value> {
    *counts.lock().expect("counts lock") = Counts::default();
    Json(json!({ "received": 0 }))
}

async fn stats(State(counts): State<Shared>) -> Json<Value> {
    let c = counts.lock().expect("counts lock");
    let unique = c.keys.len() as u64;
    Json(
        json!({ "received": c.received, "unique_keys": unique, "duplicates": c.received - unique }),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8999".into());
    let counts = Shared::default();
    let app = Router::new()
        .route("/stats", get(stats).delete(reset))
        .fallback(receive)
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("mock provider listening on http://{addr}");
    axum::serve(listener, app).await
}
