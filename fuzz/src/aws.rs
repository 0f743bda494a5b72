//! AWS answers as the adapters meet them: response bodies through the SDK's own deserializer to
//! the adapter code that reads them — the Redshift Data API's statement descriptions and result
//! pages (`DataApiTransport`), and the lease table's scan (`DynamoLeases::list`). A fake HTTP
//! client answers each operation from the input, so nothing leaves the process.
//!
//! An input is one answer body per part, parts separated by a line `--`; a part that starts with
//! `!` is answered with status 400 (an error body). The Data API input is the description (given
//! again on every poll, so a statement that never finishes meets the timeout) and then the result
//! pages; the lease input is the scan's pages. Past its parts, an operation gets an empty answer
//! that ends paging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use microbatch_adapters::aws::{Aws, DynamoLeases};
use microbatch_adapters::warehouse::redshift::data_api::{DataApiOptions, DataApiTarget, DataApiTransport};
use microbatch_adapters::warehouse::redshift::transport::Transport;
use microbatch_core::ports::LeaseStore;

/// One operation's answer bodies in order, and whether its last one repeats once they run out.
type Bodies = (Vec<Vec<u8>>, bool);

/// Answers by operation (the JSON protocol's `X-Amz-Target`, after its dot).
#[derive(Debug, Clone, Default)]
struct Answers {
    script: Arc<Mutex<HashMap<&'static str, Bodies>>>,
}

impl Answers {
    fn answer(&self, operation: &str) -> (u16, Vec<u8>) {
        let mut script = self.script.lock().expect("not poisoned");
        let body = match script.iter_mut().find(|(op, _)| **op == operation) {
            Some((_, (parts, repeat))) if parts.len() > 1 || (!parts.is_empty() && !*repeat) => {
                parts.remove(0)
            }
            Some((_, (parts, _))) if !parts.is_empty() => parts[0].clone(),
            _ => b"{}".to_vec(),
        };
        match body.strip_prefix(b"!") {
            Some(error) => (400, error.to_vec()),
            None => (200, body),
        }
    }
}

impl HttpConnector for Answers {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("")
            .to_owned();
        let (status, body) = self.answer(&operation);
        let response = HttpResponse::new(status.try_into().expect("a valid status"), SdkBody::from(body));
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for Answers {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn parts(input: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(4).position(|w| w == b"\n--\n") {
        parts.push(rest[..at].to_vec());
        rest = &rest[at + 4..];
    }
    parts.push(rest.to_vec());
    parts
}

/// Per fuzzing thread: a runtime, the answers of the input being run, and SDK clients that
/// reach only those answers, with no retries (an error answer is final).
struct Env {
    runtime: tokio::runtime::Runtime,
    answers: Answers,
    aws: Aws,
}

thread_local! {
    static ENV: Env = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let answers = Answers::default();
        let sdk = runtime.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_redshiftdata::config::Credentials::new(
                    "fuzz", "fuzz", None, None, "fuzz",
                ))
                .http_client(SharedHttpClient::new(answers.clone()))
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .endpoint_url("http://answers.invalid")
                .load(),
        );
        Env { runtime, answers, aws: Aws::from_sdk(sdk) }
    };
}

