//! The producer's HTTP API over real routes: every status it promises, with its message, and 202
//! only once the events are in the stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use microbatch_adapters::config::{ProducerConfig as HttpConfig, WebhookConfig};
use microbatch_adapters::producer::{AppState, OPENAPI, router};
use microbatch_adapters::runtime::{OsEntropy, SystemClock};
use microbatch_adapters::workload::{hub_signature, stripe_signature};
use microbatch_core::catalog::Catalog;
use microbatch_core::driver::{Producer, ProducerConfig};
use microbatch_core::kpl::HashKeyRange;
use microbatch_core::ports::{Clock, NoObserver, PortError, PutAck, PutRecord, ShardInfo, StreamWriter};
use microbatch_core::position::{SequenceNumber, ShardId};
use serde_json::Value;
use std::sync::Mutex;
use tower::ServiceExt;

/// A one-shard stream that keeps what is put, to check that 202 comes after the put.
#[derive(Default)]
struct MemStream {
    records: Mutex<Vec<PutRecord>>,
    /// While set, every call fails as an unreachable stream does.
    down: std::sync::atomic::AtomicBool,
}

impl MemStream {
    fn record_count(&self) -> usize {
        self.records.lock().unwrap().len()
    }
}

impl MemStream {
    fn check_up(&self) -> Result<(), PortError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PortError::unavailable(
                "stream",
                "AccessDeniedException: not authorized",
            ));
        }
        Ok(())
    }
}

impl StreamWriter for MemStream {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        self.check_up()?;
        let id = ShardId::new("shardId-000000000000");
        Ok(vec![ShardInfo {
            id,
            parent: None,
            adjacent_parent: None,
            range: HashKeyRange::FULL,
            closed: false,
        }])
    }

    async fn put_records(
        &self,
        records: Vec<PutRecord>,
    ) -> Result<Vec<Result<PutAck, PortError>>, PortError> {
        self.check_up()?;
        let mut all = self.records.lock().unwrap();
        let acks = records
            .iter()
            .enumerate()
            .map(|(i, _)| {
                Ok(PutAck {
                    shard: ShardId::new("shardId-000000000000"),
                    seq: SequenceNumber::from_u128((all.len() + i) as u128),
                })
            })
            .collect();
        all.extend(records);
        Ok(acks)
    }
}

fn catalog() -> Arc<Catalog> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    Arc::new(microbatch_adapters::catalog_dir::load(&dir).unwrap())
}

