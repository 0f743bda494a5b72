mod common;

use common::{envelope, example_catalog};
use microbatch_core::csv::parse_rows;
use microbatch_core::mapping::{Lineage, MappedRows, Mapper, Rejection};
use microbatch_core::position::{Position, SequenceNumber, ShardId};

/// Each row as (table, fields).
type TableRows = Vec<(String, Vec<Option<String>>)>;

fn map(event_type: &str, payload: &str) -> Result<TableRows, Rejection> {
    let catalog = example_catalog();
    let shard = ShardId::new("shardId-000000000001");
    let pos = Position::new(SequenceNumber::from_u128(4711), 2);
    let mut out = MappedRows::default();
    let result = Mapper::new(&catalog).map(
        &envelope("evt-1", event_type, payload),
        Lineage {
            shard: &shard,
            position: &pos,
        },
        &mut out,
    );
    if let Err(e) = result {
        assert!(out.is_empty(), "a rejected event leaves no rows behind");
        return Err(e);
    }
    Ok(out
        .iter()
        .map(|(t, bytes)| {
            let mut rows = parse_rows(bytes).unwrap();
            assert_eq!(rows.len(), 1);
            (catalog.table(t).name.clone(), rows.remove(0))
        })
        .collect())
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

const ORDER: &str = r#"{"order_id":"o-1","customer_id":"c-9","currency":"EUR","total":42.5,
  "shipping_address":{"city":"Köln","line":"a,\"b\""},
  "items":[{"sku":"A","quantity":2,"unit_price":10},{"sku":"B","quantity":1}]}"#;

#[test]
fn an_order_becomes_one_order_row_and_a_row_per_line_item_with_lineage() {
    let rows = map("order_placed", ORDER).unwrap();
    let lineage = |i: &str| {
        vec![
            s("evt-1"),
            s(i),
            s("2024-05-01T12:00:00.250000Z"),
            s("shardId-000000000001"),
            s("4711"),
            s("2"),
        ]
    };
    let mut order = lineage("0");
    order.extend([
        s("o-1"),
        s("c-9"),
        s("EUR"),
        s("42.5"),
        None,
        s("2024-05-01T11:59:59.000000Z"),
        s(r#"{"city":"Köln","line":"a,\"b\""}"#),
    ]);
    let mut item0 = lineage("0");
    item0.extend([s("o-1"), s("A"), s("2"), s("10.0")]);
    let mut item1 = lineage("1");
    item1.extend([s("o-1"), s("B"), s("1"), None]);
    assert_eq!(
        rows,
        vec![
            ("orders".into(), order),
            ("order_items".into(), item0),
            ("order_items".into(), item1)
        ]
    );
}

#[test]
fn an_empty_or_absent_array_explodes_to_no_rows() {
    let rows = map(
        "order_placed",
        r#"{"order_id":"o","customer_id":"c","currency":"EUR","total":1,"items":[]}"#,
    )
    .unwrap();
    assert_eq!(
        rows.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["orders"]
    );
}

#[test]
fn webhook_shapes_map_epoch_seconds_and_nested_pointers() {
    let rows = map(
        "charge.succeeded",
        r#"{"id":"evt_1","type":"charge.succeeded","created":1714564800,
            "data":{"object":{"id":"ch_1","amount":1999,"currency":"usd","customer":null}}}"#,
    )
    .unwrap();
    assert_eq!(
        rows[0].1[6..],
        [
            s("evt_1"),
            s("ch_1"),
            s("1999"),
            s("usd"),
            None,
            None,
            s("2024-05-01T12:00:00.000000Z")
        ]
    );
}

