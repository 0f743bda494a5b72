//! A realistic mixed workload for the demo, the kill test and the loadtest: a shop's orders with
//! line items, refunds and customer updates, sign-ups, page views, carts and searches, and
//! webhooks from a payments provider and a code host, signed as those providers sign them.
//!
//! Deterministic for a seed, so a run can be repeated and its expected rows computed.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// One HTTP request of the workload.
#[derive(Debug, Clone)]
pub enum Request {
    /// A `POST /v1/events` body: an array of events.
    Events(Vec<Value>),
    /// A `POST /v1/webhooks/{source}` with its headers and raw body.
    Webhook {
        source: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
}

impl Request {
    pub fn event_count(&self) -> usize {
        match self {
            Request::Events(e) => e.len(),
            Request::Webhook { .. } => 1,
        }
    }
}

/// The secrets the demo configures for its webhook sources.
pub const GITHUB_SECRET: &str = "demo-github-secret";
pub const STRIPE_SECRET: &str = "whsec_demo";

/// A small deterministic generator (SplitMix64), so the workload needs no `rand`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// `X-Hub-Signature-256` of `body`, as a code host signs it.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, &[body]))
}

/// `Stripe-Signature` of `body` at unix time `t`, as a payments provider signs it.
pub fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", hmac_hex(secret, &[t.as_bytes(), b".", body]))
}

/// Builds one event of the workload's kind `kind` (0..10), numbered `i` within run `run`.
fn event(kind: u64, i: u64, run: &str, rng: &mut Rng) -> Value {
    let customer = format!("cus_{}", rng.below(50));
    let session = format!("sess_{}", rng.below(200));
    let id = format!("{run}-{i}");
    match kind {
        0 => {
            let items: Vec<Value> = (0..1 + rng.below(4))
                .map(|n| json!({"sku": format!("SKU-{:04}", rng.below(500)), "quantity": 1 + n % 3, "unit_price": 4.99 + n as f64}))
                .collect();
            json!({"type": "order_placed", "id": id, "occurred_at": "2024-05-01T12:00:00Z", "payload": {
                "order_id": format!("ord_{run}_{i}"), "customer_id": customer, "currency": "EUR",
                "total": 10.5 + rng.below(200) as f64, "coupon": if i.is_multiple_of(5) { json!("SPRING") } else { Value::Null },
                "shipping_address": {"city": "Köln", "line1": "Hauptstraße 5, Hinterhaus", "note": "ring \"twice\"\nthen wait"},
                "items": items}})
        }
        1 => {
            json!({"type": "order_refunded", "id": id, "payload": {"order_id": format!("ord_{run}_{}", i.saturating_sub(1)), "amount": 5.0, "reason": "damaged, returned"}})
        }
        2 => {
            json!({"type": "customer_updated", "id": id, "payload": {"customer_id": customer, "email": format!("{customer}@example.com"), "name": "Zoë O'Brien", "address": {"country": "DE"}, "marketing_opt_in": i.is_multiple_of(2)}})
        }
        3 => {
            json!({"type": "user_signed_up", "id": id, "payload": {"user_id": format!("usr_{run}_{i}"), "email": format!("u{i}@example.com"), "plan": PLANS[(i % 3) as usize]}})
        }
        4 => {
            json!({"type": "page_viewed", "id": id, "occurred_at": "2024-05-01T12:00:01.5Z", "payload": {"session_id": session, "path": format!("/products/{}", rng.below(100)), "referrer": null, "user_agent": "Mozilla/5.0 (X11; Linux x86_64)", "duration_ms": rng.below(30_000)}})
        }
        5 => {
            json!({"type": "cart_item_added", "id": id, "payload": {"session_id": session, "sku": format!("SKU-{:04}", rng.below(500)), "quantity": 1}})
        }
        _ => {
            json!({"type": "search_performed", "id": id, "payload": {"session_id": session, "query": "garden hose, 25m", "results": rng.below(90), "filters": {"colour": ["green"]}}})
        }
    }
}

const PLANS: [&str; 3] = ["free", "pro", ""];

