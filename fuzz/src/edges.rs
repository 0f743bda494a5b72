//! The edges fuzzed, each a parser that meets bytes from outside: its seed corpus (valid samples
//! from the fixtures and examples) and how to run it. Every edge answers `Ok` or a typed error
//! whose message names what was wrong; the harness ([`crate::run`]) checks that and that it
//! neither panics nor hangs.

use std::collections::BTreeMap;

use microbatch_adapters::config::Config;
use microbatch_adapters::producer::ingest::{BodyFormat, Limits, parse_events};
use microbatch_adapters::runtime::OsIds;
use microbatch_core::batch::{BatchMetadata, BatchSchema, columns_digest};
use microbatch_core::catalog::{Catalog, Source};
use microbatch_core::import::{object_created_message, parse_message, record_spans, without_rows};
use microbatch_core::kpl;
use microbatch_core::time::Timestamp;

/// One edge: a name, its seeds, and the parser run on an input (`Err` carries the message).
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub name: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub run: fn(&[u8]) -> Result<(), String>,
}

/// Every edge, by name.
pub const EDGES: &[Edge] = &[
    Edge {
        name: "request-json",
        seeds: json_body_seeds,
        run: json_body_run,
    },
    Edge {
        name: "request-ndjson",
        seeds: ndjson_body_seeds,
        run: ndjson_body_run,
    },
    Edge {
        name: "request-http",
        seeds: crate::http::seeds,
        run: crate::http::run,
    },
    Edge {
        name: "config-toml",
        seeds: config_seeds,
        run: config_run,
    },
    Edge {
        name: "config-env",
        seeds: env_seeds,
        run: env_run,
    },
    Edge {
        name: "kpl-record",
        seeds: kpl_seeds,
        run: kpl_run,
    },
    Edge {
        name: "s3-notification",
        seeds: notification_seeds,
        run: notification_run,
    },
    Edge {
        name: "data-api-answer",
        seeds: crate::aws::data_api_seeds,
        run: crate::aws::data_api_run,
    },
    Edge {
        name: "lease-items",
        seeds: crate::aws::leases_seeds,
        run: crate::aws::leases_run,
    },
    Edge {
        name: "batch-metadata",
        seeds: metadata_seeds,
        run: metadata_run,
    },
    Edge {
        name: "batch-schema",
        seeds: schema_seeds,
        run: schema_run,
    },
    Edge {
        name: "catalog-toml",
        seeds: catalog_seeds,
        run: catalog_run,
    },
    Edge {
        name: "import-csv",
        seeds: csv_seeds,
        run: csv_run,
    },
];

pub fn edge(name: &str) -> Option<&'static Edge> {
    EDGES.iter().find(|e| e.name == name)
}

// --- Request bodies (the producer's parse of `POST /v1/events`, checks and mapping included) --

const EVENTS: [&str; 3] = [
    r#"{"type":"page_viewed","id":"e-1","payload":{"session_id":"s1","path":"/pricing","referrer":null}}"#,
    r#"{"type":"user_signed_up","payload":{"user_id":"u1","email":"a@example.com","plan":"pro","marketing_opt_in":true}}"#,
    r#"{"type":"page_viewed","id":"e-2","source":"web","occurred_at":"2024-05-01T12:00:00.123456Z","payload":{"session_id":"s2","path":"/ü/\u00e9","user_agent":"x\ny"}}"#,
];

fn web_catalog() -> &'static Catalog {
    static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::load([Source {
            name: "web.toml".into(),
            text: include_str!("../../examples/catalog/web.toml").into(),
        }])
        .expect("the example catalog loads")
    })
}

fn parse_body(data: &[u8], format: BodyFormat) -> Result<(), String> {
    let limits = Limits {
        max_events: 1000,
        max_depth: 32,
    };
    let now = Timestamp::from_millis(1_714_564_800_123);
    parse_events(data, format, limits, web_catalog(), &mut OsIds, "api", now)
        .map(drop)
        .map_err(|e| {
            if !e.status.is_client_error() {
                return format!("BUG: answered {} to a bad body: {}", e.status, e.message);
            }
            let problems: Vec<String> = e.problems.iter().map(|p| format!("{p:?}")).collect();
            format!("{} {}: {} {}", e.status, e.code, e.message, problems.join("; "))
        })
}

