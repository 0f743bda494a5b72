//! The load generator: HTTP/1.1 keep-alive connections (hyper), open-loop at a constant arrival
//! rate with latency from the intended send time (as wrk2 does, so a stalled server cannot hide
//! its queue: no coordinated omission), and closed-loop saturation for maximum throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::workload::Workload;

/// A histogram of microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { addr, sender })
    }

    /// POSTs `body`; returns the status (the body is read, so the connection can be reused).
    pub async fn post(&mut self, path: &str, content_type: &str, body: Bytes) -> anyhow::Result<u16> {
        if self.sender.ready().await.is_err() {
            *self = Conn::open(self.addr).await?;
        }
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))?;
        let response = match self.sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                // The server closed the connection: reopen for the next request.
                *self = Conn::open(self.addr).await?;
                return Err(e.into());
            }
        };
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// What happened to each event of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Unsent,
    /// 202: durable, must reach the warehouse exactly once.
    Accepted,
    /// A 4xx/5xx answer: nothing of the request was accepted.
    Refused,
    /// No answer (connection error): may or may not have been accepted.
    Unknown,
}

/// Acks per second of a run, for the plot.
#[derive(Debug, Clone)]
pub struct Second {
    pub events_acked: u64,
    pub latency: Histogram<u64>,
}

/// The result of an open-loop or closed-loop run.
#[derive(Debug)]
pub struct LoadResult {
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub events_accepted: u64,
    pub events_refused: u64,
    pub events_unknown: u64,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub elapsed: Duration,
    pub timeline: Vec<Second>,
    /// Per event (open loop only).
    pub fates: Vec<Fate>,
    /// Unix microseconds of the run's intended start.
    pub start_unix_us: u64,
}