impl Env {
    fn script(&self, script: impl IntoIterator<Item = (&'static str, Bodies)>) {
        let mut s = self.answers.script.lock().expect("not poisoned");
        s.clear();
        s.extend(script);
    }
}

/// The error's message, or a finding when it has none.
fn named(message: String) -> String {
    if message.trim().is_empty() {
        "BUG: an error without a message".into()
    } else {
        message
    }
}

pub fn data_api_seeds() -> Vec<Vec<u8>> {
    let finished = r#"{"Id":"fz","Status":"FINISHED","HasResultSet":true,"SubStatements":[{"Id":"fz:1","Status":"FINISHED"},{"Id":"fz:2","Status":"FINISHED","HasResultSet":true}]}"#;
    let page = r#"{"Records":[[{"stringValue":"loads/facts/a.csv"},{"longValue":12},{"isNull":true},{"booleanValue":true},{"doubleValue":1.5},{"blobValue":"AAEC"}]],"ColumnMetadata":[{"name":"key"}],"TotalNumRows":1,"NextToken":"p2"}"#;
    let last = r#"{"Records":[[{"stringValue":"loads/facts/b.csv"},{"longValue":3},{"isNull":true},{"booleanValue":false},{"doubleValue":0.0},{"blobValue":""}]],"TotalNumRows":1}"#;
    let failed = r#"{"Id":"fz","Status":"FAILED","Error":"ERROR: 1023 Serializable isolation violation on table facts [SQLState 40001]","SubStatements":[{"Id":"fz:1","Status":"FINISHED"},{"Id":"fz:2","Status":"FAILED","Error":"ERROR: Load into table 'facts' failed. Check 'sys_load_error_detail' [SQLState XX000]"}]}"#;
    let aborted = r#"{"Id":"fz","Status":"ABORTED","Error":"cancelled by user"}"#;
    let started = r#"{"Id":"fz","Status":"STARTED"}"#;
    let throttled = r#"!{"__type":"ValidationException","message":"Statement fz is not found"}"#;
    vec![
        format!("{finished}\n--\n{page}\n--\n{last}").into_bytes(),
        failed.as_bytes().to_vec(),
        aborted.as_bytes().to_vec(),
        started.as_bytes().to_vec(),
        format!("{finished}\n--\n{throttled}").into_bytes(),
    ]
}

pub fn data_api_run(input: &[u8]) -> Result<(), String> {
    let mut parts = parts(input);
    let describe = parts.remove(0);
    ENV.with(|env| {
        env.script([
            ("BatchExecuteStatement", (vec![br#"{"Id":"fz"}"#.to_vec()], true)),
            ("DescribeStatement", (vec![describe], true)),
            ("GetStatementResult", (parts, false)),
        ]);
        let transport = DataApiTransport::new(
            &env.aws,
            DataApiOptions {
                database: "fuzz".into(),
                target: DataApiTarget::Workgroup {
                    workgroup_name: "fuzz".into(),
                    secret_arn: None,
                },
                poll_min: Duration::from_millis(1),
                poll_max: Duration::from_millis(2),
                timeout: Duration::from_millis(10),
            },
        );
        let statements = ["SELECT 1".to_owned(), "SELECT 2".to_owned()];
        env.runtime
            .block_on(transport.run(&statements, Some(1)))
            .map(drop)
            .map_err(|f| named(f.error.to_string()))
    })
}

pub fn leases_seeds() -> Vec<Vec<u8>> {
    let owned = r#"{"leaseKey":{"S":"shardId-000000000001"},"leaseOwner":{"S":"worker-a"},"leaseCounter":{"N":"42"},"checkpoint":{"S":"49590338271490256608559692538361571095921575989136588898"},"checkpointSubSequenceNumber":{"N":"3"},"ownerSwitchesSinceCheckpoint":{"N":"0"},"parentShardId":{"SS":["shardId-000000000000"]},"startingHashKey":{"S":"0"},"endingHashKey":{"S":"340282366920938463463374607431768211455"}}"#;
    let fresh = r#"{"leaseKey":{"S":"shardId-000000000002"},"leaseCounter":{"N":"0"},"checkpoint":{"S":"TRIM_HORIZON"},"checkpointSubSequenceNumber":{"N":"0"},"ownerSwitchesSinceCheckpoint":{"N":"0"}}"#;
    let ended = r#"{"leaseKey":{"S":"shardId-000000000000"},"leaseCounter":{"N":"7"},"checkpoint":{"S":"SHARD_END"},"checkpointSubSequenceNumber":{"N":"0"},"ownerSwitchesSinceCheckpoint":{"N":"1"},"childShardIds":{"SS":["shardId-000000000001","shardId-000000000002"]}}"#;
    vec![
        format!(r#"{{"Items":[{owned},{fresh}],"Count":2,"ScannedCount":2,"LastEvaluatedKey":{{"leaseKey":{{"S":"shardId-000000000002"}}}}}}"#)
            .into_bytes(),
        format!("{{\"Items\":[{ended}],\"Count\":1}}\n--\n{{\"Items\":[{fresh}]}}").into_bytes(),
        br#"!{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#
            .to_vec(),
    ]
}

pub fn leases_run(input: &[u8]) -> Result<(), String> {
    ENV.with(|env| {
        env.script([("Scan", (parts(input), false))]);
        let leases = DynamoLeases::new(&env.aws, "fuzz-leases");
        env.runtime
            .block_on(leases.list())
            .map(drop)
            .map_err(|e| named(e.to_string()))
    })
}
