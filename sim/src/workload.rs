//! The seeded workload: clients sending requests of events of many types into many tables (facts,
//! dimensions with upserts, exploded arrays), in bursts and idle stretches, with a share of
//! invalid events; clients retry failed requests with the same event ids, and sometimes resend a
//! request that succeeded (its answer was lost).

use std::time::Duration;

use microbatch_core::catalog::{Catalog, Source};
use microbatch_core::ports::Entropy;
use serde_json::{Value, json};

use crate::clock::SeededEntropy;

/// The catalog every run uses: the example catalogs, which cover every mapping feature.
pub fn catalog() -> Catalog {
    let files = [
        ("shop.toml", include_str!("../../examples/catalog/shop.toml")),
        ("web.toml", include_str!("../../examples/catalog/web.toml")),
        (
            "payments.toml",
            include_str!("../../examples/catalog/payments.toml"),
        ),
        (
            "codehost.toml",
            include_str!("../../examples/catalog/codehost.toml"),
        ),
    ];
    Catalog::load(files.map(|(n, t)| Source {
        name: n.into(),
        text: t.into(),
    }))
    .expect("the example catalogs are valid")
}

/// One event as a client sends it (the envelope is stamped at each attempt).
#[derive(Debug, Clone)]
pub struct EventSpec {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    /// Whether the generator meant it to be invalid (for the statistics only: the checks judge
    /// each event by the catalog).
    pub invalid: bool,
    /// An `occurred_at` offset before the request, if the source sent one.
    pub occurred_before: Option<Duration>,
}

/// One HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    /// From the start of the run.
    pub at: Duration,
    pub events: Vec<EventSpec>,
    /// Whether the client resends it after success (it never saw the answer).
    pub resend: bool,
}

/// One client's requests, in time order.
#[derive(Debug, Clone, Default)]
pub struct ClientPlan {
    pub requests: Vec<Request>,
}

/// The whole workload of a run.
#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: Vec<ClientPlan>,
    pub events: usize,
    /// When the last request is due.
    pub span: Duration,
}

struct Gen<'r> {
    rng: &'r SeededEntropy,
    next_id: u64,
    invalid_share: f64,
}