#[test]
fn rejections_name_what_was_wrong() {
    let cases = [
        ("nope", "{}", r#"unknown event type "nope""#),
        (
            "order_placed",
            r#"{"order_id":"o","customer_id":"c","currency":"euro","total":1,"items":[]}"#,
            r#"payload violates the schema of "order_placed": at "/currency": "euro" does not match "^[A-Z]{3}$""#,
        ),
        (
            "order_placed",
            r#"{"order_id":"o","customer_id":"c","currency":"EUR","total":1,"items":[{"sku":"A","quantity":"two"}]}"#,
            r#"table "order_items", column "quantity": expected bigint, found "two" (not a 64-bit integer)"#,
        ),
        (
            "order_refunded",
            r#"{"order_id":"o","amount":null}"#,
            r#"table "refunds", column "amount": required value missing at payload pointer "/amount""#,
        ),
        (
            "order_placed",
            r#"{"order_id":"o","customer_id":"c","currency":"EUR","total":1,"items":{"sku":"A"}}"#,
            r#"payload violates the schema of "order_placed": at "/items": {"sku":"A"} is not of type "array""#,
        ),
        (
            "search_performed",
            r#"{"query":"x","results":1.5}"#,
            r#"table "searches", column "results": expected bigint, found 1.5 (not a 64-bit integer)"#,
        ),
        (
            "search_performed",
            r#"{"query":{"q":1}}"#,
            r#"table "searches", column "query": expected text, found an object"#,
        ),
        (
            "search_performed",
            r#"{"query":"nul\u0000byte"}"#,
            r#"table "searches", column "query": the value contains a NUL character, which PostgreSQL and Redshift cannot store"#,
        ),
        (
            "search_performed",
            r#"{"query":"q","filters":{"brand":["a\u0000b"]}}"#,
            r#"table "searches", column "filters": the value contains a NUL character, which PostgreSQL and Redshift cannot store"#,
        ),
        (
            "order_refunded",
            r#"{"order_id":"o","amount":2.33125e-315}"#,
            r#"table "refunds", column "amount": the value 2.33125e-315 is too close to zero for Redshift's double precision (subnormal)"#,
        ),
        (
            "charge.succeeded",
            r#"{"id":"e","type":"t","created":"yesterday","data":{"object":{"id":"c","amount":1,"currency":"usd"}}}"#,
            r#"table "payments", column "created_at": expected timestamp, found "yesterday" (not RFC 3339)"#,
        ),
    ];
    for (event_type, payload, expected) in cases {
        let err = map(event_type, payload).unwrap_err();
        assert_eq!(err.to_string(), expected, "{event_type} {payload}");
    }
}

/// Found in review: a `\u0000` inside a json column made PostgreSQL refuse the whole COPY
/// (SQLSTATE 22P05) and the importer dead-lettered every good event of the batch with it. The
/// mapper now refuses every value some supported warehouse cannot store, and says which.
#[test]
fn values_no_warehouse_can_store_are_refused_by_name() {
    let long = "x".repeat(microbatch_core::storable::MAX_TEXT_BYTES + 1);
    let err = map("search_performed", &format!(r#"{{"query":"{long}"}}"#)).unwrap_err();
    assert!(matches!(err, Rejection::Unstorable { .. }), "{err}");
    assert!(err.to_string().contains("65536 bytes long"), "{err}");
    // A timestamp beyond year 9999 from an epoch number (it used to be clamped to 9999-12-31).
    let err = map(
        "charge.succeeded",
        r#"{"id":"e","type":"t","created":999999999999,"data":{"object":{"id":"c","amount":1,"currency":"usd"}}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside the years 1 to 9999"), "{err}");
    // What the producer asks at the door: the same checks, every field named.
    let catalog = example_catalog();
    let payload = r#"{"query":"a\u0000","filters":{"k":"\u0000"}}"#;
    let event = envelope("evt-1", "search_performed", payload);
    let value: serde_json::Value = serde_json::from_str(payload).unwrap();
    let found = Mapper::new(&catalog).unstorable(&event, &value, 10);
    let fields: Vec<&str> = found.iter().map(|u| u.field.as_str()).collect();
    assert_eq!(fields, ["/payload/query", "/payload/filters"]);
    assert!(
        Mapper::new(&catalog)
            .unstorable(
                &envelope("evt-1", "search_performed", r#"{"query":"fine"}"#),
                &serde_json::json!({"query":"fine"}),
                10
            )
            .is_empty()
    );
}

/// The producer's shortcut never says "storable" of an event the full check would refuse.
#[test]
fn the_storable_shortcut_is_never_wrong() {
    let catalog = example_catalog();
    let mapper = Mapper::new(&catalog);
    let cases = [
        ("search_performed", r#"{"query":"fine","filters":{"a":1}}"#),
        ("search_performed", r#"{"query":"a\u0000b"}"#),
        ("search_performed", r#"{"query":"escaped \\u0000 is text"}"#),
        (
            "search_performed",
            r#"{"query":"x","filters":{"n":1e5,"m":[1e5,1e5,1e5]}}"#,
        ),
        ("order_refunded", r#"{"order_id":"o","amount":2.33125e-315}"#),
        ("order_refunded", r#"{"order_id":"o","amount":5}"#),
        ("page_viewed", r#"{"session_id":"s","path":"/"}"#),
    ];
    for (event_type, payload) in cases {
        let event = envelope("evt-1", event_type, payload);
        let value: serde_json::Value = serde_json::from_str(payload).unwrap();
        let full = mapper.unstorable(&event, &value, 10);
        if mapper.surely_storable(&event) {
            assert!(full.is_empty(), "{event_type} {payload}: {full:?}");
        }
    }
    // Types with ranged columns always take the full check.
    assert!(!mapper.surely_storable(&envelope(
        "evt-1",
        "order_refunded",
        r#"{"order_id":"o","amount":5}"#
    )));
    assert!(mapper.surely_storable(&envelope(
        "evt-1",
        "page_viewed",
        r#"{"session_id":"s","path":"/"}"#
    )));
    assert!(!mapper.surely_storable(&envelope(
        "evt-1",
        "page_viewed",
        r#"{"session_id":"\u0000","path":"/"}"#
    )));
    let long = format!(r#"{{"session_id":"{}","path":"/"}}"#, "x".repeat(20_000));
    assert!(!mapper.surely_storable(&envelope("evt-1", "page_viewed", &long)));
}

#[test]
fn explode_of_a_non_array_without_schema_is_rejected() {
    // code_commits explodes /commits; the push schema does not constrain it.
    let err = map(
        "push",
        r#"{"ref":"main","repository":{"full_name":"o/r"},"commits":"x"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"table "code_commits": /commits is not an array to explode"#
    );
}

#[test]
fn envelope_fields_and_dates_map() {
    let rows = map(
        "user_signed_up",
        r#"{"user_id":"u","email":"u@example.com","plan":""}"#,
    )
    .unwrap();
    let signups = &rows.iter().find(|(t, _)| t == "signups").unwrap().1;
    assert_eq!(
        signups[6..],
        [s("u"), s("u@example.com"), s(""), None, s("2024-05-01")]
    );
    let carts = map("cart_item_added", r#"{"session_id":"s","sku":"k"}"#).unwrap();
    assert_eq!(carts[0].1[9], s("cart_item_added"));
}
