//! Logs and metrics: `tracing` (text or JSON), Prometheus through the `metrics` crate, and
//! CloudWatch Embedded Metric Format (EMF) lines for the alarms in `infra/`.
//!
//! The names are the contract in `docs/METRICS.md`. [`MetricsObserver`] turns the drivers'
//! [`Observation`]s into both; the HTTP layer records its own. [`scrape`] reads a page back.

pub mod scrape;

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use microbatch_core::ports::{Checkpoint, Observation, Observer};
use microbatch_core::time::Timestamp;
use serde_json::{Map, Value, json};

use crate::config::{LogFormat, MetricsFormat};

/// Starts logging; `RUST_LOG` overrides the configured filter.
pub fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("static buckets are valid")
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

// --- EMF ---------------------------------------------------------------------------------------

#[derive(Default)]
struct EmfState {
    /// (service, metric) → (unit, sum) for counts, or the values seen.
    counts: BTreeMap<(&'static str, &'static str), (&'static str, f64)>,
    values: BTreeMap<(&'static str, &'static str), (&'static str, Vec<f64>)>,
}

static EMF: OnceLock<Mutex<EmfState>> = OnceLock::new();

fn emf() -> Option<&'static Mutex<EmfState>> {
    EMF.get()
}

/// Turns on EMF collection; [`emf_flush`] then prints what was collected.
pub fn enable_emf() {
    let _ = EMF.set(Mutex::new(EmfState::default()));
}

/// Adds to an EMF count (no-op unless EMF is enabled).
pub fn emf_count(service: &'static str, name: &'static str, n: f64) {
    if let Some(m) = emf() {
        m.lock()
            .expect("emf lock")
            .counts
            .entry((service, name))
            .or_insert(("Count", 0.0))
            .1 += n;
    }
}

/// Records an EMF value (CloudWatch computes percentiles from them).
pub fn emf_value(service: &'static str, name: &'static str, unit: &'static str, v: f64) {
    if let Some(m) = emf() {
        let mut s = m.lock().expect("emf lock");
        let entry = s.values.entry((service, name)).or_insert((unit, Vec::new()));
        // EMF takes at most 100 values per metric and line; keep the largest, which the p99 alarms care about.
        if entry.1.len() < 100 {
            entry.1.push(v);
        } else if let Some(min) = entry.1.iter_mut().min_by(|a, b| a.total_cmp(b))
            && v > *min
        {
            *min = v;
        }
    }
}

/// The EMF lines for everything collected since the last flush, one per service.
pub fn emf_lines(now: Timestamp) -> Vec<String> {
    let Some(m) = emf() else { return Vec::new() };
    let state = std::mem::take(&mut *m.lock().expect("emf lock"));
    let mut by_service: BTreeMap<&str, (Vec<Value>, Map<String, Value>)> = BTreeMap::new();
    for ((service, name), (unit, sum)) in state.counts {
        let e = by_service.entry(service).or_default();
        e.0.push(json!({"Name": name, "Unit": unit}));
        e.1.insert(name.into(), json!(sum));
    }
    for ((service, name), (unit, values)) in state.values {
        let e = by_service.entry(service).or_default();
        e.0.push(json!({"Name": name, "Unit": unit}));
        e.1.insert(name.into(), json!(values));
    }
    by_service
        .into_iter()
        .map(|(service, (defs, mut fields))| {
            fields.insert("Service".into(), json!(service));
            fields.insert(
                "_aws".into(),
                json!({
                    "Timestamp": now.as_millis(),
                    "CloudWatchMetrics": [{"Namespace": "Microbatch", "Dimensions": [["Service"]], "Metrics": defs}]
                }),
            );
            Value::Object(fields).to_string()
        })
        .collect()
}

/// Prints EMF lines to stdout every `every` (CloudWatch Logs reads them from the task's output).
pub async fn emf_flush(every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        flush_emf_now();
    }
}

