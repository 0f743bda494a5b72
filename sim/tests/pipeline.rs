//! The three production driver loops, end to end over the in-memory world in virtual time:
//! every accepted event lands exactly once, client retries included.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::executor::block_on;
use microbatch_core::catalog::{Catalog, Source};
use microbatch_core::driver::{Consumer, ConsumerConfig, Importer, ImporterConfig, Producer, ProducerConfig};
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::ports::{Clock, NoObserver};
use microbatch_core::time::Timestamp;
use microbatch_sim::clock::{SeededEntropy, Task, VirtualClock, run_until};
use microbatch_sim::ctx::Ctx;
use microbatch_sim::world::World;
use serde_json::value::RawValue;

fn catalog() -> Catalog {
    let files = [
        ("shop.toml", include_str!("../../examples/catalog/shop.toml")),
        ("web.toml", include_str!("../../examples/catalog/web.toml")),
    ];
    Catalog::load(files.map(|(n, t)| Source {
        name: n.into(),
        text: t.into(),
    }))
    .unwrap()
}

fn order(i: usize, now: Timestamp) -> Envelope {
    let payload = format!(
        r#"{{"order_id":"o-{i}","customer_id":"c-{}","currency":"EUR","total":{i}.5,"items":[{{"sku":"a","quantity":1}},{{"sku":"b","quantity":2}}]}}"#,
        i % 7
    );
    Envelope {
        id: EventId(format!("evt-{i}")),
        event_type: "order_placed".into(),
        source: "test".into(),
        received_at: now,
        occurred_at: None,
        payload: RawValue::from_string(payload).unwrap(),
    }
}

#[test]
fn every_accepted_event_lands_exactly_once() {
    let t0 = Timestamp::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
    let clock = VirtualClock::starting_at(t0);
    let entropy = SeededEntropy::new(42);
    let world = World::new(
        Arc::new(Ctx::quiet(clock.clone())),
        2,
        Duration::from_secs(30),
        25,
    );
    let (stream, queue, store, warehouse, leases) = (
        &*world.stream,
        world.queue.clone(),
        &*world.store,
        &world.warehouse,
        &world.leases,
    );
    let catalog = catalog();
    let observer = NoObserver;

    let (producer, handle) = block_on(Producer::start(
        stream,
        &clock,
        &entropy,
        &observer,
        ProducerConfig::default(),
    ))
    .unwrap();
    let consumer = Consumer::new(
        stream,
        store,
        leases,
        &clock,
        &entropy,
        &observer,
        &catalog,
        ConsumerConfig::default(),
    )
    .unwrap();
    let importer = block_on(Importer::start(
        &*queue,
        store,
        warehouse,
        &clock,
        &entropy,
        &observer,
        &catalog,
        ImporterConfig::default(),
    ))
    .unwrap();

    const EVENTS: usize = 300;
    let acked = RefCell::new(0usize);
    let (_stop_p, stop_producer) = oneshot::channel::<()>();
    let (_stop_c, stop_consumer) = oneshot::channel::<()>();
    let (_stop_i, stop_importer) = oneshot::channel::<()>();
    let client = async {
        for chunk in (0..EVENTS).collect::<Vec<_>>().chunks(25) {
            let events: Vec<Envelope> = chunk.iter().map(|&i| order(i, clock.now())).collect();
            handle.submit(events.clone()).await.expect("accepted");
            // A client that did not see the ack retries with the same ids.
            if chunk[0] % 100 == 0 {
                handle.submit(events).await.expect("accepted again");
            }
            *acked.borrow_mut() += chunk.len();
            clock.sleep(Duration::from_millis(137)).await;
        }
    };
    let tasks: Vec<Task<'_>> = vec![
        Box::pin(client),
        Box::pin(async {
            producer
                .run(async {
                    stop_producer.await.ok();
                })
                .await;
        }),
        Box::pin(async {
            consumer
                .run(async {
                    stop_consumer.await.ok();
                })
                .await
                .unwrap();
        }),
        Box::pin(async {
            importer
                .run(async {
                    stop_importer.await.ok();
                })
                .await
                .unwrap();
        }),
    ];
    let limit = t0.saturating_add(Duration::from_secs(600));
    run_until(&clock, tasks, limit, || {
        *acked.borrow() == EVENTS && warehouse.rows("orders").len() == EVENTS && queue.depth() == 0
    })
    .unwrap();

    let orders = warehouse.rows("orders");
    assert_eq!(orders.len(), EVENTS, "one order row per accepted event");
    assert_eq!(
        warehouse.rows("order_items").len(),
        2 * EVENTS,
        "two line items each"
    );
    let mut ids: Vec<String> = orders.iter().map(|r| r[0].clone().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS);
    assert!(queue.dead_letters().is_empty(), "{:?}", queue.dead_letters());
    assert!(store.keys("rejected/").is_empty());
    // Freshness: everything landed within a few flush intervals of virtual time.
    assert!(clock.now().saturating_since(t0) < Duration::from_secs(120));
}
