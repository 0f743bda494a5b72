//! `microbatch check`: the configuration, the catalog, every configured port and the warehouse,
//! each said to be fine or exactly what is missing or misconfigured. Exits non-zero on any
//! problem, so a deployment pipeline can gate on it.

use anyhow::bail;

use super::{load_catalog, println_out};
use crate::config::{Config, QueueConfig, StoreConfig};
use crate::stack::{Leases, LoadQueue, Stack, Store, Stream};
use crate::warehouse::SqlWarehouse;
use crate::warehouse::redshift::transport::Transport as _;

pub async fn check(config: Config, dry_run: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(&config)?;
    println_out(&format!(
        "configuration: ok (stream {}, store {}, queue {}, leases {})\ncatalog {}: {} event types, {} tables",
        config.stream.kind(),
        config.store.kind(),
        config.queue.kind(),
        config.leases.kind(),
        catalog.version(),
        catalog.event_types().count(),
        catalog.tables().len()
    ));
    let stack = Stack::open(&config).await?;
    let mut problems = Vec::new();
    let mut report = |port: &str, result: Result<String, String>| match result {
        Ok(line) => println_out(&format!("{port}: {line}")),
        Err(problem) => {
            println_out(&format!("{port}: PROBLEM: {problem}"));
            problems.push(port.to_owned());
        }
    };
    if let Some(aws) = &stack.aws {
        println_out(&format!("aws: region {}", aws.region()));
    }
    report(
        "stream",
        match &stack.stream {
            Stream::Local(_) => Ok(format!("local, in {}", config.data_dir.display())),
            Stream::Aws(k) => k.probe().await,
        },
    );
    report(
        "store",
        match &stack.store {
            Store::Local(s) => Ok(format!("local, in {}", s.root().display())),
            Store::Aws(s) => s.probe().await,
        },
    );
    let max_receives = match &config.queue {
        QueueConfig::Local(c) => c.max_receives,
        QueueConfig::Sqs(c) => c.max_receives,
    };
    report(
        "queue",
        match &stack.queue {
            LoadQueue::Local(_) => Ok(format!("local, in {}", config.data_dir.display())),
            LoadQueue::Aws(q) => q.probe(max_receives).await,
        },
    );
    report(
        "leases",
        match &stack.leases {
            Leases::Local(_) => Ok(format!("local, in {}", config.data_dir.display())),
            Leases::Aws(l) => l.probe().await,
        },
    );
    report("notifications", notification_path(&config));
    match stack.warehouse().await {
        Err(e) => report("warehouse", Err(format!("{e:#}"))),
        Ok(warehouse) => {
            let differences = warehouse.schema_diff(&catalog).await?;
            if differences.is_empty() {
                report("warehouse", Ok("every catalog table and column is there".into()));
            } else {
                for d in &differences {
                    println_out(&format!("warehouse: {d}"));
                }
                report(
                    "warehouse",
                    Err(format!(
                        "differs from the catalog in {} place(s); run `microbatch migrate`",
                        differences.len()
                    )),
                );
            }
        }
    }
    if dry_run {
        report("warehouse dry run", warehouse_dry_run(&stack).await);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("problems with: {}", problems.join(", "))
    }
}

/// Whether the store's announcements reach the queue the importer reads: the local store
/// announces to the local queue; S3 to SQS (the bucket's notification configuration). A
/// mismatch is a note, not a problem: a process that only consumes names no queue.
fn notification_path(config: &Config) -> Result<String, String> {
    match (&config.store, &config.queue) {
        (StoreConfig::Local(_), QueueConfig::Local(_)) => Ok("the local store announces to the local queue".into()),
        (StoreConfig::S3(_), QueueConfig::Sqs(_)) => Ok(
            "S3 announces to SQS by the bucket's event notification (infra/modules/storage); not probed".into(),
        ),
        (StoreConfig::Local(_), QueueConfig::Sqs(_)) => Ok(
            "note: the local store announces to the local queue, but an importer here would read SQS".into(),
        ),
        (StoreConfig::S3(_), QueueConfig::Local(_)) => Ok(
            "note: S3 announces to SQS, but an importer here would read the local queue (fine for a consumer)".into(),
        ),
    }
}

/// `check --warehouse`: a scratch load on Redshift (see [`RedshiftWarehouse::dry_run`]).
///
/// [`RedshiftWarehouse::dry_run`]: crate::warehouse::RedshiftWarehouse::dry_run
async fn warehouse_dry_run(stack: &Stack) -> Result<String, String> {
    match stack.warehouse().await {
        Err(e) => Err(format!("{e:#}")),
        Ok(SqlWarehouse::Redshift(w)) => match w.dry_run().await {
            Ok(took) => Ok(format!(
                "a one-row COPY from the bucket into a scratch table, with the COPY role, committed in {} ms \
                 over {} (the per-COPY cost of docs/AWS.md's freshness model)",
                took.as_millis(),
                w.transport().describe()
            )),
            Err(e) => Err(e.to_string()),
        },
        Ok(_) => {
            Ok("nothing to prove: the dry run is for Redshift, whose COPY reads the bucket itself".into())
        }
    }
}
