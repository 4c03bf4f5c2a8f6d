//! The operator's admin endpoints: `/healthz`, `/readyz` and `/metrics`.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};

use crate::controller::Metrics;

/// Where the operator is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    /// Waiting for the lease held by another replica.
    Standby = 1,
    /// Leading; the watches have not listed yet.
    Syncing = 2,
    /// Leading and reconciling.
    Reconciling = 3,
    Stopping = 4,
}

/// The phase, shared between the operator and its endpoints.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::SeqCst);
    }

    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::SeqCst) {
            1 => Phase::Standby,
            2 => Phase::Syncing,
            3 => Phase::Reconciling,
            4 => Phase::Stopping,
            _ => Phase::Starting,
        }
    }
}

struct AdminState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(AdminState { health, metrics }))
}

/// Ready once the watches have listed. A standby replica is ready too: it
/// is doing its job (waiting), and a rollout of the operator's Deployment
/// must not wait for a lease the old pod holds.
async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    match state.health.phase() {
        Phase::Reconciling => (StatusCode::OK, "ready: reconciling"),
        Phase::Standby => (StatusCode::OK, "ready: standby, waiting for the lease"),
        Phase::Syncing => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the watches have not listed yet",
        ),
        Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting"),
        Phase::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "not ready: stopping"),
    }
}

async fn metrics_text(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
