//! `microbatch demo`: the whole pipeline on a temporary directory, a realistic workload over
//! HTTP, and a report of what became queryable how fast.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use microbatch_core::catalog::{Catalog, Mode};
use microbatch_core::csv::parse_rows;
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::mapping::{Lineage, MappedRows, Mapper};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{open, println_out, run_all};
use crate::app::Shutdown;
use crate::config::{Config, WebhookConfig};
use crate::workload::{self, GITHUB_SECRET, Request, STRIPE_SECRET};

/// Rows each table should hold once every accepted event is loaded, worked out with the same
/// mapper the consumer uses (upsert tables: one row per key).
fn expected_rows(catalog: &Catalog, events: &[Envelope]) -> BTreeMap<String, u64> {
    let mapper = Mapper::new(catalog);
    let shard = ShardId::new("demo");
    let position = Position::new(SequenceNumber::from_u128(0), 0);
    let mut out = MappedRows::default();
    let mut appended: BTreeMap<String, u64> = BTreeMap::new();
    let mut keys: BTreeMap<String, std::collections::BTreeSet<Vec<Option<String>>>> = BTreeMap::new();
    for e in events {
        if mapper
            .map(
                e,
                Lineage {
                    shard: &shard,
                    position: &position,
                },
                &mut out,
            )
            .is_err()
        {
            continue;
        }
        for (table_id, row) in out.iter() {
            let table = catalog.table(table_id);
            match &table.mode {
                Mode::Append => *appended.entry(table.name.clone()).or_default() += 1,
                Mode::Upsert { key } => {
                    let fields = parse_rows(row).expect("our own CSV").remove(0);
                    let names: Vec<&str> = table.column_names().collect();
                    let k = key
                        .iter()
                        .map(|c| fields[names.iter().position(|n| n == c).expect("key column")].clone())
                        .collect();
                    keys.entry(table.name.clone()).or_default().insert(k);
                }
            }
        }
    }
    appended.extend(keys.into_iter().map(|(t, k)| (t, k.len() as u64)));
    appended
}

/// The envelope a workload request becomes (ids as the producer assigns them).
fn envelopes_of(request: &Request) -> Vec<Envelope> {
    let now = Timestamp::from_millis(0);
    match request {
        Request::Events(events) => events
            .iter()
            .map(|e| Envelope {
                id: EventId(e["id"].as_str().unwrap_or_default().to_owned()),
                event_type: e["type"].as_str().unwrap_or_default().to_owned(),
                source: "api".into(),
                received_at: now,
                occurred_at: None,
                payload: RawValue::from_string(e["payload"].to_string()).expect("JSON"),
            })
            .collect(),
        Request::Webhook {
            source,
            headers,
            body,
        } => {
            let v: Value = serde_json::from_slice(body).expect("JSON");
            let event_type = v["type"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| headers[0].1.clone());
            vec![Envelope {
                id: EventId(format!("{source}:x")),
                event_type,
                source: (*source).into(),
                received_at: now,
                occurred_at: None,
                payload: RawValue::from_string(String::from_utf8_lossy(body).into_owned()).expect("JSON"),
            }]
        }
    }
}

async fn send(client: &reqwest::Client, base: &str, request: &Request) -> anyhow::Result<()> {
    let response = match request {
        Request::Events(events) => {
            client
                .post(format!("{base}/v1/events"))
                .json(events)
                .send()
                .await?
        }
        Request::Webhook {
            source,
            headers,
            body,
        } => {
            let mut r = client
                .post(format!("{base}/v1/webhooks/{source}"))
                .header("content-type", "application/json");
            for (k, v) in headers {
                r = r.header(*k, v);
            }
            r.body(body.clone()).send().await?
        }
    };
    let status = response.status();
    if status.as_u16() != 202 {
        bail!(
            "the producer answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn demo(mut config: Config, events: usize, serve: bool) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    config.data_dir = tmp.path().to_path_buf();
    if !serve {
        config.producer.listen = "127.0.0.1:0".parse().expect("valid");
    }
    if config.producer.webhooks.is_empty() {
        config.producer.webhooks = vec![
            WebhookConfig::hub("github", vec![GITHUB_SECRET.into()]),
            WebhookConfig::timestamped("stripe", vec![STRIPE_SECRET.into()]),
        ];
    }
    let (catalog, stack) = open(&config).await?;
    let shutdown = Shutdown::default();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let pipeline = tokio::spawn(run_all(
        config.clone(),
        catalog.clone(),
        stack,
        shutdown.clone(),
        Some(bound_tx),
    ));
    let addr = bound_rx.await.context("the producer did not start")?;
    let base = format!("http://{addr}");
    println_out(&format!(
        "microbatch demo: pipeline running on {} (data in {})",
        base,
        tmp.path().display()
    ));

    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let run_id = format!("demo{now_secs}");
    let requests = workload::generate(events, 50, &run_id, 42, now_secs);
    let envelopes: Vec<Envelope> = requests.iter().flat_map(envelopes_of).collect();
    let expected = expected_rows(&catalog, &envelopes);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0;
    // A few requests in flight at once, like several clients.
    for chunk in requests.chunks(8) {
        let results = futures::future::join_all(chunk.iter().map(|r| send(&client, &base, r))).await;
        for r in results {
            r?;
        }
        sent += chunk.iter().map(Request::event_count).sum::<usize>();
    }
    println_out(&format!(
        "sent {sent} events in {} requests ({:.1} s); waiting until all are queryable…",
        requests.len(),
        started.elapsed().as_secs_f64()
    ));

    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let counts = stack.warehouse().await?.row_counts(&catalog).await?;
        let done = expected
            .iter()
            .all(|(t, n)| counts.get(t).copied().unwrap_or(0) >= *n);
        if done {
            break counts;
        }
        if Instant::now() > deadline {
            bail!("not every event was queryable after 120 s: expected {expected:?}, have {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut freshness = stack.warehouse().await?.freshness_seconds().await?;
    freshness.sort_by(f64::total_cmp);
    println_out(&format!("\n{:<20} {:>8} {:>8}", "table", "rows", "expected"));
    for (table, n) in &counts {
        println_out(&format!(
            "{:<20} {:>8} {:>8}",
            table,
            n,
            expected.get(table).copied().unwrap_or(0)
        ));
    }
    println_out(&format!(
        "\nall {sent} events queryable after {:.1} s; freshness (accepted → queryable): p50 {:.2} s, p99 {:.2} s over {} rows",
        started.elapsed().as_secs_f64(),
        percentile(&freshness, 0.5),
        percentile(&freshness, 0.99),
        freshness.len()
    ));
    if serve {
        println_out(&format!(
            "\nstill serving on {base} (Ctrl-C stops). Try:\n  curl -s -X POST {base}/v1/events -H 'content-type: application/json' \\\n    -d '{{\"type\":\"page_viewed\",\"payload\":{{\"session_id\":\"s1\",\"path\":\"/\"}}}}'"
        ));
        shutdown.on_signals();
    } else {
        shutdown.trigger();
    }
    pipeline.await??;
    Ok(())
}
