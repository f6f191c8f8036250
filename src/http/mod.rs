//! The daemon's inbound HTTP server (axum): health, Prometheus metrics, one-click unsubscribe
//! (RFC 8058) and the delivery providers' webhooks.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the retention report (`crate::report`), when the server has campaigns to report on |
//! | `GET /healthz` | `ok` when the database answers `SELECT 1`, 503 otherwise |
//! | `GET /metrics` | Prometheus text: the recorder's metrics plus gauges read from the database |
//!
//! `GET /` and `/metrics` require `Authorization: Bearer <token>` when `http.auth_token_env`
//! names a token ([`auth`]); the other routes authenticate their own way or must stay public.
//! | `GET /unsubscribe/{token}` | a confirmation page; changes nothing (mail scanners follow links) |
//! | `POST /unsubscribe/{token}` | the one-click POST (or the page's form): suppresses the channel |
//! | `POST /webhooks/{provider}` | sendgrid, postmark, mailgun, twilio, whatsapp; each verified its own way |
//! | `POST /webhooks/retentiond` | events from receivers of our signed-webhook provider, signed with its secret (`webhooks::retentiond`) |
//! | `GET /webhooks/whatsapp` | Meta's subscription handshake |
//!
//! A webhook request without valid credentials (unsigned, badly signed, forged, altered, or
//! signed further from our clock than `http.webhooks.tolerance_seconds`) answers 401 and is
//! logged at warn, without the secret or the payload.
//! Every database change a request makes happens in one transaction. Webhook events are recorded
//! once each in `webhook_events`, so a provider's retry or a replayed request changes nothing.
//! Logs carry the route template, never the URI (unsubscribe tokens are capabilities), and never
//! secrets, email addresses or full phone numbers.

mod auth;
mod metrics;
mod settings;
pub(crate) mod store;
mod unsubscribe;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument as _;

use crate::db::Db;

pub use auth::{AuthToken, exposed};
pub use metrics::{DELIVERY_LATENCY_BUCKETS, install_metrics_recorder};
pub use settings::{WebhookSecrets, WebhookSettings};
pub use webhooks::{PROVIDERS, replay_window_secs};

/// Largest request body accepted (webhook batches included); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long `/healthz` waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers share. Cheap to clone (pools and handles are reference-counted).
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// Signs and verifies unsubscribe tokens (`crate::unsubscribe`); the same secret the
    /// campaign run used to sign the links.
    pub unsubscribe_secret: Vec<u8>,
    /// Webhook credentials; a provider without one answers 404 "not configured".
    pub webhooks: WebhookSecrets,
    /// `campaigns.public_base_url` without a trailing slash: Twilio signs the public URL it
    /// called, `{public_base_url}/webhooks/twilio`.
    pub public_base_url: String,
    /// From [`install_metrics_recorder`].
    pub metrics: PrometheusHandle,
    /// Shown on the unsubscribe pages.
    pub brand_name: String,
    /// What `GET /` reports with; `None` answers 404 (a server without campaign settings).
    pub report: Option<ReportContext>,
    /// When set, `GET /` and `/metrics` answer 401 without `Authorization: Bearer <token>`.
    pub auth_token: Option<AuthToken>,
}

/// The settings and (reloadable) campaigns the report at `GET /` reads.
#[derive(Clone)]
pub struct ReportContext {
    pub settings: crate::config::Settings,
    pub campaigns: crate::campaigns::SharedCampaigns,
}

// Secrets stay out of logs; the pool's connect options may hold a password.
impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db.backend())
            .field("unsubscribe_secret", &"<redacted>")
            .field("webhooks", &self.webhooks)
            .field("public_base_url", &self.public_base_url)
            .field("brand_name", &self.brand_name)
            .field("auth_token", &self.auth_token.is_some())
            .finish_non_exhaustive()
    }
}

type Shared = Arc<AppState>;

/// All routes, with the body limit and per-request tracing spans; the operator endpoints
/// behind the optional bearer token.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let operator = Router::new()
        .route("/", get(report))
        .route("/metrics", get(metrics::scrape))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(operator)
        .route("/healthz", get(healthz))
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::confirm_page).post(unsubscribe::unsubscribe),
        )
        .route(
            "/webhooks/{provider}",
            get(webhooks::verify_subscription).post(webhooks::receive),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    state.webhooks.log_status();
    if exposed(addr, state.auth_token.as_ref()) {
        tracing::warn!(%addr, "the report (GET /) and /metrics are open to anyone who reaches this address: set http.auth_token_env to require a bearer token, or bind a loopback address");
    }
    tracing::info!(%addr, "HTTP server listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(%addr, "HTTP server stopped");
    Ok(())
}

async fn healthz(State(s): State<Shared>) -> Response {
    let ping = async {
        crate::with_pool!(&s.db, p => sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(p).await)
    };
    match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
        Ok(Ok(_)) => plain(StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database error");
            plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
        Err(_) => {
            tracing::warn!("health check: database timed out");
            plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

/// `GET /`: the report page, from what the database holds now (attribution and monitoring are
/// refreshed by the daily score job, not by a page view).
async fn report(State(s): State<Shared>) -> Response {
    let Some(r) = &s.report else {
        return plain(StatusCode::NOT_FOUND, "no report on this server");
    };
    let set = r.campaigns.current();
    let today = crate::scheduler::schedule::local_day(chrono::Utc::now(), r.settings.timezone());
    let (from, to) = crate::measurement::default_period(&r.settings.measurement, today);
    let page = async {
        let input = crate::report::gather(&s.db, &r.settings, &set, from, to, false).await?;
        crate::report::render(&r.settings, &input)
    };
    match page.await {
        Ok(html) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "report failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the report could not be built; see the daemon's log",
            )
        }
    }
}

/// One span per request with the route template (never the URI: it may hold a token), and a
/// request counter by route and status.
async fn trace_request(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!("http", %method, %route);
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            ms = start.elapsed().as_millis() as u64,
            "request done"
        )
    });
    ::metrics::counter!("retentiond_http_requests_total", "route" => route, "status" => status.to_string()).increment(1);
    resp
}

/// A `text/plain` response.
pub(crate) fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
