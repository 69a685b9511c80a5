//! The operations API that `sluice run --http ADDR` serves (axum):
//!
//! - `GET /health`: 200 while the process is alive.
//! - `GET /ready`: 200 when every pipeline is running with its source and sink connected (or has
//!   finished), else 503; the JSON body lists each pipeline's state.
//! - `GET /metrics`: the pipelines' metrics in the Prometheus text format.
//! - `GET /pipelines`, `GET /pipelines/{name}`: state, counts, last error, per-partition lag and
//!   committed offsets (JSON); `GET /pipelines/{name}/offsets`: the committed offsets alone.
//! - `POST /pipelines/{name}/pause|resume|restart`: operator commands. When `SLUICE_HTTP_TOKEN`
//!   is set they need `Authorization: Bearer <token>`; the read-only endpoints never do.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::pipeline::supervisor::{Command, Handle};
use crate::pipeline::{Exposition, metrics};

/// What the API serves: the supervised pipelines and their metrics.
pub struct Api {
    pipelines: Vec<Arc<Handle>>,
    registry: Registry,
    token: Option<String>,
}

impl Api {
    /// An API over `pipelines`; `token` protects the control endpoints when given.
    pub fn new(pipelines: Vec<Arc<Handle>>, token: Option<String>) -> Self {
        let exposition = Exposition::default();
        for p in &pipelines {
            exposition.add(p.name(), p.metrics());
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(exposition));
        Self {
            pipelines,
            registry,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    fn find(&self, name: &str) -> Option<&Arc<Handle>> {
        self.pipelines.iter().find(|p| p.name() == name)
    }
}

/// The API's routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/pipelines", get(list))
        .route("/pipelines/{name}", get(one))
        .route("/pipelines/{name}/offsets", get(offsets))
        .route("/pipelines/{name}/{action}", post(control))
        .with_state(api)
}

/// Serves the API on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(api))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn ready(State(api): State<Arc<Api>>) -> Response {
    let states: Vec<_> = api
        .pipelines
        .iter()
        .map(|p| {
            json!({
                "name": p.name(),
                "state": p.state(),
                "up": p.metrics().is_up(),
                "ready": p.is_ready(),
            })
        })
        .collect();
    let ready = api.pipelines.iter().all(|p| p.is_ready());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({ "ready": ready, "pipelines": states }))).into_response()
}

async fn metrics_text(State(api): State<Arc<Api>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::render(&api.registry),
    )
        .into_response()
}

async fn list(State(api): State<Arc<Api>>) -> Response {
    let all: Vec<_> = api.pipelines.iter().map(|p| p.status()).collect();
    Json(all).into_response()
}

async fn one(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.find(&name) {
        Some(p) => Json(p.status()).into_response(),
        None => not_found(&name),
    }
}

async fn offsets(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.find(&name) {
        Some(p) => Json(p.offsets()).into_response(),
        None => not_found(&name),
    }
}

async fn control(
    State(api): State<Arc<Api>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = &api.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "a valid bearer token is needed (SLUICE_HTTP_TOKEN)" })),
            )
                .into_response();
        }
    }
    let Some(p) = api.find(&name) else {
        return not_found(&name);
    };
    let cmd = match action.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "restart" => Command::Restart,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": format!("no action `{action}`: pause, resume or restart") })),
            )
                .into_response();
        }
    };
    if !p.send(cmd) {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": format!("pipeline `{name}` has ended"), "state": p.state() })),
        )
            .into_response();
    }
    tracing::info!(pipeline = %name, action = %action, "operator command accepted");
    (
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": action, "state": p.state() })),
    )
        .into_response()
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no pipeline `{name}`") })),
    )
        .into_response()
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