fn json_body_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = EVENTS.iter().map(|e| e.as_bytes().to_vec()).collect();
    seeds.push(format!("[{}]", EVENTS.join(",")).into_bytes());
    seeds
}

fn json_body_run(data: &[u8]) -> Result<(), String> {
    parse_body(data, BodyFormat::Json)
}

fn ndjson_body_seeds() -> Vec<Vec<u8>> {
    vec![
        format!("{}\n", EVENTS.join("\n")).into_bytes(),
        EVENTS[0].as_bytes().to_vec(),
    ]
}

fn ndjson_body_run(data: &[u8]) -> Result<(), String> {
    parse_body(data, BodyFormat::NdJson)
}

// --- The configuration file (`microbatch --config FILE`, over the defaults and the environment) --

fn config_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"data_dir = "/tmp/microbatch-fuzz"

[producer]
listen = "127.0.0.1:8080"
tokens = ["t-1"]
max_body_bytes = 1048576
body_timeout_ms = 30000

[stream]
kind = "local"
shards = 4

[consumer]
flush_interval_ms = 1000
buffer_budget_bytes = 67108864

[log]
format = "json"
"#
        .to_vec(),
        b"[consumer]\nflush_interval_ms = 500\nlease_sync_ms = 1000\nfailover_ms = 4000\n".to_vec(),
    ]
}