impl LoadResult {
    pub fn accepted_per_s(&self) -> f64 {
        self.events_accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// Settings of an open-loop run.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Events per second.
    pub rate: f64,
    pub duration: Duration,
    /// Events per request.
    pub batch: usize,
    pub connections: usize,
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct ConnOutcome {
    latency: Histogram<u64>,
    timeline: Vec<Second>,
    fates: Vec<(u64, Fate)>,
    statuses: std::collections::BTreeMap<u16, u64>,
    requests: u64,
}

fn record_second(timeline: &mut Vec<Second>, at: Duration, events: u64, latency_us: u64) {
    let s = at.as_secs() as usize;
    while timeline.len() <= s {
        timeline.push(Second {
            events_acked: 0,
            latency: histogram(),
        });
    }
    timeline[s].events_acked += events;
    let _ = timeline[s].latency.record(latency_us.max(1));
}

fn merge_timelines(into: &mut Vec<Second>, from: Vec<Second>) {
    for (i, s) in from.into_iter().enumerate() {
        if into.len() <= i {
            into.push(Second {
                events_acked: 0,
                latency: histogram(),
            });
        }
        into[i].events_acked += s.events_acked;
        let _ = into[i].latency.add(&s.latency);
    }
}

/// Sends `rate` events/s for `duration` in requests of `batch` events over `connections`
/// keep-alive connections. Request `i` is due at `start + i / request_rate`; each connection
/// takes every `connections`-th request and sends it at its due time, or at once when late.
/// Latency runs from the due time to the answer. `acked` counts accepted events as they come.
pub async fn open_loop(
    addr: SocketAddr,
    workload: Arc<Workload>,
    cfg: &OpenLoop,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<LoadResult> {
    let batch = cfg.batch.max(1) as u64;
    let total_events = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let total_requests = total_events.div_ceil(batch);
    let interval_ns = 1e9 * batch as f64 / cfg.rate;
    let connections = (cfg.connections.max(1) as u64).min(total_requests.max(1));
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(Conn::open(addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let start_unix_us = unix_us() + 50_000;
    let mut tasks = Vec::new();
    for (j, mut conn) in conns.into_iter().enumerate() {
        let (workload, acked) = (workload.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = ConnOutcome {
                latency: histogram(),
                timeline: Vec::new(),
                fates: Vec::new(),
                statuses: Default::default(),
                requests: 0,
            };
            let mut i = j as u64;
            while i < total_requests {
                let offset = Duration::from_nanos((i as f64 * interval_ns) as u64);
                let due = start + offset;
                tokio::time::sleep_until(due.into()).await;
                let first = i * batch;
                let n = batch.min(total_events - first);
                let (body, content_type) =
                    workload.body(first, n as usize, start_unix_us + offset.as_micros() as u64);
                let result = conn.post("/v1/events", content_type, Bytes::from(body)).await;
                let done = Instant::now();
                let latency_us = done.duration_since(due).as_micros() as u64;
                out.requests += 1;
                let fate = match result {
                    Ok(202) => {
                        let _ = out.latency.record(latency_us.max(1));
                        record_second(&mut out.timeline, done.duration_since(start), n, latency_us);
                        acked.fetch_add(n, Ordering::Relaxed);
                        *out.statuses.entry(202).or_default() += 1;
                        Fate::Accepted
                    }
                    Ok(code) => {
                        *out.statuses.entry(code).or_default() += 1;
                        Fate::Refused
                    }
                    Err(_) => {
                        *out.statuses.entry(0).or_default() += 1;
                        Fate::Unknown
                    }
                };
                out.fates.push((i, fate));
                i += connections;
            }
            out
        }));
    }
    let mut result = LoadResult {
        latency: histogram(),
        requests: 0,
        events_accepted: 0,
        events_refused: 0,
        events_unknown: 0,
        statuses: Default::default(),
        elapsed: Duration::ZERO,
        timeline: Vec::new(),
        fates: vec![Fate::Unsent; total_events as usize],
        start_unix_us,
    };
    for t in tasks {
        let out = t.await?;
        result.latency.add(&out.latency)?;
        result.requests += out.requests;
        for (k, v) in out.statuses {
            *result.statuses.entry(k).or_default() += v;
        }
        merge_timelines(&mut result.timeline, out.timeline);
        for (i, fate) in out.fates {
            let first = i * batch;
            let end = (first + batch).min(total_events);
            for seq in first..end {
                result.fates[seq as usize] = fate;
            }
            let n = end - first;
            match fate {
                Fate::Accepted => result.events_accepted += n,
                Fate::Refused => result.events_refused += n,
                Fate::Unknown => result.events_unknown += n,
                Fate::Unsent => {}
            }
        }
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

/// Closed loop: `connections` connections send `bodies` (round robin) back to back for
/// `duration`. For the maximum throughput of a server, and its baselines.
pub async fn saturate(
    addr: SocketAddr,
    bodies: Arc<Vec<(Bytes, &'static str, u64)>>,
    connections: usize,
    duration: Duration,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<LoadResult> {
    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        conns.push(Conn::open(addr).await?);
    }
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for (j, mut conn) in conns.into_iter().enumerate() {
        let (bodies, acked) = (bodies.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = ConnOutcome {
                latency: histogram(),
                timeline: Vec::new(),
                fates: Vec::new(),
                statuses: Default::default(),
                requests: 0,
            };
            let (mut accepted, mut refused) = (0u64, 0u64);
            let mut k = j;
            while Instant::now() < end {
                let (body, content_type, n) = &bodies[k % bodies.len()];
                k += 1;
                let sent = Instant::now();
                let result = conn.post("/v1/events", content_type, body.clone()).await;
                let done = Instant::now();
                out.requests += 1;
                match result {
                    Ok(202) => {
                        let us = done.duration_since(sent).as_micros() as u64;
                        let _ = out.latency.record(us.max(1));
                        record_second(&mut out.timeline, done.duration_since(start), *n, us);
                        acked.fetch_add(*n, Ordering::Relaxed);
                        accepted += n;
                        *out.statuses.entry(202).or_default() += 1;
                    }
                    Ok(code) => {
                        refused += n;
                        *out.statuses.entry(code).or_default() += 1;
                        if code == 503 {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Err(_) => {
                        *out.statuses.entry(0).or_default() += 1;
                    }
                }
            }
            (out, accepted, refused)
        }));
    }
    let mut result = LoadResult {
        latency: histogram(),
        requests: 0,
        events_accepted: 0,
        events_refused: 0,
        events_unknown: 0,
        statuses: Default::default(),
        elapsed: Duration::ZERO,
        timeline: Vec::new(),
        fates: Vec::new(),
        start_unix_us: unix_us(),
    };
    for t in tasks {
        let (out, accepted, refused) = t.await?;
        result.latency.add(&out.latency)?;
        result.requests += out.requests;
        result.events_accepted += accepted;
        result.events_refused += refused;
        for (k, v) in out.statuses {
            *result.statuses.entry(k).or_default() += v;
        }
        merge_timelines(&mut result.timeline, out.timeline);
    }
    result.elapsed = start.elapsed();
    Ok(result)
}