/// A router over a producer running on an in-memory stream (leaked: it lives for the test).
async fn app(config: HttpConfig) -> (axum::Router, &'static MemStream) {
    let stream: &'static MemStream = Box::leak(Box::default());
    let (producer, handle) = Producer::start(
        stream,
        &SystemClock,
        &OsEntropy,
        &NoObserver,
        ProducerConfig {
            max_pending_events: config.max_pending_events,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    tokio::spawn(producer.run(std::future::pending()));
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let state = Arc::new(AppState::new(catalog(), handle, &config, Some(metrics)));
    (router(state), stream)
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

fn post(path: &str, content_type: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(Body::from(body.into()))
        .unwrap()
}

const REFUND: &str = r#"{"type":"order_refunded","id":"r-1","payload":{"order_id":"o-1","amount":5}}"#;

#[tokio::test]
async fn accepted_events_are_in_the_stream_when_202_is_answered() {
    let (app, stream) = app(HttpConfig::default()).await;
    let (status, _, body) = call(
        &app,
        post("/v1/events", "application/json", format!("[{REFUND},{REFUND}]")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["ids"][0], "r-1");
    assert!(stream.record_count() >= 1, "202 only after the put");
    let nd = format!("{REFUND}\n{}\n", REFUND.replace("r-1", "r-2"));
    let (status, _, _) = call(&app, post("/v1/events", "application/x-ndjson", nd)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn bad_requests_get_their_status_and_a_message() {
    let (app, _) = app(HttpConfig {
        max_body_bytes: 2048,
        max_events_per_request: 2,
        ..HttpConfig::default()
    })
    .await;
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/v1/events", "application/json", "{nope"),
            StatusCode::BAD_REQUEST,
            "body is not valid JSON",
        ),
        (
            post("/v1/events", "text/csv", REFUND),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type \"text/csv\" is not supported",
        ),
        (
            post("/v1/events", "application/json", "x".repeat(4096)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than 2048 bytes",
        ),
        (
            post(
                "/v1/events",
                "application/json",
                format!("[{REFUND},{REFUND},{REFUND}]"),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "3 events in one request; the limit is 2",
        ),
        (
            post(
                "/v1/events",
                "application/json",
                r#"{"type":"order_refunded","payload":{"order_id":"o"}}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1 problem(s); nothing was accepted",
        ),
        (
            post(
                "/v1/events",
                "application/json",
                r#"{"type":"nope","payload":{}}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1 problem(s)",
        ),
        (
            post("/v1/webhooks/unknown", "application/json", "{}"),
            StatusCode::NOT_FOUND,
            "no webhook source \"unknown\" is configured",
        ),
    ];
    for (req, status, message) in cases {
        let (got, _, body) = call(&app, req).await;
        assert_eq!(got, status, "{body}");
        let text = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(message),
            "{text:?} should start with {message:?}"
        );
        assert_eq!(body["error"]["status"], status.as_u16());
    }
    let (_, _, body) = call(
        &app,
        post(
            "/v1/events",
            "application/json",
            r#"{"type":"order_refunded","payload":{"order_id":"o"}}"#,
        ),
    )
    .await;
    assert_eq!(body["error"]["problems"][0]["field"], "/payload");
    assert_eq!(
        body["error"]["problems"][0]["reason"],
        "\"amount\" is a required property"
    );
}

/// A client that sends its headers and then trickles the body, or stops, gets 408 once the body
/// timeout passes, and nothing of it reaches the stream.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let (app, stream) = app(HttpConfig {
        body_timeout_ms: 200,
        ..HttpConfig::default()
    })
    .await;
    let first: Result<axum::body::Bytes, std::io::Error> = Ok(axum::body::Bytes::from_static(
        br#"{"type":"page_viewed","payload":{"#,
    ));
    let stalled = futures::StreamExt::chain(
        futures::stream::once(async move { first }),
        futures::stream::pending(),
    );
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), call(&app, req))
        .await
        .expect("no answer: the stalled body holds the request");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("producer.body_timeout_ms"), "{body}");
    assert_eq!(stream.record_count(), 0, "nothing of it was put");
}

/// The producer's server on a free port, with `header_timeout`, for tests at the socket level.
async fn serve(app: axum::Router, header_timeout: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(microbatch_adapters::producer::serve::serve(
        listener,
        app,
        header_timeout,
        std::future::pending(),
    ));
    addr
}

/// `GET /healthz` on a connection of its own: the server still answers.
async fn healthz(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut ok = tokio::net::TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    until_closed(&mut ok, Duration::from_secs(5)).await.unwrap()
}

/// Reads what the server sends until it closes the connection, or `None` if it keeps it open
/// past `within`.
async fn until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .ok()
        .map(|_| got)
}

/// Clients that trickle their headers, or connect and say nothing, are dropped after the header
/// timeout, while the server goes on answering everyone else.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_the_rest_are_served() {
    use tokio::io::AsyncWriteExt;
    let (app, _) = app(HttpConfig::default()).await;
    let addr = serve(app, Duration::from_millis(300)).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .await
        .unwrap();
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let closed = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a trickled header held its connection open");
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(
            until_closed(c, Duration::from_secs(5)).await.is_some(),
            "idle connection {i} was kept"
        );
    }
    let answer = healthz(addr).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A body sent chunked, with no length to refuse it by up front, is cut off at the limit: 413,
/// and nothing of it is put.
#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    let (app, stream) = app(HttpConfig {
        max_body_bytes: 64 * 1024,
        ..HttpConfig::default()
    })
    .await;
    let chunk = axum::body::Bytes::from(vec![b' '; 16 * 1024]);
    let chunks = futures::stream::iter((0..16).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let req = Request::post("/v1/events")
        .header("content-type", "application/json")
        .body(Body::from_stream(chunks))
        .unwrap();
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("65536"),
        "{body}"
    );
    assert_eq!(stream.record_count(), 0);
}

/// Headers larger than the server reads are refused (431) before any handler runs, and the
/// server goes on serving.
#[tokio::test]
async fn oversized_headers_are_refused() {
    use tokio::io::AsyncWriteExt;
    let (app, _) = app(HttpConfig::default()).await;
    let addr = serve(app, Duration::from_secs(5)).await;
    let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = big.write_all(header.as_bytes()).await;
    let answer = until_closed(&mut big, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    let answer = healthz(addr).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

/// A signature made with another source's secret is a forgery here: each source checks its own.
#[tokio::test]
async fn a_signature_valid_for_another_source_is_refused() {
    let config = HttpConfig {
        webhooks: vec![
            WebhookConfig::hub("github", vec!["gh-secret".into()]),
            WebhookConfig::hub("gitea", vec!["gitea-secret".into()]),
        ],
        ..HttpConfig::default()
    };
    let (app, stream) = app(config).await;
    let push = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"commits":[]}"#;
    let req = Request::post("/v1/webhooks/gitea")
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-43")
        .header("x-hub-signature-256", hub_signature("gh-secret", push))
        .body(Body::from(&push[..]))
        .unwrap();
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("X-Hub-Signature-256 does not match"), "{body}");
    assert_eq!(stream.record_count(), 0);
}

