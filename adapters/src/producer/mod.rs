//! The producer's HTTP service (axum + tower): the front door of the pipeline.
//!
//! - `POST /v1/events`: one JSON event, a JSON array of events, or NDJSON; bearer tokens.
//! - `POST /v1/webhooks/{source}`: a third party's raw webhook, verified by its signature.
//! - `GET /healthz` (alive), `GET /readyz` (accepting, and the stream takes its calls),
//!   `GET /metrics` (Prometheus), `GET /openapi.json` (this API, described).
//!
//! `202 Accepted` is answered only once the core producer reports the events durable in the
//! stream; every other answer means nothing of the request was accepted.

pub mod error;
pub mod ingest;
pub mod serve;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use microbatch_core::catalog::Catalog;
use microbatch_core::driver::{ProducerHandle, SubmitError};
use microbatch_core::event::{Envelope, IdSource};
use microbatch_core::ports::Clock;
use serde_json::json;

use crate::config::{ProducerConfig, WebhookConfig};
use crate::runtime::{OsIds, SystemClock};
use error::ApiError;
use ingest::{BodyFormat, Limits};
use webhook::Webhook;

/// The OpenAPI document of this service, served and tested against the routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub handle: ProducerHandle,
    pub tokens: Vec<String>,
    pub webhooks: HashMap<String, WebhookConfig>,
    pub limits: Limits,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub retry_after_secs: u64,
    pub metrics: Option<PrometheusHandle>,
    /// False while starting and once shutting down.
    pub ready: AtomicBool,
    /// How long the stream may fail the producer's calls before it is not ready.
    pub stream_failure_grace: Duration,
}

impl AppState {
    pub fn new(
        catalog: Arc<Catalog>,
        handle: ProducerHandle,
        config: &ProducerConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        AppState {
            catalog,
            handle,
            tokens: config.tokens.clone(),
            webhooks: config
                .webhooks
                .iter()
                .map(|w| (w.source.clone(), w.clone()))
                .collect(),
            limits: Limits {
                max_events: config.max_events_per_request,
                max_depth: config.max_json_depth,
            },
            max_body_bytes: config.max_body_bytes,
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            retry_after_secs: config.retry_after_secs,
            metrics,
            ready: AtomicBool::new(true),
            stream_failure_grace: Duration::from_millis(config.stream_failure_grace_ms),
        }
    }
}

/// The service's routes and layers.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/webhooks/{source}", post(post_webhook))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(record_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .with_state(state)
}

/// A path no route serves, answered like every other refusal: JSON naming what was wrong.
async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {method} {}; the routes are in GET /openapi.json",
            uri.path()
        ),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; the routes are in GET /openapi.json",
            uri.path()
        ),
    )
}

/// Requests, errors and latency by route: the producer's key indicators.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let code = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!("microbatch_http_requests_total", "route" => route.clone(), "status" => code.to_string()).increment(1);
    metrics::histogram!("microbatch_http_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    crate::telemetry::emf_count("produce", "HttpRequests", 1.0);
    if code >= 500 {
        crate::telemetry::emf_count("produce", "Http5xx", 1.0);
    }
    crate::telemetry::emf_value(
        "produce",
        "HttpLatencyMillis",
        "Milliseconds",
        elapsed.as_secs_f64() * 1000.0,
    );
    response
}

async fn read_body(body: Body, limit: usize, within: Duration) -> Result<axum::body::Bytes, ApiError> {
    tokio::time::timeout(within, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::timeout(format!(
                "the body did not arrive within {} ms (producer.body_timeout_ms)",
                within.as_millis()
            ))
        })?
        .map_err(|e| {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::too_large(format!("the body is larger than {limit} bytes"))
            } else {
                // A chunked encoding that does not parse, or a body cut short.
                ApiError::malformed(format!("the body could not be read: {e}"))
            }
        })
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.tokens.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    // Constant-time per token, so the comparison leaks nothing about a token's prefix.
    let ok = state
        .tokens
        .iter()
        .any(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the bearer token is not valid"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn rejected(event_type: &str, reason: &'static str, n: usize) {
    metrics::counter!("microbatch_events_rejected_total", "event_type" => event_type.to_owned(), "reason" => reason)
        .increment(n as u64);
}

