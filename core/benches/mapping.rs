//! Mapping + CSV encoding of realistic events against a bare `serde_json` parse of the same bytes.
//!
//! The figure that matters is the ratio `bare_parse / map_to_csv` (throughput of the mapper as a
//! fraction of the parse alone); both run in the same process, on the same inputs, back to back.
//! `cargo bench -p microbatch-core --bench mapping`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::mapping::{Lineage, MappedRows, Mapper};
use microbatch_core::position::{Position, SequenceNumber, ShardId};
use microbatch_core::time::Timestamp;
use serde_json::value::RawValue;

#[path = "../tests/common/mod.rs"]
mod common;

/// Events of the example catalog, 200 to 1,200 bytes of payload each.
fn events() -> Vec<(&'static str, Envelope)> {
    let order = |items: usize| {
        let items: Vec<String> = (0..items)
            .map(|i| {
                format!(
                    r#"{{"sku":"SKU-{i:05}","quantity":{},"unit_price":{}.99}}"#,
                    i % 3 + 1,
                    i * 7 % 90
                )
            })
            .collect();
        format!(
            r#"{{"order_id":"ord_8f14e45fceea167a","customer_id":"cus_45c48cce2e2d7fbd","currency":"EUR","total":129.95,"coupon":null,"shipping_address":{{"line1":"Hauptstraße 5","city":"Köln","postcode":"50667","country":"DE"}},"items":[{}]}}"#,
            items.join(",")
        )
    };
    let page = r#"{"session_id":"sess_d3d9446802a44259","user_id":"usr_6512bd43d9caa6e0","path":"/products/garden/hoses?colour=green&length=25m","referrer":"https://www.example.com/search?q=garden+hose","user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36","duration_ms":5231}"#;
    let charge = r#"{"id":"evt_1PqRsT2eZvKYlo2C","type":"charge.succeeded","created":1714564800,"data":{"object":{"id":"ch_3PqRsT2eZvKYlo2C0","amount":12995,"currency":"eur","customer":"cus_Q1w2E3r4T5y6","status":"succeeded","description":"Order ord_8f14e45fceea167a","metadata":{"order_id":"ord_8f14e45fceea167a"}}}}"#;
    let env = |t: &'static str, p: String| {
        (
            t,
            Envelope {
                id: EventId("0190c6b2-7d5e-7a3b-9c1d-2e3f4a5b6c7d".into()),
                event_type: t.into(),
                source: "bench".into(),
                received_at: Timestamp::from_millis(1_714_564_800_000),
                occurred_at: Some(Timestamp::from_millis(1_714_564_799_000)),
                payload: RawValue::from_string(p).unwrap(),
            },
        )
    };
    // A refund whose free-text reason (~1 KiB) is full of commas and quotes: every byte of it
    // goes through the CSV quoting.
    let sentence = r#"Customer wrote: \"the hose, 25m, green, arrived split, twice\"; refunded, minus shipping, per policy \"R-7\". "#;
    let reason = sentence.repeat(1024 / sentence.len() + 1);
    let refund = format!(r#"{{"order_id":"ord_8f14e45fceea167a","amount":129.95,"reason":"{reason}"}}"#);
    vec![
        env("order_placed", order(2)),
        env("order_placed", order(8)),
        env("page_viewed", page.into()),
        env("charge.succeeded", charge.into()),
        env("order_refunded", refund),
    ]
}

fn bench(c: &mut Criterion) {
    let catalog = common::example_catalog();
    let mapper = Mapper::new(&catalog);
    let shard = ShardId::new("shardId-000000000000");
    let position = Position::new(
        SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898").unwrap(),
        3,
    );
    let mut group = c.benchmark_group("map");
    for (i, (name, event)) in events().into_iter().enumerate() {
        let bytes = event.payload_json().as_bytes().to_vec();
        let id = format!("{i}-{name}-{}B", bytes.len());
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("bare_parse", &id), &bytes, |b, bytes| {
            b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(bytes)).unwrap()))
        });
        let mut out = MappedRows::default();
        group.bench_with_input(BenchmarkId::new("map_to_csv", &id), &event, |b, event| {
            b.iter(|| {
                mapper
                    .map(
                        black_box(event),
                        Lineage {
                            shard: &shard,
                            position: &position,
                        },
                        &mut out,
                    )
                    .unwrap();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
