//! The producer's request parse (split an NDJSON body, check limits, validate each event against
//! the catalog, stamp ids) against a bare `serde_json` parse of the same bytes into `Value`s.
//!
//! The figure is the ratio `bare_parse / parse_events` (scripts/bench-ratios ingest bare_parse
//! parse_events): how much of the HTTP ingest path's per-event CPU is the parse alone. With the
//! cost per event it bounds batched ingest on a given number of cores. `parse_events_array` is the
//! same events as one JSON array body (`scripts/bench-ratios ingest bare_parse parse_events_array`).
//! `cargo bench -p microbatch-adapters --bench ingest`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use microbatch_adapters::producer::ingest::{BodyFormat, Limits, parse_events};
use microbatch_adapters::runtime::OsIds;
use microbatch_core::catalog::{Catalog, Source};
use microbatch_core::time::Timestamp;

const CATALOG: &str = r#"
[[events]]
type = "lt_e000"
schema = { type = "object", required = ["seq", "sent_us"] }

[[events.outputs]]
table = "lt_t000"
columns = [
  { name = "seq", type = "bigint", pointer = "/seq", nullable = false },
  { name = "sent_us", type = "bigint", pointer = "/sent_us", nullable = false },
  { name = "kind", type = "text", pointer = "/kind" },
  { name = "note", type = "text", pointer = "/note" },
]
"#;

/// An NDJSON body of `n` events of about `size` bytes each.
fn body(n: usize, size: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let head = format!(
            r#"{{"type":"lt_e000","id":"bench-{i}","payload":{{"seq":{i},"sent_us":1714564800000000,"kind":"click","note":""#
        );
        let pad = size.saturating_sub(head.len() + 3);
        out.push_str(&head);
        out.extend(std::iter::repeat_n('x', pad));
        out.push_str("\"}}\n");
    }
    out
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::load([Source {
        name: "bench.toml".into(),
        text: CATALOG.into(),
    }])
    .unwrap();
    let limits = Limits {
        max_events: 1000,
        max_depth: 32,
    };
    let now = Timestamp::from_millis(1_714_564_800_000);
    let mut group = c.benchmark_group("ingest");
    for size in [200usize, 1024, 4096] {
        let body = body(1000, size);
        let id = format!("1000x{size}B");
        group.throughput(Throughput::Elements(1000));
        group.bench_with_input(BenchmarkId::new("bare_parse", &id), &body, |b, body| {
            b.iter(|| {
                let values: Vec<serde_json::Value> = body
                    .lines()
                    .map(|l| serde_json::from_str(black_box(l)).unwrap())
                    .collect();
                black_box(values)
            })
        });
        group.bench_with_input(BenchmarkId::new("parse_events", &id), &body, |b, body| {
            b.iter(|| {
                let events = parse_events(
                    black_box(body.as_bytes()),
                    BodyFormat::NdJson,
                    limits,
                    &catalog,
                    &mut OsIds,
                    "api",
                    now,
                )
                .unwrap();
                black_box(events)
            })
        });
        // The same events as one JSON array (`application/json`): the other body format.
        let array = format!("[{}]", body.trim_end().replace('\n', ","));
        group.bench_with_input(BenchmarkId::new("parse_events_array", &id), &array, |b, array| {
            b.iter(|| {
                let events = parse_events(
                    black_box(array.as_bytes()),
                    BodyFormat::Json,
                    limits,
                    &catalog,
                    &mut OsIds,
                    "api",
                    now,
                )
                .unwrap();
                black_box(events)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
