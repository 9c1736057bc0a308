//! `/healthz` and `/metrics` on a loopback address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// What `/healthz` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    pub runs: u64,
    pub running: bool,
    pub last_outcome: Option<crate::state::RunOutcome>,
    pub last_success: Option<String>,
    /// Why the service is degraded (last run failed, a provider unreachable, ...).
    pub reasons: Vec<String>,
    /// Per provider: last and next scan, requests today and projected, contacts, and the
    /// freshness its quota allows (SPEC section 14).
    pub providers: Vec<crate::cadence::Outlook>,
}

/// Publishes each provider's scan cadence: in `/healthz`, and as gauges in `/metrics`
/// (labelled by provider; timestamps in seconds since the epoch, absent when unknown).
pub fn export_cadence(health: &SharedHealth, outlooks: Vec<crate::cadence::Outlook>) {
    for o in &outlooks {
        let p = o.provider.as_str();
        let ts = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp() as f64);
        if let Some(t) = ts(o.last_scan) {
            metrics::gauge!("contact_sync_provider_last_scan_timestamp_seconds", "provider" => p)
                .set(t);
        }
        if let Some(t) = ts(o.next_scan) {
            metrics::gauge!("contact_sync_provider_next_scan_timestamp_seconds", "provider" => p)
                .set(t);
        }
        metrics::gauge!("contact_sync_provider_requests_today", "provider" => p)
            .set(o.requests_today as f64);
        metrics::gauge!("contact_sync_provider_requests_projected_today", "provider" => p)
            .set(o.projected_today as f64);
        if let Some(b) = o.daily_budget {
            metrics::gauge!("contact_sync_provider_daily_budget", "provider" => p).set(b as f64);
        }
        metrics::gauge!("contact_sync_provider_contacts", "provider" => p).set(o.contacts as f64);
        if let Some(f) = o.freshness {
            metrics::gauge!("contact_sync_provider_freshness_seconds", "provider" => p)
                .set(f.as_secs_f64());
        }
        metrics::gauge!("contact_sync_provider_deferred", "provider" => p)
            .set(if o.deferred.is_some() { 1.0 } else { 0.0 });
    }
    health.lock().unwrap_or_else(|e| e.into_inner()).providers = outlooks;
}

/// Shared health state.
pub type SharedHealth = Arc<Mutex<Health>>;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0,
                    ],
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "Metrics recorder not installed.");
                    None
                }
            }
        })
        .as_ref()
}

#[derive(Clone)]
struct AppState {
    health: SharedHealth,
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let h = s.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let status = if h.reasons.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    let code = if h.reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({"status": status, "health": h})),
    )
}

async fn metrics_text() -> impl IntoResponse {
    match prometheus() {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain")],
            "metrics unavailable\n".to_string(),
        ),
    }
}

/// Serves health and metrics on `addr` until `stop` is cancelled; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: SharedHealth,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "Health listener stopped.");
        }
    });
    Ok(bound)
}
