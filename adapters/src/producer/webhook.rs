//! Webhooks from third-party systems: verify the signature, find the event type and the delivery
//! id, and turn the body into one envelope.
//!
//! Two schemes cover the providers that matter: the code-host shape (`X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256 of the body>`) and the payments shape (`Stripe-Signature:
//! t=<unix ts>,v1=<hex HMAC-SHA256 of "t.body">` with a replay window). Comparisons are constant
//! time (`Mac::verify_slice`); every configured secret is tried, so secrets rotate without
//! downtime. The delivery id becomes the event id, so a provider's redelivery is deduplicated.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use microbatch_core::catalog::Pointer;
use microbatch_core::event::{Envelope, EventId};
use microbatch_core::time::Timestamp;
use serde_json::value::RawValue;
use sha2::Sha256;

use super::error::{ApiError, Problem};
use crate::config::{WebhookConfig, WebhookScheme};

type HmacSha256 = Hmac<Sha256>;

fn verifies(secret: &str, parts: &[&[u8]], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(&signature).is_ok()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the request's signature against the source's secrets.
pub fn verify(
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<(), ApiError> {
    match config.scheme {
        WebhookScheme::HubSignature => {
            let name = config
                .signature_header
                .as_deref()
                .unwrap_or("X-Hub-Signature-256");
            let value = header(headers, name)
                .ok_or_else(|| ApiError::unauthorized(format!("missing signature header {name}")))?;
            let hex = value
                .strip_prefix("sha256=")
                .ok_or_else(|| ApiError::unauthorized(format!("{name} must look like sha256=<hex>")))?;
            if config.secrets.iter().any(|s| verifies(s, &[body], hex)) {
                Ok(())
            } else {
                Err(ApiError::unauthorized(format!(
                    "{name} does not match the body for any configured secret"
                )))
            }
        }
        WebhookScheme::TimestampedSignature => {
            let name = config.signature_header.as_deref().unwrap_or("Stripe-Signature");
            let value = header(headers, name)
                .ok_or_else(|| ApiError::unauthorized(format!("missing signature header {name}")))?;
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for item in value.split(',') {
                match item.trim().split_once('=') {
                    Some(("t", t)) => timestamp = Some(t),
                    Some(("v1", s)) => signatures.push(s),
                    _ => {}
                }
            }
            let t =
                timestamp.ok_or_else(|| ApiError::unauthorized(format!("{name} has no t=<timestamp>")))?;
            let secs: i64 = t
                .parse()
                .map_err(|_| ApiError::unauthorized(format!("{name} has a bad timestamp {t:?}")))?;
            if signatures.is_empty() {
                return Err(ApiError::unauthorized(format!("{name} has no v1=<signature>")));
            }
            let age = (now.as_millis() / 1000 - secs).unsigned_abs();
            if age > config.tolerance_secs {
                return Err(ApiError::unauthorized(format!(
                    "{name} timestamp is {age} s away from now; the tolerance is {} s (a replay?)",
                    config.tolerance_secs
                )));
            }
            let ok = config.secrets.iter().any(|secret| {
                signatures
                    .iter()
                    .any(|sig| verifies(secret, &[t.as_bytes(), b".", body], sig))
            });
            if ok {
                Ok(())
            } else {
                Err(ApiError::unauthorized(format!(
                    "{name} does not match the body for any configured secret"
                )))
            }
        }
    }
}

/// What a verified webhook body became.
#[derive(Debug)]
pub enum Webhook {
    Event(Box<Envelope>),
    /// An event type the catalog does not know: acknowledged (so the provider does not retry or
    /// disable the hook) and counted, not stored.
    Ignored {
        event_type: String,
    },
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The JSON of a verified delivery: the body itself, or — form-encoded, for a source with a
/// `form_field` — that field's value, percent-decoded. After `verify`: the sender signs the body
/// as sent. Decoded bytes that are not UTF-8 are refused rather than replaced, so the JSON stored
/// is the JSON sent; a field given twice is refused rather than one of them picked.
pub fn payload<'b>(
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &'b [u8],
) -> Result<std::borrow::Cow<'b, [u8]>, ApiError> {
    let form = header(headers, "content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(FORM));
    if !form {
        return Ok(body.into());
    }
    let Some(field) = config.form_field.as_deref() else {
        return Err(ApiError::unsupported_media(format!(
            "webhook source {:?} takes JSON bodies; set form_field (e.g. \"payload\") to take {FORM}",
            config.source
        )));
    };
    let decode = |s: &[u8]| -> Vec<u8> {
        let plus: Vec<u8> = s.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
        percent_encoding::percent_decode(&plus).collect()
    };
    let mut found = None;
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[..0]),
        };
        if decode(name) == field.as_bytes() {
            if found.is_some() {
                return Err(
                    ApiError::malformed(format!("the form field {field:?} is given twice"))
                        .with(vec![Problem::new("given twice").field(field)]),
                );
            }
            found = Some(decode(value));
        }
    }
    let json = found.ok_or_else(|| {
        ApiError::malformed(format!("the form-encoded body has no field {field:?}"))
            .with(vec![Problem::new("missing").field(field)])
    })?;
    if let Err(e) = std::str::from_utf8(&json) {
        return Err(ApiError::malformed(format!(
            "the form field {field:?} is not UTF-8 once decoded: {e}"
        )));
    }
    Ok(json.into())
}

