//! Shared by core's integration tests and benches: the example catalog and event builders.

#![allow(dead_code)]

use microbatch_core::catalog::{Catalog, Source};
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::time::Timestamp;
use serde_json::value::RawValue;

pub fn example_catalog() -> Catalog {
    let files = [
        ("shop.toml", include_str!("../../../examples/catalog/shop.toml")),
        ("web.toml", include_str!("../../../examples/catalog/web.toml")),
        (
            "payments.toml",
            include_str!("../../../examples/catalog/payments.toml"),
        ),
        (
            "codehost.toml",
            include_str!("../../../examples/catalog/codehost.toml"),
        ),
    ];
    Catalog::load(files.map(|(n, t)| Source {
        name: n.into(),
        text: t.into(),
    }))
    .expect("example catalog loads")
}

pub fn envelope(id: &str, event_type: &str, payload: &str) -> Envelope {
    Envelope {
        id: EventId(id.into()),
        event_type: event_type.into(),
        source: "test".into(),
        received_at: Timestamp::parse_rfc3339("2024-05-01T12:00:00.25Z").unwrap(),
        occurred_at: Some(Timestamp::parse_rfc3339("2024-05-01T11:59:59Z").unwrap()),
        payload: RawValue::from_string(payload.into()).unwrap(),
    }
}
