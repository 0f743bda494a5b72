//! The producer as a client meets it: raw HTTP/1.1 request bytes through the production
//! connection settings ([`microbatch_adapters::producer::serve`]) and router, over an in-memory
//! pipe, to a producer whose stream acknowledges and keeps nothing.
//!
//! The answer is judged as the API promises (DESIGN.md, "Bad input"): a 2xx, or a 4xx whose JSON
//! names what was wrong; never a 5xx (a handler's panic is caught and answered 500, so it shows
//! here), never silence after a complete request, never a hang. The bodies hyper answers itself,
//! before a request exists (an unparsable head), are empty 4xx and are its own.
//!
//! A seed that carries `X-Fuzz-Resign: yes` is signed again after mutation with the source's
//! secret and the current time, so mutated webhook bodies get past the signature to the mapping;
//! the other webhook seeds keep their signature and timestamp headers for the mutator to break.
//! One codehost seed is form-encoded (`payload=<json>`), as the code host can deliver.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use microbatch_adapters::config::{ProducerConfig as HttpConfig, WebhookConfig};
use microbatch_adapters::producer::serve::{connection_builder, serve_connection};
use microbatch_adapters::producer::{AppState, router};
use microbatch_adapters::runtime::{OsEntropy, SystemClock};
use microbatch_adapters::workload::{hub_signature, stripe_signature};
use microbatch_core::catalog::Catalog;
use microbatch_core::driver::{Producer, ProducerConfig};
use microbatch_core::kpl::HashKeyRange;
use microbatch_core::ports::{Clock, NoObserver, PortError, PutAck, PutRecord, ShardInfo, StreamWriter};
use microbatch_core::position::{SequenceNumber, ShardId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HUB_SECRET: &str = "fuzz-hub-secret";
pub const STRIPE_SECRET: &str = "whsec_fuzz";
const RESIGN: &str = "x-fuzz-resign";
/// Longer than the header and body timeouts below, so a stalled request is answered first.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// One shard that acknowledges every record and keeps none: the fuzzer sends millions.
struct Discard;

impl StreamWriter for Discard {
    async fn shards(&self) -> Result<Vec<ShardInfo>, PortError> {
        Ok(vec![ShardInfo {
            id: ShardId::new("shardId-000000000000"),
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
        Ok((0..records.len())
            .map(|i| {
                Ok(PutAck {
                    shard: ShardId::new("shardId-000000000000"),
                    seq: SequenceNumber::from_u128(i as u128),
                })
            })
            .collect())
    }
}

/// A producer per fuzzing thread, on a current-thread runtime so an input's work (and its
/// allocations) stay on the thread that checks it.
struct Server {
    runtime: tokio::runtime::Runtime,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
}

thread_local! {
    static SERVER: Server = Server::start();
}

fn catalog() -> Catalog {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    microbatch_adapters::catalog_dir::load(&dir).expect("the example catalog loads")
}

impl Server {
    fn start() -> Server {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = HttpConfig {
            webhooks: vec![
                WebhookConfig::hub("codehost", vec![HUB_SECRET.into()]),
                WebhookConfig::timestamped("payments", vec![STRIPE_SECRET.into()]),
            ],
            body_timeout_ms: 1_000,
            header_timeout_ms: 1_000,
            ..HttpConfig::default()
        };
        let app = runtime.block_on(async {
            let (producer, handle) = Producer::start(
                &Discard,
                &SystemClock,
                &OsEntropy,
                &NoObserver,
                ProducerConfig {
                    max_pending_events: config.max_pending_events,
                    ..ProducerConfig::default()
                },
            )
            .await
            .expect("the producer starts");
            tokio::spawn(producer.run(std::future::pending()));
            router(Arc::new(AppState::new(
                Arc::new(catalog()),
                handle,
                &config,
                None,
            )))
        });
        Server {
            runtime,
            app,
            builder: connection_builder(Duration::from_millis(config.header_timeout_ms)),
        }
    }

    /// Sends `request` on a new connection, shuts the write side, and reads to the end.
    fn exchange(&self, request: Vec<u8>) -> Result<Vec<u8>, String> {
        self.runtime.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let connection = tokio::spawn(serve_connection(&self.builder, server, self.app.clone()));
            let (mut read, mut write) = tokio::io::split(client);
            let send = async move {
                // The server may close before it has read everything (an answer to a bad
                // head): a broken pipe here is its right.
                let _ = write.write_all(&request).await;
                let _ = write.shutdown().await;
            };
            let mut answer = Vec::new();
            let receive = read.read_to_end(&mut answer);
            let exchanged = tokio::time::timeout(ANSWER_WITHIN, async { tokio::join!(send, receive) }).await;
            if exchanged.is_err() {
                return Err(format!("hang: no end of the answer within {ANSWER_WITHIN:?}"));
            }
            match connection.await {
                Err(e) if e.is_panic() => Err("panic: in the connection task".to_owned()),
                _ => Ok(answer),
            }
        })
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let view = r#"{"type":"page_viewed","id":"fz-1","payload":{"session_id":"s1","path":"/pricing"}}"#;
    let order = r#"[{"type":"order_placed","id":"fz-2","payload":{"order_id":"o1","customer_id":"c1","currency":"EUR","total":12.5,"items":[{"sku":"a","quantity":1},{"sku":"b","quantity":2}]}},{"type":"user_signed_up","payload":{"user_id":"u1","email":"a@example.com","plan":"pro"}}]"#;
    let ndjson = format!("{view}\n{}\n", view.replace("fz-1", "fz-3"));
    let push = r#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"},"commits":[{"id":"c1","message":"m","timestamp":"2024-05-01T12:00:00Z"}]}"#;
    let charge = r#"{"id":"evt_1","type":"charge.succeeded","created":1714564800,"data":{"object":{"id":"ch_1","amount":100,"currency":"eur"}}}"#;
    let now = SystemClock.now().as_millis() / 1000;
    let post = |path: &str, headers: &[(&str, String)], body: &str| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nhost: producer\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            r.push_str(&format!("{name}: {value}\r\n"));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r.into_bytes()
    };
    let json = ("content-type", "application/json".to_owned());
    let hub = |body: &str| hub_signature(HUB_SECRET, body.as_bytes());
    let stripe = |body: &str| stripe_signature(STRIPE_SECRET, now, body.as_bytes());
    let codehost = |body: &str, resign: bool| {
        let mut h = vec![
            json.clone(),
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", "d-1".to_owned()),
            ("x-hub-signature-256", hub(body)),
        ];
        if resign {
            h.push((RESIGN, "yes".into()));
        }
        post("/v1/webhooks/codehost", &h, body)
    };
    let payments = |body: &str, resign: bool| {
        let mut h = vec![json.clone(), ("stripe-signature", stripe(body))];
        if resign {
            h.push((RESIGN, "yes".into()));
        }
        post("/v1/webhooks/payments", &h, body)
    };
    let form_push = {
        let encoded: String = push
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let body = format!("payload={encoded}");
        let h = [
            ("content-type", "application/x-www-form-urlencoded".to_owned()),
            ("x-github-event", "push".to_owned()),
            ("x-github-delivery", "d-2".to_owned()),
            ("x-hub-signature-256", hub(&body)),
            (RESIGN, "yes".to_owned()),
        ];
        post("/v1/webhooks/codehost", &h, &body)
    };
    let chunked = format!(
        "POST /v1/events HTTP/1.1\r\nhost: producer\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{view}\r\n0\r\n\r\n",
        view.len()
    );
    vec![
        post("/v1/events", std::slice::from_ref(&json), view),
        post("/v1/events", std::slice::from_ref(&json), order),
        post(
            "/v1/events",
            &[("content-type", "application/x-ndjson".into())],
            &ndjson,
        ),
        chunked.into_bytes(),
        codehost(push, false),
        codehost(push, true),
        form_push,
        payments(charge, false),
        payments(charge, true),
        b"GET /healthz HTTP/1.1\r\nhost: producer\r\n\r\n".to_vec(),
        b"GET /readyz HTTP/1.1\r\nhost: producer\r\n\r\n".to_vec(),
    ]
}

pub fn run(input: &[u8]) -> Result<(), String> {
    let request = resign(input);
    let answer = SERVER.with(|s| s.exchange(request.clone()))?;
    judge(&request, &answer)
}

/// `input` with its signature made valid again, when it asks for that and is still a webhook
/// request with a readable head.
pub fn resign(input: &[u8]) -> Vec<u8> {
    let Some(end) = find(input, b"\r\n\r\n") else {
        return input.to_vec();
    };
    let (head, body) = (&input[..end], &input[end + 4..]);
    let lines: Vec<&[u8]> = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    let named = |l: &[u8], name: &str| {
        l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name.as_bytes()) && l[name.len()] == b':'
    };
    if !lines.iter().any(|l| named(l, RESIGN)) {
        return input.to_vec();
    }
    let signature = if lines[0].starts_with(b"POST /v1/webhooks/codehost ") {
        ("x-hub-signature-256", hub_signature(HUB_SECRET, body))
    } else if lines[0].starts_with(b"POST /v1/webhooks/payments ") {
        let now = SystemClock.now().as_millis() / 1000;
        ("stripe-signature", stripe_signature(STRIPE_SECRET, now, body))
    } else {
        return input.to_vec();
    };
    let mut out = Vec::with_capacity(input.len() + 100);
    for l in lines.iter().filter(|l| !named(l, signature.0)) {
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{}: {}\r\n\r\n", signature.0, signature.1).as_bytes());
    out.extend_from_slice(body);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether hyper would see one whole request in `input`: a head it parses and a body of its
/// declared length (chunked bodies are not judged: an empty answer to one is not a finding).
fn complete_request(input: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = request.parse(input) else {
        return false;
    };
    if request.version != Some(1) {
        return false;
    }
    let mut length = None;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return false;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return false,
            }
        }
    }
    input.len() - head >= length.unwrap_or(0)
}

