//! The AWS calls a run made, read back from every process's `GET /metrics` at the run's end
//! (`microbatch_aws_requests_total` and the Kinesis put counters, docs/METRICS.md), and what they
//! come to per million events and per shard-second: the call-rate limits a deployment must keep
//! and the measured inputs of the cost model ([`crate::cost`]).
//!
//! A process killed mid-run takes its counts with it, so a kill part's counts are a lower bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use microbatch_adapters::telemetry::scrape;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Kinesis' limits per shard (the service quotas page): reads per second per shard
/// (GetRecords), and writes in bytes and records.
pub const GET_RECORDS_CALLS_PER_SHARD_S: f64 = 5.0;
pub const PUT_BYTES_PER_SHARD_S: f64 = 1024.0 * 1024.0;
pub const PUT_RECORDS_PER_SHARD_S: f64 = 1000.0;

/// Every process's counts, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calls {
    /// (service, operation) → HTTP attempts, any outcome.
    pub requests: BTreeMap<(String, String), f64>,
    /// Attempts answered 429 or not answered, summed over operations.
    pub failed_attempts: f64,
    /// Kinesis records accepted, per shard (aggregates, not events).
    pub put_records: BTreeMap<String, f64>,
    /// Their bytes (data + partition key), per shard.
    pub put_bytes: BTreeMap<String, f64>,
    /// 25 KiB PUT payload units billed.
    pub payload_units: f64,
    /// Warehouse transactions committed.
    pub commits: f64,
    /// Batch objects the consumers wrote.
    pub batches: f64,
}

impl Calls {
    /// The counts of a set of Prometheus pages (one per process).
    pub fn from_pages<'a>(pages: impl IntoIterator<Item = &'a str>) -> Calls {
        let mut c = Calls::default();
        for page in pages {
            for s in scrape::samples(page) {
                match s.name {
                    "microbatch_aws_requests_total" => {
                        let key = (
                            s.label("service").unwrap_or("unknown").to_owned(),
                            s.label("operation").unwrap_or("unknown").to_owned(),
                        );
                        *c.requests.entry(key).or_default() += s.value;
                        if matches!(s.label("outcome"), Some("throttled" | "no_response")) {
                            c.failed_attempts += s.value;
                        }
                    }
                    "microbatch_kinesis_put_records_total" => {
                        let shard = s.label("shard").unwrap_or("unknown").to_owned();
                        *c.put_records.entry(shard).or_default() += s.value;
                    }
                    "microbatch_kinesis_put_bytes_total" => {
                        let shard = s.label("shard").unwrap_or("unknown").to_owned();
                        *c.put_bytes.entry(shard).or_default() += s.value;
                    }
                    "microbatch_kinesis_put_payload_units_total" => c.payload_units += s.value,
                    "microbatch_batches_flushed_total" => c.batches += s.value,
                    "microbatch_warehouse_commits_total" if s.label("outcome") == Some("committed") => {
                        c.commits += s.value;
                    }
                    _ => {}
                }
            }
        }
        c
    }

    /// What was counted since `earlier` (counters only grow; a process restarted since has
    /// counted from zero, and the caller passes no earlier page for it).
    pub fn since(&self, earlier: &Calls) -> Calls {
        fn minus<K: Ord + Clone>(now: &BTreeMap<K, f64>, then: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
            now.iter()
                .map(|(k, v)| (k.clone(), (v - then.get(k).copied().unwrap_or(0.0)).max(0.0)))
                .collect()
        }
        Calls {
            requests: minus(&self.requests, &earlier.requests),
            failed_attempts: (self.failed_attempts - earlier.failed_attempts).max(0.0),
            put_records: minus(&self.put_records, &earlier.put_records),
            put_bytes: minus(&self.put_bytes, &earlier.put_bytes),
            payload_units: (self.payload_units - earlier.payload_units).max(0.0),
            commits: (self.commits - earlier.commits).max(0.0),
            batches: (self.batches - earlier.batches).max(0.0),
        }
    }

    /// Attempts of one operation.
    pub fn get(&self, service: &str, operation: &str) -> f64 {
        self.requests
            .get(&(service.to_owned(), operation.to_owned()))
            .copied()
            .unwrap_or(0.0)
    }

    /// Attempts of any of `operations` of `service`.
    pub fn sum(&self, service: &str, operations: &[&str]) -> f64 {
        operations.iter().map(|o| self.get(service, o)).sum()
    }

    /// The service's attempts, all operations.
    pub fn service(&self, service: &str) -> f64 {
        self.requests
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|(_, n)| n)
            .sum()
    }

    /// What the run's counts come to, for `events` accepted over `secs` on `shards` shards.
    pub fn rates(&self, events: u64, secs: f64, shards: u32) -> CallRates {
        let per_million = |n: f64| n * 1e6 / events.max(1) as f64;
        let per_shard_s = |n: f64| n / secs.max(1e-9) / f64::from(shards.max(1));
        let busiest = |m: &BTreeMap<String, f64>| m.values().copied().fold(0.0, f64::max) / secs.max(1e-9);
        let records: f64 = self.put_records.values().sum();
        let dynamo_reads = self.sum("dynamodb", &["GetItem", "Scan", "Query", "BatchGetItem"]);
        CallRates {
            put_records_calls: per_million(self.get("kinesis", "PutRecords")),
            kinesis_records: per_million(records),
            payload_units: per_million(self.payload_units),
            user_records_per_kinesis_record: events as f64 / records.max(1.0),
            // N reads of a shard paced 200 ms apart span (N - 1) / 5 s: a window not aligned
            // to the reads holds one more per shard than its length allows.
            get_records_calls_per_shard_s: per_shard_s(
                (self.get("kinesis", "GetRecords") - f64::from(shards.max(1))).max(0.0),
            ),
            busiest_shard_put_bytes_s: busiest(&self.put_bytes),
            busiest_shard_put_records_s: busiest(&self.put_records),
            s3_puts: per_million(self.sum("s3", &["PutObject"])),
            s3_gets: per_million(self.sum("s3", &["GetObject", "HeadObject"])),
            sqs_receives: per_million(self.get("sqs", "ReceiveMessage")),
            sqs_deletes: per_million(self.sum("sqs", &["DeleteMessage", "DeleteMessageBatch"])),
            sqs_visibility: per_million(self.sum(
                "sqs",
                &["ChangeMessageVisibility", "ChangeMessageVisibilityBatch"],
            )),
            sqs_requests: per_million(self.service("sqs")),
            dynamodb_reads: per_million(dynamo_reads),
            dynamodb_writes: per_million(self.service("dynamodb") - dynamo_reads),
            commits: per_million(self.commits),
            batches: per_million(self.batches),
        }
    }
}

