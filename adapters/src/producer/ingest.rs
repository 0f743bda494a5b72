//! Turning request bodies into envelopes: parse, check every limit, validate against the catalog.
//!
//! A request is all or nothing: if any event in it is invalid, none is accepted and the answer
//! lists every problem by event index and field, so a client can fix and resend the whole body.

use std::borrow::Cow;
use std::fmt;

use microbatch_core::catalog::Catalog;
use microbatch_core::event::{Envelope, EventId, IdSource};
use microbatch_core::mapping::Mapper;
use microbatch_core::time::Timestamp;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::{ApiError, Problem};

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_depth: usize,
}

/// The body formats `/v1/events` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One event object, or an array of them.
    Json,
    /// One event object per line.
    NdJson,
}

impl BodyFormat {
    /// From a `Content-Type` header value.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(value) = value else {
            return Err(ApiError::unsupported_media(
                "missing Content-Type: use application/json or application/x-ndjson",
            ));
        };
        let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(BodyFormat::Json),
            "application/x-ndjson" | "application/jsonl" | "application/json-seq" => Ok(BodyFormat::NdJson),
            other => Err(ApiError::unsupported_media(format!(
                "Content-Type {other:?} is not supported: use application/json or application/x-ndjson"
            ))),
        }
    }
}

/// An event as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default, borrow)]
    occurred_at: Option<Text<'a>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// An event read from a JSON object only: serde's derive also reads a struct from an array of its
/// fields in order, and `["order_placed", null, null, null, {…}]` is not an event anyone sent on
/// purpose.
struct Event<'a>(Incoming<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Event<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Incoming<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Incoming::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Visit).map(Event)
    }
}

/// A string that borrows from the body unless it holds escapes (serde's `Cow<str>` borrows only as
/// a bare field, not inside an `Option`).
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(Visit).map(Text)
    }
}

/// The deepest nesting of arrays and objects in a JSON text (strings are skipped), without
/// building it: one pass, strings skipped with `memchr`.
pub fn json_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => loop {
                // Inside a string: jump to the next quote or backslash.
                let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) else {
                    return max;
                };
                i += at + 1;
                if bytes[i - 1] == b'"' {
                    break;
                }
                // A backslash: the next byte is escaped, whatever it is.
                i += 1;
            },
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Whether a parsed JSON value nests arrays and objects more than `limit` levels deep.
fn deeper_than(value: &Value, limit: usize) -> bool {
    match value {
        Value::Array(items) => limit == 0 || items.iter().any(|v| deeper_than(v, limit - 1)),
        Value::Object(members) => limit == 0 || members.values().any(|v| deeper_than(v, limit - 1)),
        _ => false,
    }
}

/// Reads one event's text straight into an `Incoming`: the outer `Err` when the text is not JSON
/// at all, the inner one when it is JSON but not an event. The text is checked as plain JSON only
/// when reading the event failed, so the happy path reads it once.
fn read_event(text: &str) -> Result<Result<Incoming<'_>, serde_json::Error>, serde_json::Error> {
    match serde_json::from_str::<Event<'_>>(text) {
        Ok(Event(incoming)) => Ok(Ok(incoming)),
        Err(e) => {
            serde_json::from_str::<&RawValue>(text)?;
            Ok(Err(e))
        }
    }
}

fn too_many(count: usize, limits: Limits) -> ApiError {
    ApiError::too_large(format!(
        "{count} events in one request; the limit is {}",
        limits.max_events
    ))
}

fn check_count(count: usize, limits: Limits) -> Result<(), ApiError> {
    if count == 0 {
        return Err(ApiError::malformed("the body holds no events"));
    }
    if count > limits.max_events {
        return Err(too_many(count, limits));
    }
    Ok(())
}