async fn submit(state: &AppState, events: Vec<Envelope>) -> Result<Response, ApiError> {
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let mut by_type: HashMap<String, u64> = HashMap::new();
    for e in &events {
        *by_type.entry(e.event_type.clone()).or_default() += 1;
    }
    match state.handle.submit(events).await {
        Ok(()) => {
            for (t, n) in by_type {
                metrics::counter!("microbatch_events_accepted_total", "event_type" => t).increment(n);
            }
            crate::telemetry::emf_count("produce", "EventsAccepted", ids.len() as f64);
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"accepted": ids.len(), "ids": ids})),
            )
                .into_response())
        }
        Err(e) => {
            for t in by_type.keys() {
                rejected(t, "not_durable", 1);
            }
            Err(match e {
                SubmitError::Overloaded => {
                    metrics::counter!("microbatch_backpressure_total").increment(1);
                    crate::telemetry::emf_count("produce", "Backpressure", 1.0);
                    ApiError::overloaded(state.retry_after_secs)
                }
                SubmitError::TooLarge(m) => ApiError::too_large(m),
                SubmitError::Closed | SubmitError::Failed(_) => {
                    let mut err = ApiError::overloaded(state.retry_after_secs);
                    err.message = format!("{e}; nothing was accepted, retry");
                    err
                }
            })
        }
    }
}

async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let format =
        BodyFormat::from_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))?;
    let bytes = read_body(body, state.max_body_bytes, state.body_timeout).await?;
    let now = SystemClock.now();
    let events = ingest::parse_events(
        &bytes,
        format,
        state.limits,
        &state.catalog,
        &mut OsIds,
        "api",
        now,
    )
    // A rejected request is counted once, by why; its events have no trusted type yet.
    .inspect_err(|e| rejected("(request)", e.code, 1))?;
    submit(&state, events).await
}

async fn post_webhook(
    State(state): State<Arc<AppState>>,
    source: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(source) = source
        .map_err(|e| ApiError::malformed(format!("the webhook source in the path cannot be read: {e}")))?;
    let config = state.webhooks.get(&source).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no webhook source {source:?} is configured"),
        )
    })?;
    let bytes = read_body(body, state.max_body_bytes, state.body_timeout).await?;
    let now = SystemClock.now();
    webhook::verify(config, &headers, &bytes, now)?;
    let bytes = webhook::payload(config, &headers, &bytes)?;
    if ingest::json_depth(std::str::from_utf8(&bytes).unwrap_or("")) > state.limits.max_depth {
        return Err(ApiError::malformed(format!(
            "JSON nests deeper than {} levels",
            state.limits.max_depth
        )));
    }
    let catalog = &state.catalog;
    match webhook::to_event(config, &headers, &bytes, |t| catalog.event_type(t).is_some(), now)? {
        Webhook::Ignored { event_type } => {
            rejected(&event_type, "unknown_type", 1);
            Ok((
                StatusCode::OK,
                Json(json!({"ignored": event_type, "reason": "not in the catalog"})),
            )
                .into_response())
        }
        Webhook::Event(mut event) => {
            if event.id.as_str().is_empty() {
                event.id = OsIds.next_id(now);
            }
            let value: serde_json::Value = serde_json::from_str(event.payload_json())
                .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?;
            if let Some(schema) = catalog
                .event_type(&event.event_type)
                .and_then(|d| d.schema.as_ref())
            {
                let problems: Vec<error::Problem> = schema
                    .iter_errors(&value)
                    .take(20)
                    .map(|e| error::Problem::new(e.to_string()).field(e.instance_path().to_string()))
                    .collect();
                if !problems.is_empty() {
                    rejected(&event.event_type, "schema", 1);
                    return Err(ApiError::invalid(problems));
                }
            }
            if let Err(problems) = ingest::unstorable(catalog, &event, Some(value), true) {
                rejected(&event.event_type, "unstorable", 1);
                return Err(ApiError::invalid(problems));
            }
            submit(&state, vec![*event]).await
        }
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        )
            .into_response();
    }
    if let Some((since, error)) = state.handle.stream_failing_since() {
        let failing_for = SystemClock.now().saturating_since(since);
        if failing_for >= state.stream_failure_grace {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "stream unavailable",
                    "failing_for_ms": u64::try_from(failing_for.as_millis()).unwrap_or(u64::MAX),
                    "error": error,
                })),
            )
                .into_response();
        }
    }
    Json(json!({"status": "ready", "pending_events": state.handle.pending()})).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// How long a graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