/// A run's calls per million events (unless named per second), the issue's list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallRates {
    pub put_records_calls: f64,
    pub kinesis_records: f64,
    pub payload_units: f64,
    pub user_records_per_kinesis_record: f64,
    /// The mean over shards and the run, less one read per shard for the window's edges: the
    /// consumer paces each shard's reads at most 5 a second.
    pub get_records_calls_per_shard_s: f64,
    /// The busiest shard's mean write rate.
    pub busiest_shard_put_bytes_s: f64,
    pub busiest_shard_put_records_s: f64,
    pub s3_puts: f64,
    pub s3_gets: f64,
    pub sqs_receives: f64,
    pub sqs_deletes: f64,
    pub sqs_visibility: f64,
    /// Every SQS call (what SQS bills), receives and deletes included.
    pub sqs_requests: f64,
    pub dynamodb_reads: f64,
    pub dynamodb_writes: f64,
    pub commits: f64,
    pub batches: f64,
}

impl CallRates {
    /// Name → value, for the report's figures (prefixed by the caller).
    pub fn figures(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("per_million_put_records_calls", self.put_records_calls),
            ("per_million_kinesis_records", self.kinesis_records),
            ("per_million_payload_units", self.payload_units),
            (
                "user_records_per_kinesis_record",
                self.user_records_per_kinesis_record,
            ),
            (
                "get_records_calls_per_shard_s",
                self.get_records_calls_per_shard_s,
            ),
            ("busiest_shard_put_bytes_per_s", self.busiest_shard_put_bytes_s),
            (
                "busiest_shard_put_records_per_s",
                self.busiest_shard_put_records_s,
            ),
            ("per_million_s3_puts", self.s3_puts),
            ("per_million_s3_gets", self.s3_gets),
            ("per_million_sqs_receives", self.sqs_receives),
            ("per_million_sqs_deletes", self.sqs_deletes),
            ("per_million_sqs_visibility_changes", self.sqs_visibility),
            ("per_million_sqs_requests", self.sqs_requests),
            ("per_million_dynamodb_reads", self.dynamodb_reads),
            ("per_million_dynamodb_writes", self.dynamodb_writes),
            ("per_million_warehouse_commits", self.commits),
            ("per_million_batches", self.batches),
        ]
    }

    /// The limits a deployment must keep, each broken one named.
    pub fn limit_violations(&self) -> Vec<String> {
        let mut broken = Vec::new();
        if self.get_records_calls_per_shard_s > GET_RECORDS_CALLS_PER_SHARD_S {
            broken.push(format!(
                "GetRecords {:.2} calls/s/shard > {GET_RECORDS_CALLS_PER_SHARD_S}",
                self.get_records_calls_per_shard_s
            ));
        }
        if self.busiest_shard_put_bytes_s > PUT_BYTES_PER_SHARD_S {
            broken.push(format!(
                "puts {:.0} B/s into one shard > {PUT_BYTES_PER_SHARD_S}",
                self.busiest_shard_put_bytes_s
            ));
        }
        if self.busiest_shard_put_records_s > PUT_RECORDS_PER_SHARD_S {
            broken.push(format!(
                "puts {:.0} records/s into one shard > {PUT_RECORDS_PER_SHARD_S}",
                self.busiest_shard_put_records_s
            ));
        }
        broken
    }
}