/// Parses and validates a `/v1/events` body into envelopes stamped with `now`.
///
/// Each event is deserialised once, straight from the body, with its payload kept as raw text; an
/// event type with a JSON Schema parses the payload once more into a `Value` for the schema, and
/// that `Value` gives the payload's depth. Nothing scans the whole body for depth: serde_json
/// refuses more than 128 levels by itself (and skips a raw payload without recursion), and every
/// envelope field but the payload is typed, so it cannot nest.
pub fn parse_events(
    body: &[u8],
    format: BodyFormat,
    limits: Limits,
    catalog: &Catalog,
    ids: &mut impl IdSource,
    source_default: &str,
    now: Timestamp,
) -> Result<Vec<Envelope>, ApiError> {
    let body =
        std::str::from_utf8(body).map_err(|e| ApiError::malformed(format!("body is not UTF-8: {e}")))?;
    let mut check = Check {
        catalog,
        ids,
        source_default,
        now,
        limits,
        envelopes: Vec::new(),
        problems: Vec::new(),
    };
    match format {
        BodyFormat::NdJson => {
            let mut count = 0;
            let mut lines = body.lines().enumerate();
            while let Some((i, line)) = lines.next() {
                if line.trim().is_empty() {
                    continue;
                }
                if count == limits.max_events {
                    let rest = lines.filter(|(_, l)| !l.trim().is_empty()).count();
                    return Err(too_many(count + 1 + rest, limits));
                }
                let incoming = read_event(line)
                    .map_err(|e| ApiError::malformed(format!("line {} is not valid JSON: {e}", i + 1)))?;
                check.event(count, incoming);
                count += 1;
            }
            check_count(count, limits)?;
        }
        BodyFormat::Json if body.trim_start().starts_with('[') => {
            // Every event in one pass; if any is not an event (or the body not JSON), again
            // event by event to say which.
            match serde_json::from_str::<Vec<Event<'_>>>(body) {
                Ok(events) => {
                    check_count(events.len(), limits)?;
                    check.envelopes.reserve(events.len());
                    for (i, Event(incoming)) in events.into_iter().enumerate() {
                        check.event(i, Ok(incoming));
                    }
                }
                Err(_) => {
                    let raw = serde_json::from_str::<Vec<&RawValue>>(body)
                        .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?;
                    check_count(raw.len(), limits)?;
                    for (i, text) in raw.iter().enumerate() {
                        check.event(i, serde_json::from_str(text.get()).map(|Event(e)| e));
                    }
                }
            }
        }
        BodyFormat::Json => {
            let incoming =
                read_event(body).map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?;
            check_count(1, limits)?;
            check.event(0, incoming);
        }
    }
    if !check.problems.is_empty() {
        return Err(ApiError::invalid(check.problems));
    }
    Ok(check.envelopes)
}

/// The request-wide state of checking events one by one.
struct Check<'c, I> {
    catalog: &'c Catalog,
    ids: &'c mut I,
    source_default: &'c str,
    now: Timestamp,
    limits: Limits,
    envelopes: Vec<Envelope>,
    problems: Vec<Problem>,
}

impl<I: IdSource> Check<'_, I> {
    /// Checks event `index`; keeps its envelope while the request has no problem (it is all or
    /// nothing), else its problems.
    fn event(&mut self, index: usize, incoming: Result<Incoming<'_>, serde_json::Error>) {
        let result = incoming.map_err(|e| vec![not_an_event(&e)]).and_then(|incoming| {
            parse_one(
                incoming,
                self.catalog,
                self.ids,
                self.source_default,
                self.now,
                self.limits,
            )
        });
        match result {
            Ok(envelope) if self.problems.is_empty() => self.envelopes.push(envelope),
            Ok(_) => {}
            Err(problems) => {
                self.envelopes.clear();
                self.problems.extend(problems.into_iter().map(|p| p.event(index)));
            }
        }
    }
}

/// serde's messages name the field ("missing field `type`", "unknown field `colour`").
fn not_an_event(e: &serde_json::Error) -> Problem {
    let mut reason = e.to_string();
    // The position is within the event's own text, and the problem already names the event.
    if e.line() > 0
        && let Some(at) = reason.rfind(" at line ")
    {
        reason.truncate(at);
    }
    let field = reason.split('`').nth(1).map(|f| format!("/{f}"));
    Problem {
        event: None,
        field,
        reason: format!("not an event: {reason}"),
    }
}