/// Prints what EMF collected so far (also at shutdown).
pub fn flush_emf_now() {
    use microbatch_core::ports::Clock;
    for line in emf_lines(crate::runtime::SystemClock.now()) {
        #[allow(clippy::print_stdout)]
        {
            println!("{line}");
        }
    }
}

/// Whether EMF is wanted.
pub fn setup_metrics(format: MetricsFormat) -> PrometheusHandle {
    if format == MetricsFormat::Emf {
        enable_emf();
    }
    install_prometheus()
}

/// A service's metrics for as long as it runs: the recorder, EMF's periodic flush and, when
/// `listen` is set, `GET /metrics` on its own port. [`Telemetry::finish`] flushes EMF a last time.
pub struct Telemetry {
    pub handle: PrometheusHandle,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    pub async fn start(format: MetricsFormat, listen: Option<std::net::SocketAddr>) -> anyhow::Result<Self> {
        let handle = setup_metrics(format);
        let mut tasks = vec![tokio::spawn(emf_flush(Duration::from_secs(60)))];
        if let Some(addr) = listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("log.metrics_listen: cannot listen on {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let h = handle.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let h = h.clone();
                    async move { h.render() }
                }),
            );
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            }));
        }
        Ok(Telemetry { handle, tasks })
    }

    pub fn finish(self) {
        for t in self.tasks {
            t.abort();
        }
        flush_emf_now();
    }
}

// --- Observer ----------------------------------------------------------------------------------

/// Drivers' observations → metrics (names from docs/METRICS.md).
#[derive(Debug, Clone, Copy)]
pub struct MetricsObserver {
    /// The EMF `Service` dimension: `produce`, `consume` or `import`.
    pub service: &'static str,
}