/// Builds the envelope of a verified webhook.
pub fn to_event(
    config: &WebhookConfig,
    headers: &HeaderMap,
    body: &[u8],
    known: impl Fn(&str) -> bool,
    now: Timestamp,
) -> Result<Webhook, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|e| ApiError::malformed(format!("body is not UTF-8: {e}")))?;
    let payload: Box<RawValue> = serde_json::from_str::<&RawValue>(text)
        .map(ToOwned::to_owned)
        .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::malformed(format!("body is not valid JSON: {e}")))?;
    let pick =
        |header_name: &Option<String>, pointer: &Option<String>, what: &str| -> Result<String, ApiError> {
            if let Some(h) = header_name {
                return header(headers, h)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::malformed(format!("missing header {h} (the {what})"))
                            .with(vec![Problem::new("missing").field(h.clone())])
                    });
            }
            let p = pointer.as_deref().unwrap_or("");
            let ptr = Pointer::parse(p).map_err(|e| ApiError::malformed(e.to_string()))?;
            match ptr.resolve(&value) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(ApiError::invalid(vec![
                    Problem::new(format!("the {what} must be a non-empty string")).field(p),
                ])),
            }
        };
    let provider_type = pick(&config.type_header, &config.type_pointer, "event type")?;
    let event_type = format!("{}{}", config.type_prefix, provider_type);
    if !known(&event_type) {
        return Ok(Webhook::Ignored { event_type });
    }
    let id = if config.id_header.is_some() || config.id_pointer.is_some() {
        let id = pick(&config.id_header, &config.id_pointer, "delivery id")?;
        if id.len() > EventId::MAX_LEN {
            return Err(ApiError::invalid(vec![
                Problem::new("the delivery id is too long").field("id"),
            ]));
        }
        // Namespaced by source: two providers may reuse each other's ids.
        Some(EventId(format!("{}:{id}", config.source)))
    } else {
        None
    };
    Ok(Webhook::Event(Box::new(Envelope {
        id: id.unwrap_or_else(|| EventId(String::new())),
        event_type,
        source: config.source.clone(),
        received_at: now,
        occurred_at: None,
        payload,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{hub_signature, stripe_signature};
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const NOW: Timestamp = Timestamp::from_millis(1_714_564_800_000);

    #[test]
    fn hub_signatures_verify_with_any_secret_and_fail_clearly() {
        let config = WebhookConfig::hub("github", vec!["new".into(), "old".into()]);
        let body = br#"{"ref":"main"}"#;
        let ok = headers(&[("x-hub-signature-256", hub_signature("old", body))]);
        assert!(verify(&config, &ok, body, NOW).is_ok());
        let bad = headers(&[("x-hub-signature-256", hub_signature("other", body))]);
        assert_eq!(
            verify(&config, &bad, body, NOW).unwrap_err().message,
            "X-Hub-Signature-256 does not match the body for any configured secret"
        );
        assert!(
            verify(&config, &ok, br#"{"ref":"evil"}"#, NOW).is_err(),
            "a changed body fails"
        );
        assert_eq!(
            verify(&config, &HeaderMap::new(), body, NOW).unwrap_err().message,
            "missing signature header X-Hub-Signature-256"
        );
    }

    #[test]
    fn timestamped_signatures_check_the_replay_window() {
        let config = WebhookConfig::timestamped("stripe", vec!["whsec_1".into()]);
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let t = NOW.as_millis() / 1000;
        let ok = headers(&[("stripe-signature", stripe_signature("whsec_1", t - 10, body))]);
        assert!(verify(&config, &ok, body, NOW).is_ok());
        let old = headers(&[("stripe-signature", stripe_signature("whsec_1", t - 301, body))]);
        let e = verify(&config, &old, body, NOW).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (
                401,
                "Stripe-Signature timestamp is 301 s away from now; the tolerance is 300 s (a replay?)"
            )
        );
        let forged = headers(&[("stripe-signature", format!("t={t},v1=00"))]);
        assert!(verify(&config, &forged, body, NOW).is_err());
    }

    #[test]
    fn delivery_ids_and_types_come_from_the_configured_place() {
        let hub = WebhookConfig::hub("github", vec!["s".into()]);
        let h = headers(&[
            ("x-github-event", "push".into()),
            ("x-github-delivery", "d-1".into()),
        ]);
        let Webhook::Event(e) = to_event(&hub, &h, br#"{"ref":"main"}"#, |t| t == "push", NOW).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (e.event_type.as_str(), e.id.as_str(), e.source.as_str()),
            ("push", "github:d-1", "github")
        );
        let stripe = WebhookConfig::timestamped("stripe", vec!["s".into()]);
        let body = br#"{"id":"evt_9","type":"charge.refunded"}"#;
        let Webhook::Event(e) = to_event(&stripe, &HeaderMap::new(), body, |_| true, NOW).unwrap() else {
            panic!()
        };
        assert_eq!(
            (e.event_type.as_str(), e.id.as_str()),
            ("charge.refunded", "stripe:evt_9")
        );
        let ignored = to_event(&stripe, &HeaderMap::new(), body, |_| false, NOW).unwrap();
        assert!(matches!(ignored, Webhook::Ignored { event_type } if event_type == "charge.refunded"));
        let e = to_event(&stripe, &HeaderMap::new(), br#"{"id":"x"}"#, |_| true, NOW).unwrap_err();
        assert_eq!(e.problems[0].reason, "the event type must be a non-empty string");
    }

    fn form() -> HeaderMap {
        headers(&[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        )])
    }

    /// A form-encoded delivery's JSON is its `payload` field, decoded byte for byte; the JSON
    /// body of the same delivery is taken as it is.
    #[test]
    fn a_form_encoded_delivery_yields_the_json_sent() {
        let config = WebhookConfig::hub("github", vec!["s".into()]);
        let json = r#"{"ref":"refs/heads/main","head_commit":{"message":"fix: a+b & c=d 100% ü"}}"#;
        let encoded: String =
            percent_encoding::utf8_percent_encode(json, percent_encoding::NON_ALPHANUMERIC).collect();
        let body = format!("other=1&payload={encoded}&z=");
        let got = payload(&config, &form(), body.as_bytes()).unwrap();
        assert_eq!(std::str::from_utf8(&got).unwrap(), json);
        // `+` is a space in a form; a literal plus arrives as %2B.
        let got = payload(&config, &form(), b"payload=%7B%22a%22%3A%22x+y%2Bz%22%7D").unwrap();
        assert_eq!(&*got, br#"{"a":"x y+z"}"#);
        let plain = headers(&[("content-type", "application/json".into())]);
        assert_eq!(
            &*payload(&config, &plain, json.as_bytes()).unwrap(),
            json.as_bytes()
        );
    }

    #[test]
    fn form_encoded_mistakes_are_named() {
        let config = WebhookConfig::hub("github", vec!["s".into()]);
        let e = payload(&config, &form(), b"hook=1").unwrap_err();
        assert_eq!(e.message, "the form-encoded body has no field \"payload\"");
        let e = payload(&config, &form(), b"payload=%7B%7D&payload=%7B%7D").unwrap_err();
        assert_eq!(e.message, "the form field \"payload\" is given twice");
        let e = payload(&config, &form(), b"payload=%FF").unwrap_err();
        assert!(
            e.message.starts_with("the form field \"payload\" is not UTF-8"),
            "{}",
            e.message
        );
        let stripe = WebhookConfig::timestamped("stripe", vec!["s".into()]);
        let e = payload(&stripe, &form(), b"payload=%7B%7D").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.message.contains("set form_field"), "{}", e.message);
    }
}