fn parse_one(
    incoming: Incoming<'_>,
    catalog: &Catalog,
    ids: &mut impl IdSource,
    source_default: &str,
    now: Timestamp,
    limits: Limits,
) -> Result<Envelope, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(def) = catalog.event_type(&incoming.event_type) else {
        return Err(vec![
            Problem::new(format!("unknown event type {:?}", incoming.event_type)).field("/type"),
        ]);
    };
    let id = match incoming.id {
        Some(id) if id.is_empty() || id.len() > EventId::MAX_LEN || id.chars().any(char::is_control) => {
            problems.push(
                Problem::new(format!(
                    "id must be 1 to {} characters without control characters",
                    EventId::MAX_LEN
                ))
                .field("/id"),
            );
            None
        }
        Some(id) => Some(EventId(id)),
        None => None,
    };
    let source = incoming.source.unwrap_or_else(|| source_default.to_owned());
    if source.len() > 128 {
        problems.push(Problem::new("source must be at most 128 characters").field("/source"));
    }
    let occurred_at = match incoming.occurred_at.map(|t| Timestamp::parse_rfc3339(&t.0)) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => {
            problems.push(Problem::new("occurred_at must be an RFC 3339 timestamp").field("/occurred_at"));
            None
        }
    };
    let Some(payload) = incoming.payload else {
        problems.push(Problem::new("missing field `payload`").field("/payload"));
        return Err(problems);
    };
    let too_deep =
        || Problem::new(format!("payload nests deeper than {} levels", limits.max_depth)).field("/payload");
    let parsed: Option<Value> = match &def.schema {
        // No schema: the depth from the text, without building it.
        None => {
            if json_depth(payload.get()) > limits.max_depth {
                problems.push(too_deep());
                return Err(problems);
            }
            None
        }
        // The schema needs the payload as a `Value`, and the depth is cheap to read from that.
        Some(schema) => match serde_json::from_str::<Value>(payload.get()) {
            Ok(value) if deeper_than(&value, limits.max_depth) => {
                problems.push(too_deep());
                return Err(problems);
            }
            Ok(value) => {
                if !schema.is_valid(&value) {
                    for error in schema.iter_errors(&value).take(20) {
                        problems.push(
                            Problem::new(error.to_string())
                                .field(format!("/payload{}", error.instance_path())),
                        );
                    }
                }
                Some(value)
            }
            // The payload is valid JSON (it was read as such), so this is serde_json's own
            // recursion limit (128 levels) or a number out of range.
            Err(e) => {
                let deep = e.to_string().starts_with("recursion limit exceeded");
                problems.push(if deep && limits.max_depth < 128 {
                    too_deep()
                } else {
                    Problem::new(e.to_string()).field("/payload")
                });
                return Err(problems);
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let envelope = Envelope {
        id: id.unwrap_or_else(|| ids.next_id(now)),
        event_type: incoming.event_type,
        source,
        received_at: now,
        occurred_at,
        payload: payload.to_owned(),
    };
    unstorable(catalog, &envelope, parsed, false)?;
    Ok(envelope)
}

/// The values of `event` no supported warehouse can store, by the mapper's own checks: refused
/// here with 422, naming each field, rather than accepted and then rejected by the consumer.
/// `parsed` is the payload when already parsed; `whole_body` names fields from the body's root
/// (a webhook's body is its payload) rather than from the event's.
pub(crate) fn unstorable(
    catalog: &Catalog,
    event: &Envelope,
    parsed: Option<Value>,
    whole_body: bool,
) -> Result<(), Vec<Problem>> {
    let mapper = Mapper::new(catalog);
    if mapper.surely_storable(event) {
        return Ok(());
    }
    let value = match parsed {
        Some(v) => v,
        // Not JSON serde_json reads (a number beyond f64): not a question of storage; the
        // consumer keeps such an event in `rejected/` with the reason, as it always has.
        None => match serde_json::from_str::<Value>(event.payload_json()) {
            Ok(v) => v,
            Err(_) => return Ok(()),
        },
    };
    let found = mapper.unstorable(event, &value, 20);
    if found.is_empty() {
        return Ok(());
    }
    Err(found
        .into_iter()
        .map(|u| {
            let field = match u.field.strip_prefix("/payload") {
                Some(rest) if whole_body => rest.to_owned(),
                _ => u.field,
            };
            Problem::new(format!(
                "table {:?}, column {:?}: the value {}",
                u.table, u.column, u.reason
            ))
            .field(field)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seq(u32);
    impl IdSource for Seq {
        fn next_id(&mut self, _: Timestamp) -> EventId {
            self.0 += 1;
            EventId(format!("gen-{}", self.0))
        }
    }

    fn catalog() -> Catalog {
        crate::catalog_dir::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog"),
        )
        .unwrap()
    }

    const LIMITS: Limits = Limits {
        max_events: 3,
        max_depth: 8,
    };

    fn parse(body: &str, format: BodyFormat) -> Result<Vec<Envelope>, ApiError> {
        parse_events(
            body.as_bytes(),
            format,
            LIMITS,
            &catalog(),
            &mut Seq(0),
            "api",
            Timestamp::from_millis(5),
        )
    }

    const REFUND: &str = r#"{"type":"order_refunded","payload":{"order_id":"o","amount":5}}"#;

    /// A payload that holds a key twice is read as serde_json reads it, the last one winning, by
    /// the schema check at the door and by the consumer's mapper alike: the value validated is
    /// the value loaded, never one validated and another loaded.
    #[test]
    fn a_duplicated_key_is_validated_and_mapped_as_its_last_value() {
        use microbatch_core::mapping::{Lineage, MappedRows, Mapper};
        use microbatch_core::position::{Position, SequenceNumber, ShardId};
        // The schema wants `email` a string.
        let last_valid =
            r#"{"type":"user_signed_up","payload":{"user_id":"u1","email":5,"email":"a@example.com"}}"#;
        let events = parse(last_valid, BodyFormat::Json).unwrap();
        let catalog = catalog();
        let mut rows = MappedRows::default();
        let (shard, position) = (
            ShardId::new("shardId-0"),
            Position::new(SequenceNumber::parse("1").unwrap(), 0),
        );
        let lineage = Lineage {
            shard: &shard,
            position: &position,
        };
        Mapper::new(&catalog).map(&events[0], lineage, &mut rows).unwrap();
        let csv: Vec<String> = rows
            .iter()
            .map(|(_, row)| String::from_utf8_lossy(row).into_owned())
            .collect();
        assert!(
            csv.iter()
                .all(|r| r.contains(",u1,a@example.com,") && !r.contains(",5,")),
            "{csv:?}"
        );

        let last_invalid =
            r#"{"type":"user_signed_up","payload":{"user_id":"u1","email":"a@example.com","email":5}}"#;
        let (status, _, problems) = problems(last_invalid);
        assert_eq!(status, 422, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|(_, field, _)| field.as_deref() == Some("/payload/email")),
            "{problems:?}"
        );
    }

    #[test]
    fn single_array_and_ndjson_bodies() {
        let one = parse(REFUND, BodyFormat::Json).unwrap();
        assert_eq!((one[0].id.as_str(), one[0].source.as_str()), ("gen-1", "api"));
        assert_eq!(one[0].received_at, Timestamp::from_millis(5));
        assert_eq!(one[0].payload_json(), r#"{"order_id":"o","amount":5}"#);
        assert_eq!(
            parse(&format!("[{REFUND},{REFUND}]"), BodyFormat::Json)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse(&format!("{REFUND}\n\n{REFUND}\n"), BodyFormat::NdJson)
                .unwrap()
                .len(),
            2
        );
        let kept = parse(r#"{"type":"order_refunded","id":"client-7","source":"shop","occurred_at":"2024-05-01T00:00:00+02:00","payload":{"order_id":"o","amount":5}}"#, BodyFormat::Json).unwrap();
        assert_eq!(
            kept[0].id.as_str(),
            "client-7",
            "the client's id is the dedupe key of its retries"
        );
        assert_eq!(
            kept[0].occurred_at.unwrap().to_string(),
            "2024-04-30T22:00:00.000000Z"
        );
    }

    /// Status, message, and each problem as (event index, field, reason).
    type Answer = (u16, String, Vec<(Option<usize>, Option<String>, String)>);

    fn problems(body: &str) -> Answer {
        let e = parse(body, BodyFormat::Json).unwrap_err();
        (
            e.status.as_u16(),
            e.message,
            e.problems
                .into_iter()
                .map(|p| (p.event, p.field, p.reason))
                .collect(),
        )
    }

    #[test]
    fn events_are_objects_not_arrays_of_their_fields() {
        let fields = r#"["order_refunded",null,null,null,{"order_id":"o","amount":5}]"#;
        let (status, _, p) = problems(&format!("[{fields}]"));
        assert_eq!(status, 422);
        assert_eq!(
            p,
            [(
                Some(0),
                None,
                "not an event: invalid type: sequence, expected an event object".into()
            )]
        );
        let e = parse(fields, BodyFormat::NdJson).unwrap_err();
        assert_eq!(e.status.as_u16(), 422, "{e:?}");
        assert!(e.problems[0].reason.contains("expected an event object"), "{e:?}");
        // The object form of the same event is fine.
        let object = r#"{"type":"order_refunded","payload":{"order_id":"o","amount":5}}"#;
        assert_eq!(parse(object, BodyFormat::NdJson).unwrap().len(), 1);
    }

    #[test]
    fn every_kind_of_bad_request_is_named() {
        assert_eq!(problems("{").0, 400);
        assert!(problems("{").1.starts_with("body is not valid JSON"));
        assert_eq!(problems("[]").1, "the body holds no events");
        let (status, message, _) = problems(&format!("[{REFUND},{REFUND},{REFUND},{REFUND}]"));
        assert_eq!(
            (status, message.as_str()),
            (413, "4 events in one request; the limit is 3")
        );
        let deep = format!(
            r#"{{"type":"order_refunded","payload":{}{}}}"#,
            "[".repeat(12),
            "]".repeat(12)
        );
        // A too-deep payload is a problem of its event (it used to be refused by a scan of the
        // whole body, with 400 "JSON nests 13 levels deep").
        assert_eq!(
            problems(&deep),
            (
                422,
                "1 problem(s); nothing was accepted".into(),
                vec![(
                    Some(0),
                    Some("/payload".into()),
                    "payload nests deeper than 8 levels".into()
                )]
            )
        );
        assert_eq!(
            problems(r#"{"type":"nope","payload":{}}"#).2,
            [(
                Some(0),
                Some("/type".into()),
                "unknown event type \"nope\"".into()
            )]
        );
        let (status, _, p) = problems(
            r#"[{"type":"order_refunded","payload":{"order_id":"o","amount":5}},{"type":"order_refunded","payload":{"order_id":"o"}}]"#,
        );
        assert_eq!(status, 422);
        assert_eq!(
            p,
            [(
                Some(1),
                Some("/payload".into()),
                "\"amount\" is a required property".into()
            )]
        );
        let (_, _, p) = problems(r#"{"type":"order_refunded","colour":1,"payload":{}}"#);
        assert_eq!(p[0].1.as_deref(), Some("/colour"));
        assert!(
            p[0].2.starts_with("not an event: unknown field `colour`"),
            "{:?}",
            p
        );
        let (_, _, p) = problems(
            r#"{"type":"order_refunded","id":"","occurred_at":"soon","payload":{"order_id":"o","amount":1}}"#,
        );
        let fields: Vec<_> = p.iter().map(|x| x.1.clone().unwrap()).collect();
        assert_eq!(fields, ["/id", "/occurred_at"]);
        let (_, _, p) = problems(r#"{"type":"order_refunded"}"#);
        assert_eq!(p[0].1.as_deref(), Some("/payload"));
        assert_eq!(
            parse("\u{feff}x", BodyFormat::NdJson)
                .unwrap_err()
                .message
                .split(':')
                .next(),
            Some("line 1 is not valid JSON")
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-ndjson")).unwrap(),
            BodyFormat::NdJson
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("text/plain"))
                .unwrap_err()
                .status
                .as_u16(),
            415
        );
        assert_eq!(
            BodyFormat::from_content_type(None).unwrap_err().status.as_u16(),
            415
        );
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(r#"{"a":"[[[{{{\"]]]","b":[1,[2]]}"#), 3);
        assert_eq!(json_depth("1"), 0);
    }

    /// The byte-at-a-time scan `json_depth` replaced, as the reference.
    fn json_depth_reference(text: &str) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for b in text.bytes() {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    max = max.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn depth_scan_agrees_with_the_bytewise_one() {
        // Texts of every length up to 40 from an alphabet rich in the bytes that matter, valid
        // JSON or not (the webhook route scans bodies before parsing them).
        let alphabet = b"[]{}\"\\x,:\xc3\xa9";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 41) as usize;
            let mut text = String::new();
            let mut s = state;
            for _ in 0..len {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match alphabet[(s >> 33) as usize % (alphabet.len() - 1)] {
                    0xc3 => text.push('é'),
                    b => text.push(b as char),
                }
            }
            assert_eq!(json_depth(&text), json_depth_reference(&text), "{text:?}");
        }
        let long = format!(
            r#"[{{"a":"{}\"{}","b":[[1]]}}]"#,
            "x[".repeat(50),
            "\\\\".repeat(9)
        );
        assert_eq!(json_depth(&long), 4);
        assert_eq!(json_depth(&long), json_depth_reference(&long));
    }

    #[test]
    fn payload_depth_is_limited_with_and_without_a_schema() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // `order_refunded` has a schema; `search_performed` has none.
        for event_type in ["order_refunded", "search_performed"] {
            let at_limit = format!(r#"{{"type":"{event_type}","payload":{}}}"#, nest(8));
            let over = format!(r#"{{"type":"{event_type}","payload":{}}}"#, nest(9));
            let e = parse(&at_limit, BodyFormat::Json);
            // Eight levels pass the depth limit (the schema may still refuse an array).
            if let Err(e) = e {
                assert!(
                    e.problems.iter().all(|p| !p.reason.contains("nests deeper")),
                    "{event_type}: {:?}",
                    e.problems
                );
            }
            assert_eq!(
                problems(&over).2,
                [(
                    Some(0),
                    Some("/payload".into()),
                    "payload nests deeper than 8 levels".into()
                )],
                "{event_type}"
            );
            // Deeper than serde_json's own limit of 128, and far deeper.
            for n in [127, 128, 129, 10_000] {
                let deep = format!(r#"{{"type":"{event_type}","payload":{}}}"#, nest(n));
                assert_eq!(
                    problems(&deep).2,
                    [(
                        Some(0),
                        Some("/payload".into()),
                        "payload nests deeper than 8 levels".into()
                    )],
                    "{event_type} at {n} levels"
                );
            }
        }
        let (_, _, p) = problems(&format!(
            r#"[{REFUND},{{"type":"order_refunded","payload":{{"order_id":"o","amount":1,"x":{}}}}}]"#,
            nest(8)
        ));
        assert_eq!(p[0].0, Some(1), "{p:?}");
        assert_eq!(p[0].2, "payload nests deeper than 8 levels");
    }

    #[test]
    fn a_deep_body_outside_the_payload_is_refused_cleanly() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        let deep = nest(10_000);
        let open = "[".repeat(10_000);
        for body in [
            deep.clone(),
            open.clone(),
            objects(10_000),
            format!("[{REFUND},{deep}]"),
            format!("[{REFUND},{open}"),
            format!(r#"{{"type":"order_refunded","id":{deep},"payload":{{}}}}"#),
            format!(r#"{{"type":{deep},"payload":{{}}}}"#),
            format!(r#"{{"type":"order_refunded","colour":{deep},"payload":{{}}}}"#),
            format!(
                r#"{{"type":"order_refunded","payload":{{}},"occurred_at":{}}}"#,
                objects(10_000)
            ),
        ] {
            for format in [BodyFormat::Json, BodyFormat::NdJson] {
                let e = parse(&body, format).unwrap_err();
                assert!(
                    [400, 422].contains(&e.status.as_u16()),
                    "{format:?} {}: {} {}",
                    &body[..40],
                    e.status,
                    e.message
                );
            }
        }
        let (status, message, _) = problems(&open);
        assert_eq!(status, 400);
        assert!(message.starts_with("body is not valid JSON"), "{message}");
        let (status, _, p) = problems(&format!("[{REFUND},{deep}]"));
        assert_eq!(status, 422);
        assert_eq!(p[0].0, Some(1));
        assert!(p[0].2.starts_with("not an event: invalid type"), "{p:?}");
    }

    #[test]
    fn every_event_is_checked_and_each_problem_has_its_index() {
        // Not-an-event problems in an array body, found event by event.
        let (status, _, p) = problems(&format!(
            r#"[{REFUND},{{"type":"order_refunded","colour":1,"payload":{{}}}},{{"payload":{{}}}}]"#
        ));
        assert_eq!(status, 422);
        let got: Vec<_> = p.iter().map(|x| (x.0, x.1.as_deref())).collect();
        assert_eq!(got, [(Some(1), Some("/colour")), (Some(2), Some("/type"))]);
        // The same over NDJSON lines, blank lines not counted as events.
        let body = format!(
            "{REFUND}\n\n{{\"type\":\"nope\",\"payload\":{{}}}}\n{{\"type\":\"order_refunded\",\"payload\":{{\"order_id\":\"o\"}}}}\n"
        );
        let e = parse(&body, BodyFormat::NdJson).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        let got: Vec<_> = e.problems.iter().map(|x| (x.event, x.field.as_deref())).collect();
        assert_eq!(got, [(Some(1), Some("/type")), (Some(2), Some("/payload"))]);
        // A line that is not JSON refuses the request, even after lines that are bad events, and
        // even when reading it as an event failed first.
        for bad in [
            r#"{"colour":1, nope"#,
            r#"{"type":"order_refunded","payload":{}"#,
            "[1,",
        ] {
            let e = parse(
                &format!("{{\"type\":\"nope\",\"payload\":{{}}}}\n{bad}\n"),
                BodyFormat::NdJson,
            )
            .unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
            assert!(e.message.starts_with("line 2 is not valid JSON"), "{}", e.message);
            let e = parse(bad, BodyFormat::Json).unwrap_err();
            assert!(e.message.starts_with("body is not valid JSON"), "{}", e.message);
        }
        // JSON that is not an event, in a way serde_json reports as syntax (a number out of range
        // where a string belongs): a problem of the event, as before.
        let e = parse(
            r#"{"type":"order_refunded","id":1e400,"payload":{}}"#,
            BodyFormat::NdJson,
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 422, "{}", e.message);
        assert!(
            e.problems[0].reason.starts_with("not an event"),
            "{:?}",
            e.problems
        );
        // Too many NDJSON events: refused with the whole count.
        let e = parse(
            &format!("{REFUND}\n{REFUND}\n\n{REFUND}\n{REFUND}\n{REFUND}\n"),
            BodyFormat::NdJson,
        )
        .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (413, "5 events in one request; the limit is 3")
        );
        assert_eq!(
            parse("\n  \n", BodyFormat::NdJson).unwrap_err().message,
            "the body holds no events"
        );
        // A payload number beyond f64, where the schema needs a `Value`.
        let (status, _, p) =
            problems(r#"{"type":"order_refunded","payload":{"order_id":"o","amount":1e400}}"#);
        assert_eq!(status, 422);
        assert_eq!(p[0].1.as_deref(), Some("/payload"));
        assert!(p[0].2.starts_with("number out of range"), "{p:?}");
        // ... which a type without a schema keeps, digits as sent.
        let kept = parse(
            r#"{"type":"search_performed","payload":{"q":"x","n":1e400}}"#,
            BodyFormat::Json,
        );
        assert_eq!(kept.unwrap()[0].payload_json(), r#"{"q":"x","n":1e400}"#);
    }

    /// Found in review: the mapper refused a NUL in a text column only after the producer had
    /// answered 202, so the client was told "accepted" for an event that landed in `rejected/`.
    /// The door runs the mapper's own storability checks and names each field.
    #[test]
    fn values_no_warehouse_can_store_are_refused_at_the_door() {
        let (status, _, p) = problems(
            r#"{"type":"search_performed","payload":{"query":"a\u0000b","filters":{"x":["\u0000"]}}}"#,
        );
        assert_eq!(status, 422);
        let fields: Vec<&str> = p.iter().filter_map(|(_, f, _)| f.as_deref()).collect();
        assert_eq!(fields, ["/payload/query", "/payload/filters"]);
        assert!(p[0].2.contains("NUL character"), "{p:?}");
        let long = "x".repeat(microbatch_core::storable::MAX_TEXT_BYTES + 1);
        let (status, _, p) = problems(&format!(
            r#"{{"type":"search_performed","payload":{{"query":"{long}"}}}}"#
        ));
        assert_eq!(status, 422);
        assert!(p[0].2.contains("65536 bytes long"), "{p:?}");
        // A storable event of the same type goes through.
        assert!(
            parse(
                r#"{"type":"search_performed","payload":{"query":"fine"}}"#,
                BodyFormat::Json
            )
            .is_ok()
        );
    }

    #[test]
    fn occurred_at_may_hold_escapes() {
        let kept = parse(
            r#"{"type":"order_refunded","occurred_at":"2024-05-01T00:00:00\u002B02:00","payload":{"order_id":"o","amount":5}}"#,
            BodyFormat::Json,
        )
        .unwrap();
        assert_eq!(
            kept[0].occurred_at.unwrap().to_string(),
            "2024-04-30T22:00:00.000000Z"
        );
        let (status, _, p) = problems(r#"{"type":"order_refunded","occurred_at":5,"payload":{}}"#);
        assert_eq!(status, 422);
        assert!(
            p[0].2
                .starts_with("not an event: invalid type: integer `5`, expected a string"),
            "{p:?}"
        );
    }
}
