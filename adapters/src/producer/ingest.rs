//! Turning request bodies into envelopes: parse, check every limit, validate against the catalog.
//!
//! A request is all or nothing: if any event in it is invalid, none is accepted and the answer
//! lists every problem by event index and field, so a client can fix and resend the whole body.

use microbatch_core::catalog::Catalog;
use microbatch_core::event::{Envelope, EventId, IdSource};
use microbatch_core::time::Timestamp;
use serde::Deserialize;
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
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// The deepest nesting of arrays and objects in a JSON text (strings are skipped), without
/// building it: cheap enough to run before anything else.
pub fn json_depth(text: &str) -> usize {
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

/// Splits a body into the raw text of each event.
fn split_events(body: &str, format: BodyFormat, limits: Limits) -> Result<Vec<&RawValue>, ApiError> {
    let events: Vec<&RawValue> = match format {
        BodyFormat::Json => {
            let trimmed = body.trim_start();
            if trimmed.starts_with('[') {
                serde_json::from_str::<Vec<&RawValue>>(body)
                    .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?
            } else {
                vec![
                    serde_json::from_str::<&RawValue>(body)
                        .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?,
                ]
            }
        }
        BodyFormat::NdJson => body
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str::<&RawValue>(l)
                    .map_err(|e| ApiError::malformed(format!("line {} is not valid JSON: {e}", i + 1)))
            })
            .collect::<Result<_, _>>()?,
    };
    if events.is_empty() {
        return Err(ApiError::malformed("the body holds no events"));
    }
    if events.len() > limits.max_events {
        return Err(ApiError::too_large(format!(
            "{} events in one request; the limit is {}",
            events.len(),
            limits.max_events
        )));
    }
    Ok(events)
}

/// Parses and validates a `/v1/events` body into envelopes stamped with `now`.
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
    let depth = json_depth(body);
    // An array body adds one level.
    let allowed = limits.max_depth + 2;
    if depth > allowed {
        return Err(ApiError::malformed(format!(
            "JSON nests {depth} levels deep; payloads may nest at most {} levels",
            limits.max_depth
        )));
    }
    let raw = split_events(body, format, limits)?;
    let mut problems = Vec::new();
    let mut envelopes = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match parse_one(text.get(), catalog, ids, source_default, now, limits) {
            Ok(env) => envelopes.push(env),
            Err(mut p) => {
                for problem in &mut p {
                    problem.event = Some(i);
                }
                problems.extend(p);
            }
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    Ok(envelopes)
}

fn parse_one(
    text: &str,
    catalog: &Catalog,
    ids: &mut impl IdSource,
    source_default: &str,
    now: Timestamp,
    limits: Limits,
) -> Result<Envelope, Vec<Problem>> {
    let incoming: Incoming<'_> = serde_json::from_str(text).map_err(|e| {
        let reason = e.to_string();
        // serde's messages name the field ("missing field `type`", "unknown field `colour`").
        let field = reason.split('`').nth(1).map(|f| format!("/{f}"));
        vec![Problem {
            event: None,
            field,
            reason: format!("not an event: {reason}"),
        }]
    })?;
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
    let occurred_at = match incoming.occurred_at.as_deref().map(Timestamp::parse_rfc3339) {
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
    if json_depth(payload.get()) > limits.max_depth {
        problems.push(
            Problem::new(format!("payload nests deeper than {} levels", limits.max_depth)).field("/payload"),
        );
        return Err(problems);
    }
    if let Some(schema) = &def.schema {
        let value: serde_json::Value =
            serde_json::from_str(payload.get()).map_err(|e| vec![Problem::new(e.to_string())])?;
        for error in schema.iter_errors(&value).take(20) {
            problems
                .push(Problem::new(error.to_string()).field(format!("/payload{}", error.instance_path())));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Envelope {
        id: id.unwrap_or_else(|| ids.next_id(now)),
        event_type: incoming.event_type,
        source,
        received_at: now,
        occurred_at,
        payload: payload.to_owned(),
    })
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
        let (status, message, _) = problems(&deep);
        assert_eq!(status, 400);
        assert!(message.starts_with("JSON nests 13 levels deep"), "{message}");
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
}