impl Gen<'_> {
    fn below(&self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&self, p: f64) -> bool {
        self.rng.unit() < p
    }

    fn pick<'a>(&self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// Text that is sometimes hard for CSV: separators, quotes, line breaks, non-ASCII, empty.
    fn text(&self, base: &str) -> String {
        match self.below(12) {
            0 => format!("{base}, with a comma"),
            1 => format!("{base} \"quoted\""),
            2 => format!("{base}\nsecond line"),
            3 => format!("{base} ünïcødé ✓"),
            4 => String::new(),
            _ => format!("{base}-{}", self.below(1000)),
        }
    }

    fn customer(&self) -> String {
        format!("c-{}", self.below(8))
    }

    fn event(&mut self) -> EventSpec {
        self.next_id += 1;
        let id = format!("evt-{:05}", self.next_id);
        let invalid = self.chance(self.invalid_share);
        let (event_type, payload) = if invalid { self.invalid() } else { self.valid() };
        EventSpec {
            id,
            event_type: event_type.into(),
            payload: payload.to_string(),
            invalid,
            occurred_before: self
                .chance(0.5)
                .then(|| Duration::from_millis(self.below(60_000))),
        }
    }

    fn items(&self) -> Value {
        let n = self.below(5);
        Value::Array(
            (0..n)
                .map(|i| {
                    let mut item = json!({"sku": format!("sku-{}", self.below(50)), "quantity": 1 + i});
                    if self.chance(0.7) {
                        item["unit_price"] = json!(self.below(10_000) as f64 / 100.0);
                    }
                    item
                })
                .collect(),
        )
    }

    fn valid(&self) -> (&'static str, Value) {
        match self.below(12) {
            0 | 1 => {
                let mut p = json!({
                    "order_id": format!("o-{}", self.below(100_000)),
                    "customer_id": self.customer(),
                    "currency": self.pick(&["EUR", "USD", "GBP"]),
                    "total": self.below(100_000) as f64 / 100.0,
                    "items": self.items(),
                });
                if self.chance(0.3) {
                    p["coupon"] = json!(self.text("SAVE"));
                }
                if self.chance(0.3) {
                    p["shipping_address"] = json!({"city": self.text("Paris"), "zip": "75001"});
                }
                ("order_placed", p)
            }
            2 => (
                "order_refunded",
                json!({"order_id": format!("o-{}", self.below(1000)), "amount": self.below(5000) as f64 / 10.0, "reason": self.text("damaged")}),
            ),
            3 | 4 => (
                "customer_updated",
                json!({
                    "customer_id": self.customer(),
                    "email": format!("{}@example.com", self.below(100)),
                    "name": self.text("Ada"),
                    "address": {"country": self.pick(&["FR", "DE", "US", "JP"])},
                    "marketing_opt_in": self.chance(0.5),
                }),
            ),
            5 => (
                "user_signed_up",
                json!({"user_id": self.customer(), "email": format!("u{}@example.com", self.below(100)), "plan": self.pick(&["free", "pro"]), "name": self.text("Bob")}),
            ),
            6 => (
                "page_viewed",
                json!({"session_id": format!("s-{}", self.below(20)), "path": format!("/p/{}", self.below(30)), "user_id": self.customer(), "duration_ms": self.below(60_000)}),
            ),
            7 => (
                "cart_item_added",
                json!({"session_id": format!("s-{}", self.below(20)), "sku": format!("sku-{}", self.below(50)), "quantity": 1 + self.below(3)}),
            ),
            8 => {
                let commits: Vec<Value> = (0..self.below(4))
                    .map(|i| {
                        json!({"id": format!("c{:x}", self.rng.next_u64()), "message": self.text("fix"), "author": {"name": "dev"}, "timestamp": format!("2024-05-01T11:{:02}:00Z", i)})
                    })
                    .collect();
                (
                    "push",
                    json!({"ref": "refs/heads/main", "repository": {"full_name": format!("org/r{}", self.below(3))}, "pusher": {"name": "dev"}, "size": commits.len(), "commits": commits}),
                )
            }
            9 => (
                "pull_request",
                json!({
                    "action": self.pick(&["opened", "edited", "closed", "reopened"]),
                    "pull_request": {"number": 1 + self.below(5), "title": self.text("Add"), "state": self.pick(&["open", "closed"]), "merged": self.chance(0.3)},
                    "repository": {"full_name": format!("org/r{}", self.below(3))},
                }),
            ),
            10 => {
                let t = self.pick(&["charge.succeeded", "charge.refunded"]);
                let obj = json!({"id": format!("ch_{}", self.below(1000)), "amount": self.below(100_000), "amount_refunded": self.below(1000), "currency": "eur", "customer": self.customer(), "status": "succeeded"});
                (
                    t,
                    json!({"id": format!("evt_{}", self.below(1_000_000)), "type": t, "data": {"object": obj}, "created": 1_714_560_000 + self.below(3600)}),
                )
            }
            _ => (
                "search_performed",
                json!({"session_id": format!("s-{}", self.below(20)), "query": self.text("shoes"), "results": self.below(100), "filters": {"size": 42}}),
            ),
        }
    }

    fn invalid(&self) -> (&'static str, Value) {
        match self.below(5) {
            0 => ("mystery_event", json!({"what": "unknown type"})),
            // Violates the schema: no items.
            1 => (
                "order_placed",
                json!({"order_id": "o-x", "customer_id": "c-1", "currency": "EUR", "total": 1}),
            ),
            // A bigint column gets text.
            2 => (
                "cart_item_added",
                json!({"session_id": "s-1", "sku": "sku-1", "quantity": "many"}),
            ),
            // A required value is missing (no schema says so; the mapping does).
            3 => ("search_performed", json!({"session_id": "s-1"})),
            // Exploded items that are not objects with the required fields.
            _ => (
                "push",
                json!({"ref": "r", "repository": {"full_name": "org/r0"}, "commits": [{"message": "no id"}]}),
            ),
        }
    }
}

impl Workload {
    /// Draws the workload of a run.
    pub fn draw(rng: &SeededEntropy) -> Self {
        let mut g = Gen {
            rng,
            next_id: 0,
            invalid_share: 0.03 + 0.12 * rng.unit(),
        };
        let target = 100 + g.below(300) as usize;
        let n_clients = 1 + g.below(3) as usize;
        let mut clients = vec![ClientPlan::default(); n_clients];
        let mut t = Duration::ZERO;
        let mut events = 0;
        while events < target {
            // A burst: a run of requests close together, then an idle stretch.
            let burst = 1 + g.below(15);
            for _ in 0..burst {
                let n = 1 + g.below(8) as usize;
                let evs: Vec<EventSpec> = (0..n).map(|_| g.event()).collect();
                events += evs.len();
                let c = g.below(n_clients as u64) as usize;
                clients[c].requests.push(Request {
                    at: t,
                    events: evs,
                    resend: g.chance(0.04),
                });
                t += Duration::from_millis(g.below(150));
            }
            t += Duration::from_millis(if g.chance(0.3) {
                5_000 + g.below(25_000)
            } else {
                g.below(3_000)
            });
        }
        Workload {
            clients,
            events,
            span: t,
        }
    }
}