#[tokio::test]
async fn bearer_tokens_guard_the_events_route() {
    let (app, _) = app(HttpConfig {
        tokens: vec!["s3cret".into()],
        ..HttpConfig::default()
    })
    .await;
    let (status, _, body) = call(&app, post("/v1/events", "application/json", REFUND)).await;
    assert_eq!(
        (status, body["error"]["message"].as_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "missing Authorization: Bearer <token>")
    );
    let wrong = Request::post("/v1/events")
        .header("content-type", "application/json")
        .header("authorization", "Bearer nope")
        .body(Body::from(REFUND))
        .unwrap();
    assert_eq!(call(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = Request::post("/v1/events")
        .header("content-type", "application/json")
        .header("authorization", "Bearer s3cret")
        .body(Body::from(REFUND))
        .unwrap();
    assert_eq!(call(&app, right).await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn overload_answers_503_with_retry_after() {
    // A producer that never runs: the first request waits, pending is at the limit of 1.
    let stream: &'static MemStream = Box::leak(Box::default());
    let (producer, handle) = Producer::start(
        stream,
        &SystemClock,
        &OsEntropy,
        &NoObserver,
        ProducerConfig {
            max_pending_events: 1,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let config = HttpConfig {
        retry_after_secs: 3,
        ..HttpConfig::default()
    };
    let app = router(Arc::new(AppState::new(catalog(), handle, &config, None)));
    let first = tokio::spawn(
        app.clone()
            .oneshot(post("/v1/events", "application/json", REFUND)),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, headers, body) = call(
        &app,
        post("/v1/events", "application/json", REFUND.replace("r-1", "r-2")),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(body["error"]["code"], "overloaded");
    // Once the producer runs, the waiting request completes.
    tokio::spawn(producer.run(std::future::pending()));
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn signed_webhooks_are_accepted_and_forgeries_refused() {
    let config = HttpConfig {
        webhooks: vec![
            WebhookConfig::hub("github", vec!["gh".into()]),
            WebhookConfig::timestamped("stripe", vec!["whsec".into()]),
        ],
        ..HttpConfig::default()
    };
    let (app, _) = app(config).await;
    let push = br#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"commits":[]}"#;
    let req = Request::post("/v1/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-42")
        .header("x-hub-signature-256", hub_signature("gh", push))
        .body(Body::from(&push[..]))
        .unwrap();
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ids"][0], "github:d-42");
    let forged = Request::post("/v1/webhooks/github")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", hub_signature("guess", push))
        .body(Body::from(&push[..]))
        .unwrap();
    assert_eq!(call(&app, forged).await.0, StatusCode::UNAUTHORIZED);

    let now = SystemClock.now().as_millis() / 1000;
    let charge = br#"{"id":"evt_1","type":"charge.succeeded","created":1714564800,"data":{"object":{"id":"ch_1","amount":100,"currency":"eur"}}}"#;
    let req = |t: i64| {
        Request::post("/v1/webhooks/stripe")
            .header("content-type", "application/json")
            .header("stripe-signature", stripe_signature("whsec", t, charge))
            .body(Body::from(&charge[..]))
            .unwrap()
    };
    let (status, _, body) = call(&app, req(now)).await;
    assert_eq!(
        (status, body["ids"][0].as_str()),
        (StatusCode::ACCEPTED, Some("stripe:evt_1"))
    );
    assert_eq!(
        call(&app, req(now - 3600)).await.0,
        StatusCode::UNAUTHORIZED,
        "outside the replay window"
    );
    let other = br#"{"id":"evt_2","type":"customer.created"}"#;
    let req = Request::post("/v1/webhooks/stripe")
        .header("stripe-signature", stripe_signature("whsec", now, other))
        .body(Body::from(&other[..]))
        .unwrap();
    let (status, _, body) = call(&app, req).await;
    assert_eq!(
        (status, body["ignored"].as_str()),
        (StatusCode::OK, Some("customer.created"))
    );
}

/// A code host configured to deliver form-encoded (`payload=<json>`) is accepted, its signature
/// checked over the body as sent; the same delivery to a JSON-only source gets 415.
#[tokio::test]
async fn form_encoded_webhooks_are_accepted_where_configured() {
    let config = HttpConfig {
        webhooks: vec![
            WebhookConfig::hub("github", vec!["gh".into()]),
            WebhookConfig {
                form_field: None,
                ..WebhookConfig::hub("plain", vec!["gh".into()])
            },
        ],
        ..HttpConfig::default()
    };
    let (app, stream) = app(config).await;
    let body = "payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%2C%22repository%22%3A%7B%22full_name%22%3A%22o%2Fr%22%7D%2C%22commits%22%3A%5B%5D%7D";
    let req = |source: &str| {
        Request::post(format!("/v1/webhooks/{source}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-43")
            .header("x-hub-signature-256", hub_signature("gh", body.as_bytes()))
            .body(Body::from(body))
            .unwrap()
    };
    let (status, _, answer) = call(&app, req("github")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["ids"][0], "github:d-43");
    assert_eq!(stream.record_count(), 1);
    let (status, _, answer) = call(&app, req("plain")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("form_field"),
        "{answer}"
    );
}

/// A value no warehouse can store is refused at the door with 422 naming its field, over HTTP,
/// for API events and webhooks alike; nothing of the request reaches the stream.
#[tokio::test]
async fn unstorable_values_get_422_naming_the_field() {
    let config = HttpConfig {
        webhooks: vec![WebhookConfig::hub("github", vec!["gh".into()])],
        ..HttpConfig::default()
    };
    let (app, stream) = app(config).await;
    let nul = r#"{"type":"search_performed","id":"s-1","payload":{"query":"a\u0000b"}}"#;
    let (status, _, body) = call(
        &app,
        post("/v1/events", "application/json", format!("[{REFUND},{nul}]")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problem = &body["error"]["problems"][0];
    assert_eq!(problem["event"], 1, "{body}");
    assert_eq!(problem["field"], "/payload/query");
    assert!(
        problem["reason"].as_str().unwrap().contains("NUL character"),
        "{body}"
    );
    let push = br#"{"ref":"refs/heads/ma\u0000in","repository":{"full_name":"o/r"}}"#;
    let req = Request::post("/v1/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-43")
        .header("x-hub-signature-256", hub_signature("gh", push))
        .body(Body::from(&push[..]))
        .unwrap();
    let (status, _, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["problems"][0]["field"], "/ref");
    assert_eq!(stream.record_count(), 0, "nothing was accepted");
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let (app, _) = app(HttpConfig {
        webhooks: vec![WebhookConfig::hub("github", vec!["gh".into()])],
        ..HttpConfig::default()
    })
    .await;
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{source}", "github");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let (status, _, _) = call(&app, req).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status}"
            );
            let documented = ops[method]["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(status.as_str()),
                "{method} {path} answered {status}, which the document does not list"
            );
        }
    }
    // And the other way round: a route the document does not list does not exist.
    let (status, _, _) = call(
        &app,
        Request::get("/v1/undocumented").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(paths.len(), 6);
}

#[tokio::test]
async fn readiness_follows_whether_the_stream_takes_the_calls() {
    let config = HttpConfig {
        stream_failure_grace_ms: 0,
        ..HttpConfig::default()
    };
    let (app, stream) = app(config).await;
    let get = || Request::get("/readyz").body(Body::empty()).unwrap();
    let (status, _, body) = call(&app, get()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));

    // The stream stops taking this producer's calls (credentials, key policy, network): the
    // request's put fails, and the producer stops being ready.
    stream.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let request = tokio::spawn({
        let app = app.clone();
        async move { call(&app, post("/v1/events", "application/json", REFUND)).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, _, body) = call(&app, get()).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["status"], "stream unavailable");
    assert!(
        body["error"].as_str().unwrap().contains("AccessDeniedException"),
        "{body}"
    );
    assert!(body["failing_for_ms"].is_u64(), "{body}");

    // Back: the retried put goes through, the request is answered 202, and the producer is ready.
    stream.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, _, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(call(&app, get()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_short_stream_failure_within_the_grace_keeps_the_producer_ready() {
    let (app, stream) = app(HttpConfig::default()).await;
    stream.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let request = tokio::spawn({
        let app = app.clone();
        async move { call(&app, post("/v1/events", "application/json", REFUND)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = call(&app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    stream.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(request.await.unwrap().0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_idle_producer_hears_of_a_failing_stream_at_its_shard_refresh() {
    let stream: &'static MemStream = Box::leak(Box::default());
    let (producer, handle) = Producer::start(
        stream,
        &SystemClock,
        &OsEntropy,
        &NoObserver,
        ProducerConfig {
            shard_refresh: Duration::from_millis(20),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    tokio::spawn(producer.run(std::future::pending()));
    let config = HttpConfig {
        stream_failure_grace_ms: 0,
        ..HttpConfig::default()
    };
    let app = router(Arc::new(AppState::new(catalog(), handle, &config, None)));
    let get = || Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(call(&app, get()).await.0, StatusCode::OK);
    stream.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&app, get()).await.0 == StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "no request, and still ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&app, get()).await.0 != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream is back, and still not ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