fn config_run(data: &[u8]) -> Result<(), String> {
    // The file is read as the binary reads it: from disk, one file per thread.
    thread_local! {
        static FILE: std::path::PathBuf = {
            let dir = std::env::temp_dir().join(format!("microbatch-fuzz-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temp dir");
            dir.join(format!("{:?}.toml", std::thread::current().id()).replace(['(', ')'], ""))
        };
    }
    FILE.with(|path| {
        std::fs::write(path, data).map_err(|e| format!("BUG: cannot write {}: {e}", path.display()))?;
        Config::load_with(Some(path), [])
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

// --- The environment (`MICROBATCH_*`, over the defaults), one `NAME=VALUE` per line ------------

fn env_seeds() -> Vec<Vec<u8>> {
    vec![
        b"MICROBATCH_PRODUCER__LISTEN=127.0.0.1:7000\nMICROBATCH_STREAM_NAME=events\n\
          MICROBATCH_LOG_FORMAT=json\nMICROBATCH_PRODUCER__TOKENS=[\"tok-a\", \"tok-b\"]\n\
          MICROBATCH_LEASE_TABLE=leases\nMICROBATCH_LEASES__KIND=dynamodb\n\
          MICROBATCH_STREAM__KIND=kinesis\nMICROBATCH_TEST_DATABASE_URL=postgres://ignored\n"
            .to_vec(),
        b"MICROBATCH_DATA_DIR=/tmp/microbatch-fuzz\nMICROBATCH_CONSUMER__FLUSH_INTERVAL_MS=150\n\
          MICROBATCH_STREAM__SHARDS=4\nMICROBATCH_QUEUE__VISIBILITY_SECS=2\n\
          MICROBATCH_PRODUCER__WEBHOOKS=[{source=\"github\",scheme=\"hub_signature\",\
          secrets=[\"s\"],type_header=\"x-github-event\"}]\n\
          MICROBATCH_WEBHOOK_SECRETS={\"github\": [\"new\", \"old\"]}\n"
            .to_vec(),
    ]
}

fn env_run(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let vars = text.lines().filter_map(|line| {
        let (name, value) = line.split_once('=')?;
        Some((name.to_owned(), value.to_owned()))
    });
    Config::load_with(None, vars).map(drop).map_err(|e| e.to_string())
}

// --- KPL aggregated records (the consumer's decode of each Kinesis record) --------------------

fn kpl_seeds() -> Vec<Vec<u8>> {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../../core/tests/fixtures/kpl/golden.json"))
            .expect("golden vectors");
    let mut seeds: Vec<Vec<u8>> = golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter_map(|c| c["aggregate_hex"].as_str())
        .map(hex)
        .collect();
    seeds.push(br#"{"a plain record":true}"#.to_vec());
    seeds
}

fn kpl_run(data: &[u8]) -> Result<(), String> {
    kpl::decode("pk", data).map(drop).map_err(|e| e.to_string())
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

// --- S3 notifications (the importer's SQS message bodies) ------------------------------------

fn notification_seeds() -> Vec<Vec<u8>> {
    let at = Timestamp::from_millis(1_714_564_800_123);
    let mut seeds: Vec<Vec<u8>> = [
        "loads/orders/2024/05/01/12/shardId-000000000000-1-2.csv.gz",
        "loads/page views/ünïcode+key%.csv",
    ]
    .iter()
    .map(|key| object_created_message("bucket", key, 1234, 42, at).into_bytes())
    .collect();
    // As SNS delivers it to SQS (a JSON envelope whose Message is the S3 notification).
    let inner = String::from_utf8(seeds[0].clone()).expect("UTF-8");
    seeds.push(
        serde_json::json!({"Type": "Notification", "MessageId": "m-1", "Message": inner})
            .to_string()
            .into_bytes(),
    );
    seeds.push(br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"bucket"}"#.to_vec());
    seeds
}

fn notification_run(data: &[u8]) -> Result<(), String> {
    // An SQS body is a string: bytes that are not UTF-8 never reach the parser as such.
    parse_message(&String::from_utf8_lossy(data))
        .map(drop)
        .map_err(|e| e.to_string())
}

// --- Batch metadata (S3 user metadata, as `name: value` lines here) ---------------------------

/// The metadata of a sample batch, as the consumer writes it.
pub fn sample_pairs() -> BTreeMap<String, String> {
    [
        ("table", "orders"),
        ("columns-sha256", &columns_digest(&["a", "b"])),
        ("columns", "2"),
        ("rows", "3"),
        ("shard", "shardId-000000000000"),
        (
            "first-position",
            "49590338271490256608559692538361571095921575989136588898:0",
        ),
        (
            "last-position",
            "49590338271490256608559692538361571095921575989136588898:2",
        ),
        ("catalog-version", "v1"),
        ("sha256", &"ab".repeat(32)),
        ("csv-bytes", "120"),
        ("min-received-at", "1714564800123000"),
        ("max-received-at", "1714564800999000"),
        ("compression", "gzip"),
        ("csv", "2"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into_iter()
    .collect()
}

fn metadata_seeds() -> Vec<Vec<u8>> {
    let lines = |pairs: &BTreeMap<String, String>| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let mut upper = sample_pairs();
    upper.insert("Table".into(), "orders".into());
    vec![lines(&sample_pairs()), lines(&upper)]
}

fn metadata_run(data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let pairs = text.lines().filter_map(|l| l.split_once(": "));
    BatchMetadata::from_pairs(pairs)
        .map(drop)
        .map_err(|e| e.to_string())
}

// --- Schema objects (`schemas/<table>/<sha>.json`) -------------------------------------------

fn sample_metadata() -> BatchMetadata {
    let pairs = sample_pairs();
    BatchMetadata::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .expect("the sample is valid")
}

fn schema_seeds() -> Vec<Vec<u8>> {
    vec![br#"{"table":"orders","columns":["a","b"]}"#.to_vec()]
}

fn schema_run(data: &[u8]) -> Result<(), String> {
    BatchSchema::from_json(data, &sample_metadata())
        .map(drop)
        .map_err(|e| e.to_string())
}

// --- The catalog (TOML files a data engineer writes) -----------------------------------------

fn catalog_seeds() -> Vec<Vec<u8>> {
    [
        include_str!("../../examples/catalog/web.toml"),
        include_str!("../../examples/catalog/shop.toml"),
        include_str!("../../examples/catalog/payments.toml"),
        include_str!("../../examples/catalog/codehost.toml"),
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect()
}

fn catalog_run(data: &[u8]) -> Result<(), String> {
    // A file that is not UTF-8 is refused when read (`catalog_dir`); its text is what reaches here.
    let text = String::from_utf8(data.to_vec()).map_err(|e| format!("not UTF-8: {e}"))?;
    Catalog::load([Source {
        name: "fuzz.toml".into(),
        text,
    }])
    .map(drop)
    .map_err(|e| e.to_string())
}

// --- The CSV the importer reads back (record spans, refused rows left out) --------------------

fn csv_seeds() -> Vec<Vec<u8>> {
    vec![
        b"1,\"a\",NULL\n2,\"b \"\"quoted\"\"\",\"\\NULL\"\n3,\"multi\nline\",\n".to_vec(),
        b"x\r\ny\r\n\"\"\r\n".to_vec(),
    ]
}

fn csv_run(data: &[u8]) -> Result<(), String> {
    let spans = record_spans(data).map_err(|e| e.to_string())?;
    // The spans tile the body: every byte in exactly one record, in order.
    let mut end = 0;
    for s in &spans {
        if s.start != end || s.end < s.start {
            return Err(format!("BUG: record spans do not tile the body at {s:?}"));
        }
        end = s.end;
    }
    if end != data.len() {
        return Err(format!("BUG: record spans end at {end} of {}", data.len()));
    }
    let skip: Vec<u64> = (0..spans.len() as u64).step_by(2).collect();
    let kept = without_rows(data, &skip).map_err(|e| e.to_string())?;
    // Each record kept whole; one without its line break gets one.
    let expected: usize = spans
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.len() + usize::from(data[s.clone()].last() != Some(&b'\n')))
        .sum();
    if kept.len() != expected {
        return Err(format!(
            "BUG: without_rows kept {} bytes, not {expected}",
            kept.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted_by_its_edge() {
        // The AWS answers' error paths are seeds too, refused by design with these words.
        let refused: [(&str, usize, &str); 5] = [
            (
                "data-api-answer",
                1,
                "(SQLSTATE XX000): ERROR: Load into table 'facts' failed",
            ),
            ("data-api-answer", 2, "was aborted: cancelled by user"),
            (
                "data-api-answer",
                3,
                "did not finish within 10ms and was cancelled",
            ),
            ("data-api-answer", 4, "Statement fz is not found"),
            ("lease-items", 2, "Requested resource not found"),
        ];
        for edge in EDGES {
            for (i, seed) in (edge.seeds)().iter().enumerate() {
                let answer = (edge.run)(seed);
                match refused.iter().find(|(e, n, _)| *e == edge.name && *n == i) {
                    Some((_, _, words)) => assert!(
                        answer.as_ref().is_err_and(|m| m.contains(words)),
                        "{} seed {i}: {answer:?}",
                        edge.name
                    ),
                    None => assert_eq!(answer, Ok(()), "{} seed {i}", edge.name),
                }
            }
        }
    }

    #[test]
    fn broken_inputs_are_refused_with_a_message() {
        let broken: [(&str, &[u8]); 13] = [
            (
                "request-http",
                b"POST /v1/events HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            ),
            ("config-env", b"MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS=soon\n"),
            ("data-api-answer", br#"{"Id":"fz","Status":7}"#),
            ("lease-items", br#"{"Items":[{"leaseKey":{"N":"1"}}]}"#),
            ("config-toml", b"[consumer]\nflush_interval_ms = \"soon\"\n"),
            (
                "request-json",
                br#"{"type":"page_viewed","payload":{"path":"/"}}"#,
            ),
            ("request-ndjson", b"{}\n"),
            ("kpl-record", b"\xf3\x89\x9a\xc2\x0a\x01"),
            ("s3-notification", b"{\"Records\": 1}"),
            ("batch-metadata", b"table: orders\n"),
            ("batch-schema", br#"{"table":"orders","columns":["a"]}"#),
            ("catalog-toml", b"[[event]]\nname = 1"),
            ("import-csv", b"1,\"unterminated\n"),
        ];
        for (name, input) in broken {
            let message = (edge(name).unwrap().run)(input).expect_err(name);
            assert!(
                !message.is_empty() && !message.starts_with("BUG"),
                "{name}: {message}"
            );
        }
    }
}