impl Observer for MetricsObserver {
    fn observe(&self, o: Observation<'_>) {
        let s = self.service;
        match o {
            // The HTTP layer counts accepted events by type; failures after acceptance are rare.
            Observation::EventsAccepted { .. } => {}
            Observation::EventsFailed { count } => emf_count(s, "EventsRejected", count as f64),
            Observation::AggregatePut {
                user_records,
                user_bytes,
                record_bytes,
            } => {
                metrics::counter!("microbatch_aggregates_put_total").increment(1);
                metrics::histogram!("microbatch_aggregate_user_records").record(user_records as f64);
                metrics::histogram!("microbatch_aggregate_fill_ratio")
                    .record(user_bytes as f64 / record_bytes.max(1) as f64);
            }
            Observation::RecordsRead {
                shard,
                records,
                bytes,
                millis_behind_latest,
            } => {
                metrics::counter!("microbatch_records_read_total", "shard" => shard.to_string())
                    .increment(records as u64);
                metrics::counter!("microbatch_bytes_read_total", "shard" => shard.to_string())
                    .increment(bytes as u64);
                emf_count(s, "RecordsRead", records as f64);
                if let Some(ms) = millis_behind_latest {
                    metrics::gauge!("microbatch_millis_behind_latest", "shard" => shard.to_string())
                        .set(ms as f64);
                    emf_value(s, "MillisBehindLatest", "Milliseconds", ms as f64);
                }
            }
            Observation::EventRejected { reason, .. } => {
                let kind = reason.split(':').next().unwrap_or("unmappable").to_owned();
                metrics::counter!("microbatch_events_unmappable_total", "event_type" => "", "reason" => kind)
                    .increment(1);
                emf_count(s, "EventsUnmappable", 1.0);
                tracing::warn!(reason, "event rejected to rejected/");
            }
            Observation::BatchFlushed {
                table,
                rows,
                bytes,
                age,
                reason,
            } => {
                metrics::counter!("microbatch_batches_flushed_total", "table" => table.to_owned(), "reason" => reason.to_owned()).increment(1);
                metrics::histogram!("microbatch_batch_rows", "table" => table.to_owned()).record(rows as f64);
                metrics::histogram!("microbatch_batch_bytes", "table" => table.to_owned())
                    .record(bytes as f64);
                metrics::histogram!("microbatch_batch_age_seconds", "table" => table.to_owned())
                    .record(age.as_secs_f64());
                emf_count(s, "BatchesFlushed", 1.0);
                emf_value(s, "BatchAgeMillis", "Milliseconds", age.as_millis() as f64);
                emf_value(s, "BatchRows", "Count", rows as f64);
                emf_value(s, "BatchBytes", "Bytes", bytes as f64);
            }
            Observation::BatchWritten { key, bytes } => {
                metrics::histogram!("microbatch_batch_stored_bytes").record(bytes as f64);
                tracing::debug!(key, bytes, "batch written");
            }
            Observation::WriteFailed {
                key,
                error,
                attempt,
                stalled,
            } => {
                let stalls = if stalled { "true" } else { "false" };
                metrics::counter!(
                    "microbatch_object_writes_failed_total",
                    "kind" => error.kind.as_str(),
                    "stalled" => stalls
                )
                .increment(1);
                emf_count(s, "ObjectWritesFailed", 1.0);
                if stalled {
                    // The alarm: a write that retries alone will not cure, its shard not read meanwhile.
                    emf_count(s, "ObjectWritesStalled", 1.0);
                    tracing::error!(key, attempt, %error, "object write refused; its shard waits until it succeeds");
                } else {
                    tracing::warn!(key, attempt, %error, "object write failed; retrying");
                }
            }
            Observation::LeaseDeleted { shard } => {
                metrics::counter!("microbatch_leases_deleted_total").increment(1);
                tracing::info!(%shard, "finished lease deleted");
            }
            Observation::RowRefused { key, row, reason } => {
                metrics::counter!("microbatch_rows_refused_total").increment(1);
                emf_count(s, "RowsRefused", 1.0);
                tracing::warn!(
                    key,
                    row,
                    reason,
                    "row refused by the warehouse; kept in rejected/rows/"
                );
            }
            Observation::Checkpointed {
                shard,
                position,
                pending_records,
            } => {
                metrics::gauge!("microbatch_checkpoint_lag_records", "shard" => shard.to_string())
                    .set(pending_records as f64);
                emf_value(s, "CheckpointLagRecords", "Count", pending_records as f64);
                if let Checkpoint::ShardEnd = position {
                    tracing::info!(%shard, "shard finished");
                }
            }
            Observation::BufferBytes { allocated, in_flight } => {
                metrics::gauge!("microbatch_buffer_bytes").set(allocated as f64);
                metrics::gauge!("microbatch_write_bytes_in_flight").set(in_flight as f64);
                emf_value(s, "BufferBytes", "Bytes", allocated as f64);
                emf_value(s, "WriteBytesInFlight", "Bytes", in_flight as f64);
            }
            Observation::LeaseTaken { shard } => tracing::info!(%shard, "lease taken"),
            Observation::LeaseLost { shard } => {
                tracing::warn!(%shard, "lease lost; its buffers were dropped")
            }
            Observation::Loaded {
                table,
                key,
                rows,
                inserted,
                duration,
                min_received_at,
                max_received_at,
            } => {
                metrics::counter!("microbatch_loads_total", "table" => table.to_owned(), "outcome" => "loaded").increment(1);
                metrics::counter!("microbatch_load_rows_total", "table" => table.to_owned())
                    .increment(inserted);
                metrics::histogram!("microbatch_load_duration_seconds", "table" => table.to_owned())
                    .record(duration.as_secs_f64());
                use microbatch_core::ports::Clock;
                let now = crate::runtime::SystemClock.now();
                let oldest = now.saturating_since(min_received_at);
                let newest = now.saturating_since(max_received_at);
                metrics::histogram!("microbatch_freshness_seconds", "table" => table.to_owned())
                    .record(oldest.as_secs_f64());
                emf_count(s, "LoadsCompleted", 1.0);
                emf_count(s, "RowsLoaded", inserted as f64);
                emf_value(
                    s,
                    "LoadDurationMillis",
                    "Milliseconds",
                    duration.as_millis() as f64,
                );
                emf_value(s, "FreshnessMillis", "Milliseconds", oldest.as_millis() as f64);
                tracing::info!(
                    table,
                    key,
                    rows,
                    inserted,
                    freshness_ms = oldest.as_millis() as u64,
                    newest_ms = newest.as_millis() as u64,
                    "loaded"
                );
            }
            Observation::LoadSkipped { key, reason } => {
                metrics::counter!("microbatch_loads_total", "table" => "", "outcome" => "skipped")
                    .increment(1);
                tracing::debug!(key, reason, "skipped");
            }
            Observation::LoadRetry {
                key,
                attempt,
                error,
                transient,
            } => {
                let class = if transient { "transient" } else { "permanent" };
                metrics::counter!("microbatch_load_failures_total", "table" => "", "class" => class)
                    .increment(1);
                metrics::counter!("microbatch_loads_total", "table" => "", "outcome" => "retried")
                    .increment(1);
                emf_count(s, "LoadFailures", 1.0);
                tracing::warn!(key, attempt, error, class, "load failed");
            }
            Observation::DeadLettered { key, code, reason } => {
                metrics::counter!("microbatch_loads_dead_lettered_total", "table" => "", "code" => code.to_owned())
                    .increment(1);
                metrics::counter!("microbatch_loads_total", "table" => "", "outcome" => "dead_lettered")
                    .increment(1);
                emf_count(s, "LoadsDeadLettered", 1.0);
                tracing::error!(key, code, reason, "dead-lettered");
            }
            Observation::PortRetry { service, kind, error } => {
                metrics::counter!(
                    "microbatch_port_retries_total",
                    "service" => service.to_owned(),
                    "kind" => kind.as_str()
                )
                .increment(1);
                tracing::warn!(service, %kind, error, "retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_lines_follow_the_format_the_alarms_read() {
        enable_emf();
        emf_count("import", "LoadsCompleted", 2.0);
        emf_value("import", "FreshnessMillis", "Milliseconds", 1200.0);
        emf_count("produce", "Http5xx", 1.0);
        let lines = emf_lines(Timestamp::from_millis(1_000));
        assert_eq!(lines.len(), 2);
        let import: Value =
            serde_json::from_str(lines.iter().find(|l| l.contains("\"import\"")).unwrap()).unwrap();
        assert_eq!(import["Service"], "import");
        assert_eq!(import["LoadsCompleted"], 2.0);
        assert_eq!(import["FreshnessMillis"], json!([1200.0]));
        let meta = &import["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(meta["Namespace"], "Microbatch");
        assert_eq!(meta["Dimensions"], json!([["Service"]]));
        assert!(
            emf_lines(Timestamp::from_millis(2_000)).is_empty(),
            "a flush empties the collector"
        );
    }

    /// The dashboard and alarms in `infra/` read the EMF names docs/METRICS.md lists; one that is
    /// listed but never emitted is a blank graph or an alarm that cannot fire.
    #[test]
    fn every_emf_name_in_the_metrics_contract_is_emitted() {
        let contract = include_str!("../../../docs/METRICS.md");
        let source = include_str!("mod.rs");
        let http = include_str!("../producer/mod.rs");
        for row in contract.lines().filter(|l| l.starts_with("| `microbatch_")) {
            let emf = row.split('|').nth(4).unwrap_or("");
            let Some(name) = emf.split('`').nth(1) else {
                continue;
            };
            let needle = format!("\"{name}\"");
            assert!(
                source.contains(&needle) || http.contains(&needle),
                "docs/METRICS.md lists the EMF metric {name}, but nothing emits it"
            );
        }
    }

    #[test]
    fn every_emf_name_is_in_the_metrics_contract() {
        let contract = include_str!("../../../docs/METRICS.md");
        let source = include_str!("mod.rs");
        for name in source
            .split("emf_count(s, \"")
            .skip(1)
            .chain(source.split("emf_value(s, \"").skip(1))
        {
            let name = name.split('"').next().unwrap();
            assert!(
                contract.contains(&format!("`{name}`")),
                "{name} is emitted but not in docs/METRICS.md"
            );
        }
    }
}
