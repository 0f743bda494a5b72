//! A stand-in for the Redshift Data API, for the tests: moto's redshift-data has no
//! `BatchExecuteStatement`, so this small server speaks the API's JSON protocol (AWS JSON 1.1,
//! `X-Amz-Target: RedshiftData.<Operation>`) — `BatchExecuteStatement`, `ExecuteStatement`,
//! `DescribeStatement`, `GetStatementResult`, `CancelStatement` — and runs the statements on
//! PostgreSQL through [`PgRedshift`], asynchronously as the service does. The real SDK talks to
//! it, so the transport's polling, failure reporting, idempotent retry and cancel are exercised
//! over HTTP.
//!
//! Knobs for the tests: [`StandIn::hold`] keeps submitted statements running until released
//! (for the timeout and cancel), [`StandIn::lose_answers`] executes a submission and then answers
//! 500 (so the SDK retries it with the same client token), and [`StandIn::executions`] counts the
//! statement lists actually run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::emulator::PgRedshift;
use super::transport::Rows;

#[derive(Clone, Debug)]
enum Status {
    Started,
    Finished(Vec<Rows>),
    Failed { statement: Option<usize>, error: String },
    Aborted,
}

#[derive(Debug)]
struct Statement {
    sqls: Vec<String>,
    batch: bool,
    status: Status,
}

#[derive(Debug, Default)]
struct State {
    statements: HashMap<String, Statement>,
    tokens: HashMap<String, String>,
}

/// The running stand-in.
#[derive(Clone, Debug)]
pub struct StandIn {
    pub endpoint: String,
    pub hold: Arc<AtomicBool>,
    pub lose_answers: Arc<AtomicU32>,
    pub executions: Arc<AtomicUsize>,
    pub cancels: Arc<AtomicUsize>,
    /// The requests seen, as `Operation` names.
    pub operations: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct Shared {
    db: PgRedshift,
    state: Arc<Mutex<State>>,
    next: Arc<AtomicUsize>,
    knobs: StandIn,
}

impl StandIn {
    /// Serves on a free port of 127.0.0.1 until the test's runtime ends.
    pub async fn start(mut db: PgRedshift) -> StandIn {
        db.session_per_run = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let knobs = StandIn {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            hold: Arc::default(),
            lose_answers: Arc::default(),
            executions: Arc::default(),
            cancels: Arc::default(),
            operations: Arc::default(),
        };
        let shared = Shared {
            db,
            state: Arc::default(),
            next: Arc::default(),
            knobs: knobs.clone(),
        };
        let app = Router::new().route("/", post(handle)).with_state(shared);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        knobs
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amzn-errortype", kind),
        ],
        json!({ "__type": kind, "Message": message }).to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Shared>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix("RedshiftData.") else {
        return error(StatusCode::BAD_REQUEST, "UnknownOperationException", target);
    };
    shared.knobs.operations.lock().unwrap().push(operation.to_owned());
    let input: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match operation {
        "BatchExecuteStatement" | "ExecuteStatement" => submit(&shared, operation, &input),
        "DescribeStatement" => describe(&shared, &input),
        "GetStatementResult" => result(&shared, &input),
        "CancelStatement" => cancel(&shared, &input),
        other => error(StatusCode::BAD_REQUEST, "UnknownOperationException", other),
    }
}

fn submit(shared: &Shared, operation: &str, input: &Value) -> Response {
    let batch = operation == "BatchExecuteStatement";
    let sqls: Vec<String> = if batch {
        input["Sqls"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    } else {
        input["Sql"]
            .as_str()
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default()
    };
    if sqls.is_empty() || sqls.len() > 40 || input["Database"].as_str().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Sqls: 1 to 40 statements; Database required",
        );
    }
    let token = input["ClientToken"].as_str().map(str::to_owned);
    let id = {
        let mut state = shared.state.lock().unwrap();
        if let Some(id) = token.as_ref().and_then(|t| state.tokens.get(t)) {
            return ok(json!({ "Id": id, "CreatedAt": 0, "Database": input["Database"] }));
        }
        let id = format!("stand-in-{}", shared.next.fetch_add(1, Ordering::SeqCst));
        state.statements.insert(
            id.clone(),
            Statement {
                sqls: sqls.clone(),
                batch,
                status: Status::Started,
            },
        );
        if let Some(token) = token {
            state.tokens.insert(token, id.clone());
        }
        id
    };
    let run = shared.clone();
    let run_id = id.clone();
    tokio::spawn(async move {
        let aborted = || {
            matches!(
                run.state.lock().unwrap().statements[&run_id].status,
                Status::Aborted
            )
        };
        while run.knobs.hold.load(Ordering::SeqCst) && !aborted() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if aborted() {
            return;
        }
        run.knobs.executions.fetch_add(1, Ordering::SeqCst);
        let status = match run.db.run_all(&sqls).await {
            Ok(rows) => Status::Finished(rows),
            Err(f) => Status::Failed {
                statement: f.statement,
                error: f.error.message,
            },
        };
        let mut state = run.state.lock().unwrap();
        let s = state.statements.get_mut(&run_id).unwrap();
        if !matches!(s.status, Status::Aborted) {
            s.status = status;
        }
    });
    if shared
        .knobs
        .lose_answers
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "the answer was lost",
        );
    }
    ok(json!({ "Id": id, "CreatedAt": 0, "Database": input["Database"] }))
}

