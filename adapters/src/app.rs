//! Wiring: the three services over whichever ports the configuration names, with graceful
//! shutdown in the order that keeps the contracts (the HTTP server stops taking requests, the
//! producer makes every accepted event durable, the consumer flushes and checkpoints, the importer
//! finishes the load in hand).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use microbatch_core::backoff::Backoff;
use microbatch_core::batcher::BatchPolicy;
use microbatch_core::catalog::Catalog;
use microbatch_core::driver::{Consumer, ConsumerConfig, Importer, ImporterConfig, Producer, ProducerConfig};
use microbatch_core::kpl::AggregatorConfig;
use microbatch_core::ports::{
    LeaseStore, ObjectReader, ObjectWriter, Queue, StreamReader, StreamWriter, Warehouse,
};
use microbatch_core::put_pacing::PutLimits;
use microbatch_core::read::ReadPacing;
use tokio::sync::watch;

use crate::config::{Config, StreamConfig};
use crate::producer::{AppState, router};
use crate::runtime::{OsEntropy, SystemClock};
use crate::telemetry::MetricsObserver;
use crate::worker_id::WorkerId;

/// A shutdown signal that many tasks can wait on.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown { tx: Arc::new(tx), rx }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// Resolves once [`trigger`](Self::trigger) was called.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    /// Triggers on SIGINT or SIGTERM.
    pub fn on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutting down");
            this.trigger();
        });
    }
}

/// The core producer's settings from the configuration.
pub fn producer_config(config: &Config) -> ProducerConfig {
    let (linger, max_aggregate_bytes) = config.producer_aggregation();
    let put_limits = match &config.stream {
        StreamConfig::Kinesis(k) => PutLimits {
            bytes_per_sec: k.put_bytes_per_sec,
            records_per_sec: k.put_records_per_sec,
        },
        StreamConfig::Local(_) => PutLimits::default(),
    };
    ProducerConfig {
        aggregator: AggregatorConfig {
            linger,
            max_aggregate_bytes,
            ..AggregatorConfig::default()
        },
        max_pending_events: config.producer.max_pending_events,
        put_limits,
        ..ProducerConfig::default()
    }
}

/// The core consumer's settings from the configuration, for the worker named `owner`.
pub fn consumer_config(config: &Config, owner: String) -> ConsumerConfig {
    let c = &config.consumer;
    ConsumerConfig {
        owner,
        batch: BatchPolicy {
            max_rows: c.max_batch_rows,
            max_bytes: c.max_batch_bytes,
            max_age: Duration::from_millis(c.flush_interval_ms),
            budget_bytes: c.buffer_budget_bytes,
        },
        compression: c.compression,
        read_limit: c.read_limit,
        idle_poll: Duration::from_millis(c.idle_poll_ms),
        pacing: ReadPacing {
            calls_per_sec: c.read_calls_per_sec,
            bytes_per_sec: c.read_bytes_per_sec,
        },
        lease_sync: Duration::from_millis(c.lease_sync_ms),
        shard_sync: Duration::from_millis(c.shard_sync_ms),
        failover: Duration::from_millis(c.failover_ms),
        max_inflight_writes: c.max_inflight_writes,
        ..ConsumerConfig::default()
    }
}

/// This process's worker name: the configured one, or its slot's in the data directory.
pub fn worker_id(config: &Config) -> anyhow::Result<WorkerId> {
    if config.consumer.worker_id.is_empty() {
        WorkerId::claim(&config.data_dir)
    } else {
        Ok(WorkerId::configured(&config.consumer.worker_id))
    }
}

/// The core importer's settings from the configuration.
pub fn importer_config(config: &Config) -> ImporterConfig {
    let c = &config.importer;
    ImporterConfig {
        receive_wait: config.receive_wait(),
        concurrency: c.concurrency.max(1),
        cycle_max_messages: config.cycle_max_messages(),
        load_group_bytes: c.load_group_bytes.max(1),
        max_refused_rows: c.max_refused_rows,
        backoff: Backoff::new(
            Duration::from_millis(c.backoff_base_ms),
            Duration::from_millis(c.backoff_cap_ms),
            c.max_attempts,
        ),
        ..ImporterConfig::default()
    }
}

/// Serves the producer until `shutdown`, then drains: returns once every accepted event is
/// durable. `bound` receives the listening address (port 0 picks a free one).
pub async fn serve_producer<S: StreamWriter + 'static>(
    config: &Config,
    catalog: Arc<Catalog>,
    stream: &'static S,
    metrics: Option<PrometheusHandle>,
    shutdown: Shutdown,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    static OBSERVER: MetricsObserver = MetricsObserver { service: "produce" };
    let (producer, handle) = Producer::start(
        stream,
        &SystemClock,
        &OsEntropy,
        &OBSERVER,
        producer_config(config),
    )
    .await
    .context("the producer cannot read the stream's shards")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(producer.run(async {
        let _ = stop_rx.await;
    }));
    let state = Arc::new(AppState::new(catalog, handle, &config.producer, metrics));
    let listener = tokio::net::TcpListener::bind(config.producer.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.producer.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "producer listening");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    let app = router(state.clone());
    let stopping = {
        let state = state.clone();
        let wait = shutdown.wait();
        async move {
            wait.await;
            state.ready.store(false, std::sync::atomic::Ordering::Release);
        }
    };
    let header_timeout = Duration::from_millis(config.producer.header_timeout_ms);
    crate::producer::serve::serve(listener, app, header_timeout, stopping).await;
    let _ = stop_tx.send(());
    driver.await.context("the producer driver panicked")?;
    tracing::info!("producer stopped; every accepted event is durable");
    Ok(())
}

/// Runs the consumer until `shutdown`, then flushes, checkpoints and releases its leases.
#[allow(clippy::too_many_arguments)]
pub async fn run_consumer<R, O, L>(
    config: &Config,
    catalog: &Catalog,
    reader: &R,
    store: &O,
    leases: &L,
    shutdown: Shutdown,
) -> anyhow::Result<()>
where
    R: StreamReader,
    O: ObjectWriter,
    L: LeaseStore,
{
    static OBSERVER: MetricsObserver = MetricsObserver { service: "consume" };
    let worker = worker_id(config)?;
    tracing::info!(worker = %worker.id, "consumer starting");
    let consumer = Consumer::new(
        reader,
        store,
        leases,
        &SystemClock,
        &OsEntropy,
        &OBSERVER,
        catalog,
        consumer_config(config, worker.id.clone()),
    )?;
    consumer.run(shutdown.wait()).await?;
    tracing::info!("consumer stopped; buffers flushed and checkpointed");
    Ok(())
}

/// Migrates the warehouse, then imports until `shutdown`.
pub async fn run_importer<Q, O, W>(
    config: &Config,
    catalog: &Catalog,
    queue: &Q,
    store: &O,
    warehouse: &W,
    shutdown: Shutdown,
) -> anyhow::Result<()>
where
    Q: Queue,
    O: ObjectReader + ObjectWriter,
    W: Warehouse,
{
    static OBSERVER: MetricsObserver = MetricsObserver { service: "import" };
    let importer = Importer::start(
        queue,
        store,
        warehouse,
        &SystemClock,
        &OsEntropy,
        &OBSERVER,
        catalog,
        importer_config(config),
    )
    .await?;
    importer.run(shutdown.wait()).await?;
    tracing::info!("importer stopped");
    Ok(())
}