/// Statuses hyper answers by itself, with an empty body, to a head it cannot take.
const HYPER_OWN: [u16; 4] = [400, 414, 431, 505];

/// Whether `answer` is one the API promises for `request`: `Ok` for a 2xx, a refusal's words,
/// or a finding (`BUG: …`).
pub fn judge(request: &[u8], answer: &[u8]) -> Result<(), String> {
    if answer.is_empty() {
        return if complete_request(request) {
            Err("BUG: the connection closed without an answer to a complete request".into())
        } else {
            Err("closed: an incomplete request, no answer".into())
        };
    }
    let mut rest = answer;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => return Err(format!("BUG: an answer that is not HTTP ({other:?})")),
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) {
            rest = &rest[head..];
            continue;
        }
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
        let body = &rest[head..];
        let body = &body[..length.unwrap_or(body.len()).min(body.len())];
        let text = String::from_utf8_lossy(body);
        return match status {
            200..=299 => Ok(()),
            400..=499 if body.is_empty() && HYPER_OWN.contains(&status) => {
                Err(format!("{status}: refused by hyper before routing"))
            }
            400..=499 => {
                let named = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(|m| !m.trim().is_empty()));
                if named == Some(true) {
                    Err(format!("{status}: {text}"))
                } else {
                    Err(format!("BUG: a {status} that names nothing: {text:?}"))
                }
            }
            _ => Err(format!("BUG: answered {status}: {text}")),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &[u8] = b"POST /v1/events HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";

    /// The judge flags what the API must never answer, and takes what it may.
    #[test]
    fn answers_are_judged_as_the_api_promises() {
        let answer = |s: &str| judge(VIEW, s.as_bytes());
        assert!(answer("HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}").is_ok());
        let e = answer("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n").unwrap_err();
        assert!(e.starts_with("BUG: answered 500"), "{e}");
        let e = answer("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").unwrap_err();
        assert!(e.starts_with("BUG: a 404 that names nothing"), "{e}");
        let named = r#"{"error":{"status":400,"code":"malformed","message":"not JSON"}}"#;
        let e = answer(&format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{named}",
            named.len()
        ))
        .unwrap_err();
        assert!(e.starts_with("400: "), "{e}");
        let e =
            answer("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").unwrap_err();
        assert!(e.contains("refused by hyper"), "{e}");
        let e = judge(VIEW, b"").unwrap_err();
        assert!(e.starts_with("BUG: the connection closed"), "{e}");
        assert!(
            !judge(&VIEW[..VIEW.len() - 1], b"")
                .unwrap_err()
                .starts_with("BUG")
        );
    }

    /// A seed that asks for it is signed again after its body changed: the mutated body gets
    /// past the signature.
    #[test]
    fn a_resign_seed_is_signed_again_over_its_mutated_body() {
        let seed = seeds()
            .into_iter()
            .find(|s| s.starts_with(b"POST /v1/webhooks/codehost") && find(s, RESIGN.as_bytes()).is_some())
            .unwrap();
        let mutated = [&seed[..], b" "].concat();
        let resigned = resign(&mutated);
        let signature = hub_signature(HUB_SECRET, &mutated[find(&mutated, b"\r\n\r\n").unwrap() + 4..]);
        assert!(find(&resigned, signature.as_bytes()).is_some());
        assert_eq!(
            resign(&seed[..seed.len() / 3]),
            &seed[..seed.len() / 3],
            "no head, no signature"
        );
    }

    /// Unknown routes and methods, a webhook source that is not UTF-8, a body cut short, and a
    /// chunked encoding that does not parse are each answered with JSON naming what was wrong
    /// (before the fuzzer's judge asked for names: an empty 404 and 405, axum's plain-text 400,
    /// and a 413 "larger than").
    #[test]
    fn refusals_outside_the_handlers_are_named() {
        let ask = |request: &[u8]| {
            let answer = SERVER.with(|s| s.exchange(request.to_vec())).unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        };
        let a = ask(b"GET /v2/things HTTP/1.1\r\nhost: p\r\n\r\n");
        assert!(
            a.starts_with("HTTP/1.1 404") && a.contains(r#""code":"not_found""#) && a.contains("/v2/things"),
            "{a}"
        );
        let a = ask(b"POST /v1/webhooks/%FF HTTP/1.1\r\nhost: p\r\ncontent-length: 2\r\n\r\n{}");
        assert!(
            a.starts_with("HTTP/1.1 400") && a.contains("the webhook source in the path cannot be read"),
            "{a}"
        );
        let a = ask(b"DELETE /v1/events HTTP/1.1\r\nhost: p\r\n\r\n");
        assert!(
            a.starts_with("HTTP/1.1 405") && a.contains("does not take DELETE"),
            "{a}"
        );
        let a = ask(b"POST /v1/events HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"type\"");
        assert!(
            a.starts_with("HTTP/1.1 400") && a.contains("the body could not be read"),
            "{a}"
        );
        let a = ask(b"POST /v1/events HTTP/1.1\r\nhost: p\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
        assert!(
            a.starts_with("HTTP/1.1 400") && a.contains("the body could not be read"),
            "{a}"
        );
    }
}
