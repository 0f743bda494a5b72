//! The binary's subcommands: the services (`run`, `produce`, `consume`, `import`) here;
//! [`check`], [`dlq`] and [`demo`] in their own modules.

mod check;
mod demo;
mod dlq;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use microbatch_core::catalog::{Catalog, Source};

use crate::app::{Shutdown, run_consumer, run_importer, serve_producer};
use crate::config::Config;
use crate::stack::Stack;
use crate::telemetry::Telemetry;

pub use check::check;
pub use demo::demo;
pub use dlq::{dlq_list, dlq_replay};

/// The example catalog, built in so that `demo` works from any directory.
const EXAMPLE_CATALOG: [(&str, &str); 4] = [
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

/// The configured catalog; the built-in example when the default directory is not there.
pub fn load_catalog(config: &Config) -> anyhow::Result<Catalog> {
    let dir = &config.catalog.dir;
    if !dir.exists() && dir == Path::new("examples/catalog") {
        tracing::info!("no ./examples/catalog here: using the built-in example catalog");
        let sources = EXAMPLE_CATALOG.map(|(n, t)| Source {
            name: n.into(),
            text: t.into(),
        });
        return Ok(Catalog::load(sources)?);
    }
    crate::catalog_dir::load(dir)
}

async fn open(config: &Config) -> anyhow::Result<(Arc<Catalog>, &'static Stack)> {
    let catalog = Arc::new(load_catalog(config)?);
    // The stack lives as long as the process: leaking it lets the spawned services borrow it.
    let stack: &'static Stack = Box::leak(Box::new(Stack::open(config).await?));
    Ok((catalog, stack))
}

/// Runs all three services until a signal, draining in order: producer, consumer, importer.
async fn run_all(
    config: Config,
    catalog: Arc<Catalog>,
    stack: &'static Stack,
    shutdown: Shutdown,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let telemetry = Telemetry::start(config.log.metrics, config.log.metrics_listen).await?;
    let metrics = Some(telemetry.handle.clone());
    let config = Arc::new(config);
    let (consumer_stop, importer_stop) = (Shutdown::default(), Shutdown::default());
    let producer = {
        let (config, catalog, shutdown, consumer_stop) = (
            config.clone(),
            catalog.clone(),
            shutdown.clone(),
            consumer_stop.clone(),
        );
        tokio::spawn(async move {
            let result = serve_producer(&config, catalog, &stack.stream, metrics, shutdown, bound).await;
            consumer_stop.trigger();
            result
        })
    };
    let consumer = {
        let (config, catalog, importer_stop, stop) = (
            config.clone(),
            catalog.clone(),
            importer_stop.clone(),
            consumer_stop.clone(),
        );
        tokio::spawn(async move {
            let result = run_consumer(
                &config,
                &catalog,
                &stack.stream,
                &stack.store,
                &stack.leases,
                stop,
            )
            .await;
            importer_stop.trigger();
            result
        })
    };
    let importer = {
        let (config, stop) = (config.clone(), importer_stop.clone());
        let warehouse = stack.warehouse().await?;
        tokio::spawn(async move {
            run_importer(&config, &catalog, &stack.queue, &stack.store, warehouse, stop).await
        })
    };
    let (p, c, i) = tokio::join!(producer, consumer, importer);
    telemetry.finish();
    p??;
    c??;
    i??;
    Ok(())
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    run_until(config, shutdown, None).await
}

/// `run` with the stop in the caller's hands instead of a signal's, and the producer's bound
/// address sent to `bound`: for a process that embeds the whole pipeline (a test).
pub async fn run_until(
    config: Config,
    shutdown: Shutdown,
    bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let (catalog, stack) = open(&config).await?;
    run_all(config, catalog, stack, shutdown, bound).await
}

pub async fn produce(config: Config) -> anyhow::Result<()> {
    // Before the stack opens, so its first AWS calls are counted too.
    let telemetry = Telemetry::start(config.log.metrics, config.log.metrics_listen).await?;
    let (catalog, stack) = open(&config).await?;
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let metrics = Some(telemetry.handle.clone());
    let result = serve_producer(&config, catalog, &stack.stream, metrics, shutdown, None).await;
    telemetry.finish();
    result
}

pub async fn consume(config: Config) -> anyhow::Result<()> {
    let telemetry = Telemetry::start(config.log.metrics, config.log.metrics_listen).await?;
    let (catalog, stack) = open(&config).await?;
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let result = run_consumer(
        &config,
        &catalog,
        &stack.stream,
        &stack.store,
        &stack.leases,
        shutdown,
    )
    .await;
    telemetry.finish();
    result
}

pub async fn import(config: Config) -> anyhow::Result<()> {
    let telemetry = Telemetry::start(config.log.metrics, config.log.metrics_listen).await?;
    let (catalog, stack) = open(&config).await?;
    let shutdown = Shutdown::default();
    shutdown.on_signals();
    let warehouse = stack.warehouse().await?;
    let result = run_importer(&config, &catalog, &stack.queue, &stack.store, warehouse, shutdown).await;
    telemetry.finish();
    result
}

pub async fn migrate(config: Config) -> anyhow::Result<()> {
    use microbatch_core::ports::Warehouse as _;
    let (catalog, stack) = open(&config).await?;
    stack
        .warehouse()
        .await?
        .migrate(&catalog)
        .await
        .context("migration failed")?;
    println_out(&format!(
        "warehouse migrated: {} tables for catalog {}",
        catalog.tables().len(),
        catalog.version()
    ));
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) fn println_out(line: &str) {
    println!("{line}");
}
