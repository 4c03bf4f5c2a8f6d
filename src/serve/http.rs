//! The HTTP routes. Only `GET /` counts a visit.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{commit::Committer, follow, metrics::Metrics};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub committer: Committer,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Value>,
    pub pod_name: Arc<str>,
    /// Set when the server begins to stop, so `/readyz` takes the pod out of
    /// its Services first.
    pub stopping: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(visit))
        .route("/visits", get(visits))
        .route("/carry", post(carry))
        .route("/config", get(config))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn visit(State(state): State<AppState>) -> Response {
    match state.committer.visit().await {
        Ok(count) => Html(page(&state.pod_name, count)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// The count on disk; with `Upgrade: visitcounter-visits`, the count and
/// then each new one on the upgraded connection ([`follow`]).
async fn visits(State(state): State<AppState>, mut request: Request) -> Response {
    if !follow::asked(request.headers()) {
        return Json(json!({ "visits": state.committer.durable() })).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(follow::stream(upgrade, state.committer.follow()));
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, follow::PROTOCOL)],
    )
        .into_response()
}

/// `POST /carry {"key": K, "visits": N}`: a blue/green rollout's operator
/// carries the count of the other StatefulSet's pod of this ordinal in
/// (`store::Carried::carry`). Answers with this pod's count.
async fn carry(State(state): State<AppState>, Json(body): Json<CarryBody>) -> Response {
    match state.committer.carry(body.key, body.visits).await {
        Ok(count) => Json(json!({ "visits": count })).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct CarryBody {
    key: String,
    visits: u64,
}

async fn config(State(state): State<AppState>) -> Json<Value> {
    Json(state.config.as_ref().clone())
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.stopping.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

fn page(pod: &str, count: u64) -> String {
    let pod = escape(pod);
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Visits: {count}</title></head>\n\
         <body><h1>Visits: {count}</h1><p>Served by pod <code>{pod}</code>.</p></body></html>\n"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_shows_the_count_and_an_escaped_pod_name() {
        let page = super::page("web-0<script>", 7);
        assert!(page.contains("<h1>Visits: 7</h1>"));
        assert!(page.contains("web-0&lt;script&gt;"));
    }
}