/// Each process's counts between two scrapes (by role), summed: a process missing from
/// `before` (started since) counts from zero, one missing from `after` (killed) not at all.
pub fn between(before: &[(String, String)], after: &[(String, String)]) -> Calls {
    let mut total = Calls::default();
    for (role, page) in after {
        let now = Calls::from_pages([page.as_str()]);
        let then = before
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, p)| Calls::from_pages([p.as_str()]))
            .unwrap_or_default();
        total.add(&now.since(&then));
    }
    total
}

impl Calls {
    fn add(&mut self, other: &Calls) {
        fn plus<K: Ord + Clone>(into: &mut BTreeMap<K, f64>, from: &BTreeMap<K, f64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        plus(&mut self.requests, &other.requests);
        plus(&mut self.put_records, &other.put_records);
        plus(&mut self.put_bytes, &other.put_bytes);
        self.failed_attempts += other.failed_attempts;
        self.payload_units += other.payload_units;
        self.commits += other.commits;
        self.batches += other.batches;
    }
}

/// `GET /metrics` of each process, by role.
pub async fn scrape_all(addrs: &[(String, SocketAddr)]) -> anyhow::Result<Vec<(String, String)>> {
    let mut pages = Vec::new();
    for (role, addr) in addrs {
        let page = get(*addr, "/metrics")
            .await
            .with_context(|| format!("GET /metrics of {role} at {addr}"))?;
        pages.push((role.clone(), page));
    }
    Ok(pages)
}

/// A plain HTTP/1.1 GET's body (the services answer with a length and close on request).
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("no answer within 10 s")??;
    let text = String::from_utf8(buf).context("not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or(head));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCE: &str = r#"microbatch_aws_requests_total{service="kinesis",operation="PutRecords",outcome="ok"} 90
microbatch_aws_requests_total{service="kinesis",operation="PutRecords",outcome="throttled"} 10
microbatch_aws_requests_total{service="kinesis",operation="ListShards",outcome="ok"} 1
microbatch_kinesis_put_records_total{shard="shardId-0"} 60
microbatch_kinesis_put_records_total{shard="shardId-1"} 40
microbatch_kinesis_put_bytes_total{shard="shardId-0"} 3000000
microbatch_kinesis_put_bytes_total{shard="shardId-1"} 2000000
microbatch_kinesis_put_payload_units_total 200
"#;
    const CONSUME: &str = r#"microbatch_aws_requests_total{service="kinesis",operation="GetRecords",outcome="ok"} 80
microbatch_aws_requests_total{service="s3",operation="PutObject",outcome="ok"} 30
microbatch_batches_flushed_total{table="a",reason="interval"} 20
microbatch_batches_flushed_total{table="b",reason="size"} 5
microbatch_aws_requests_total{service="dynamodb",operation="UpdateItem",outcome="ok"} 12
microbatch_aws_requests_total{service="dynamodb",operation="Scan",outcome="ok"} 8
"#;
    const IMPORT: &str = r#"microbatch_aws_requests_total{service="sqs",operation="ReceiveMessage",outcome="ok"} 20
microbatch_aws_requests_total{service="sqs",operation="DeleteMessageBatch",outcome="ok"} 15
microbatch_aws_requests_total{service="sqs",operation="ChangeMessageVisibility",outcome="no_response"} 1
microbatch_aws_requests_total{service="s3",operation="GetObject",outcome="ok"} 30
microbatch_warehouse_commits_total{outcome="committed"} 15
microbatch_warehouse_commits_total{outcome="failed"} 2
"#;

    #[test]
    fn pages_sum_across_processes_into_rates_per_million_events_and_shard_second() {
        let calls = Calls::from_pages([PRODUCE, CONSUME, IMPORT]);
        assert_eq!(calls.get("kinesis", "PutRecords"), 100.0, "every outcome counts");
        assert_eq!(calls.failed_attempts, 11.0);
        // 10,000 events over 8 s on 2 shards.
        let r = calls.rates(10_000, 8.0, 2);
        assert_eq!(r.put_records_calls, 10_000.0);
        assert_eq!(r.kinesis_records, 10_000.0);
        assert_eq!(r.payload_units, 20_000.0);
        assert_eq!(r.user_records_per_kinesis_record, 100.0);
        assert_eq!(
            r.get_records_calls_per_shard_s, 4.875,
            "(80 - 2) / 8 s / 2 shards"
        );
        assert_eq!(r.busiest_shard_put_bytes_s, 375_000.0);
        assert_eq!(r.busiest_shard_put_records_s, 7.5);
        assert_eq!(r.s3_puts, 3000.0);
        assert_eq!(r.s3_gets, 3000.0);
        assert_eq!(r.sqs_receives, 2000.0);
        assert_eq!(r.sqs_deletes, 1500.0);
        assert_eq!(r.sqs_visibility, 100.0);
        assert_eq!(r.sqs_requests, 3600.0);
        assert_eq!(r.dynamodb_reads, 800.0);
        assert_eq!(r.dynamodb_writes, 1200.0);
        assert_eq!(r.commits, 1500.0, "failed transactions are not commits");
        assert_eq!(r.batches, 2500.0);
        assert!(r.limit_violations().is_empty(), "{:?}", r.limit_violations());
    }

    #[test]
    fn a_window_counts_what_each_process_did_in_it() {
        let early = r#"microbatch_aws_requests_total{service="kinesis",operation="GetRecords",outcome="ok"} 30
"#;
        let restarted = r#"microbatch_aws_requests_total{service="sqs",operation="ReceiveMessage",outcome="ok"} 4
"#;
        let before = [
            ("consume".to_owned(), early.to_owned()),
            ("import".to_owned(), IMPORT.to_owned()),
        ];
        let after = [
            ("consume".to_owned(), CONSUME.to_owned()),
            ("import-restarted".to_owned(), restarted.to_owned()),
        ];
        let calls = between(&before, &after);
        assert_eq!(
            calls.get("kinesis", "GetRecords"),
            50.0,
            "80 at the end, 30 before the window"
        );
        assert_eq!(
            calls.get("s3", "PutObject"),
            30.0,
            "not seen before: all in the window"
        );
        assert_eq!(
            calls.get("sqs", "ReceiveMessage"),
            4.0,
            "a killed process's counts are gone"
        );
        assert_eq!(calls.get("sqs", "DeleteMessageBatch"), 0.0);
    }

    #[test]
    fn each_broken_limit_is_named() {
        let calls = Calls::from_pages([PRODUCE, CONSUME]);
        let r = calls.rates(10_000, 1.0, 1);
        let broken = r.limit_violations();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(
            broken[0].starts_with("GetRecords 79.00 calls/s/shard"),
            "{broken:?}"
        );
        assert!(broken[1].starts_with("puts 3000000 B/s"), "{broken:?}");
    }
}