fn status_name(status: &Status) -> &'static str {
    match status {
        Status::Started => "STARTED",
        Status::Finished(_) => "FINISHED",
        Status::Failed { .. } => "FAILED",
        Status::Aborted => "ABORTED",
    }
}

fn describe(shared: &Shared, input: &Value) -> Response {
    let id = input["Id"].as_str().unwrap_or_default();
    let state = shared.state.lock().unwrap();
    let Some(s) = state.statements.get(id) else {
        return error(StatusCode::BAD_REQUEST, "ResourceNotFoundException", id);
    };
    let mut out = json!({ "Id": id, "Status": status_name(&s.status), "HasResultSet": false });
    if let Status::Failed { error, .. } = &s.status {
        out["Error"] = json!(error);
    }
    if s.batch {
        let subs: Vec<Value> = s
            .sqls
            .iter()
            .enumerate()
            .map(|(i, sql)| {
                let (status, error) = match &s.status {
                    Status::Failed { statement, error } => match statement {
                        Some(at) if *at == i => ("FAILED", Some(error.clone())),
                        Some(at) if *at < i => ("ABORTED", None),
                        _ => ("FINISHED", None),
                    },
                    other => (status_name(other), None),
                };
                let mut sub =
                    json!({ "Id": format!("{id}:{}", i + 1), "Status": status, "QueryString": sql });
                if let Some(error) = error {
                    sub["Error"] = json!(error);
                }
                if let Status::Finished(rows) = &s.status {
                    sub["HasResultSet"] =
                        json!(!rows[i].is_empty() || sql.trim_start().starts_with("SELECT"));
                }
                sub
            })
            .collect();
        out["SubStatements"] = json!(subs);
    }
    ok(out)
}

fn result(shared: &Shared, input: &Value) -> Response {
    let id = input["Id"].as_str().unwrap_or_default();
    let (base, index) = match id.rsplit_once(':') {
        Some((base, n)) => (base, n.parse::<usize>().ok().and_then(|n| n.checked_sub(1))),
        None => (id, Some(0)),
    };
    let state = shared.state.lock().unwrap();
    let rows = match (state.statements.get(base), index) {
        (
            Some(Statement {
                status: Status::Finished(rows),
                ..
            }),
            Some(i),
        ) if i < rows.len() => &rows[i],
        _ => return error(StatusCode::BAD_REQUEST, "ResourceNotFoundException", id),
    };
    let records: Vec<Vec<Value>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    Some(s) => json!({ "stringValue": s }),
                    None => json!({ "isNull": true }),
                })
                .collect()
        })
        .collect();
    ok(json!({ "Records": records, "TotalNumRows": records.len() }))
}

fn cancel(shared: &Shared, input: &Value) -> Response {
    let id = input["Id"].as_str().unwrap_or_default();
    let mut state = shared.state.lock().unwrap();
    let Some(s) = state.statements.get_mut(id) else {
        return error(StatusCode::BAD_REQUEST, "ResourceNotFoundException", id);
    };
    shared.knobs.cancels.fetch_add(1, Ordering::SeqCst);
    let cancelled = matches!(s.status, Status::Started);
    if cancelled {
        s.status = Status::Aborted;
    }
    ok(json!({ "Status": cancelled }))
}