fn stripe_webhook(i: u64, run: &str, now_secs: i64, rng: &mut Rng) -> Request {
    // Every third charge is refunded (i counts stripe webhooks only, so the mix holds).
    let refunded = i % 3 == 2;
    let body = if refunded {
        json!({"id": format!("evt_{run}_{i}"), "type": "charge.refunded", "created": now_secs, "data": {"object": {"id": format!("ch_{run}_{}", i.saturating_sub(1)), "amount_refunded": 500, "currency": "eur"}}})
    } else {
        json!({"id": format!("evt_{run}_{i}"), "type": "charge.succeeded", "created": now_secs, "data": {"object": {"id": format!("ch_{run}_{i}"), "amount": 1000 + rng.below(9000), "currency": "eur", "customer": format!("cus_{}", rng.below(50)), "status": "succeeded"}}})
    }
    .to_string()
    .into_bytes();
    let t = now_secs.to_string();
    let signature = format!(
        "t={t},v1={}",
        hmac_hex(STRIPE_SECRET, &[t.as_bytes(), b".", &body])
    );
    Request::Webhook {
        source: "stripe",
        headers: vec![("stripe-signature", signature)],
        body,
    }
}

fn github_webhook(i: u64, run: &str, rng: &mut Rng) -> Request {
    let (kind, body) = if i.is_multiple_of(3) {
        (
            "pull_request",
            json!({"action": "opened", "pull_request": {"number": rng.below(20), "title": "Fix the hose, again", "state": "open", "merged": false}, "repository": {"full_name": "shop/web"}}),
        )
    } else {
        let commits: Vec<Value> = (0..1 + rng.below(3))
            .map(|c| json!({"id": format!("{run}{i:06}{c:02}"), "message": "Line one\nline two, with \"quotes\"", "author": {"name": "Ana"}, "timestamp": "2024-05-01T12:00:00+02:00"}))
            .collect();
        (
            "push",
            json!({"ref": "refs/heads/main", "repository": {"full_name": "shop/web"}, "pusher": {"name": "ana"}, "size": commits.len(), "commits": commits}),
        )
    };
    let body = body.to_string().into_bytes();
    let signature = hub_signature(GITHUB_SECRET, &body);
    Request::Webhook {
        source: "github",
        headers: vec![
            ("x-github-event", kind.to_owned()),
            ("x-github-delivery", format!("{run}-gh-{i}")),
            ("x-hub-signature-256", signature),
        ],
        body,
    }
}

/// About `events` events as requests: batches of up to `batch` API events, interleaved with
/// signed webhooks (one in ten events). `run` makes the ids unique per run.
pub fn generate(events: usize, batch: usize, run: &str, seed: u64, now_secs: i64) -> Vec<Request> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let (mut stripe, mut github) = (0u64, 0u64);
    for i in 0..events as u64 {
        match rng.below(10) {
            0 if i.is_multiple_of(2) => {
                out.push(stripe_webhook(stripe, run, now_secs, &mut rng));
                stripe += 1;
            }
            0 => {
                out.push(github_webhook(github, run, &mut rng));
                github += 1;
            }
            _ => {
                let kind = rng.below(7);
                pending.push(event(kind, i, run, &mut rng));
                if pending.len() >= batch {
                    out.push(Request::Events(std::mem::take(&mut pending)));
                }
            }
        }
    }
    if !pending.is_empty() {
        out.push(Request::Events(pending));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_at_least_ten_event_types_deterministically() {
        let a = generate(2000, 50, "r", 7, 1_714_564_800);
        let b = generate(2000, 50, "r", 7, 1_714_564_800);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(a.iter().map(Request::event_count).sum::<usize>(), 2000);
        let mut types = std::collections::BTreeSet::new();
        for r in &a {
            match r {
                Request::Events(events) => {
                    types.extend(events.iter().map(|e| e["type"].as_str().unwrap().to_owned()))
                }
                Request::Webhook { headers, body, .. } => {
                    let v: Value = serde_json::from_slice(body).unwrap();
                    types.insert(
                        v["type"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| headers[0].1.clone()),
                    );
                }
            }
        }
        assert!(types.len() >= 10, "{types:?}");
    }
}
