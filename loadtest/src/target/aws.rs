//! The emulated AWS deployment: the `microbatch` binary as `infra/` runs it — `produce`, two
//! `consume` workers sharing the shards through the lease table, and `import` — on a Kinesis
//! stream, an S3 bucket announcing to SQS, a dead-letter queue and a DynamoDB lease table made for
//! the run on moto, loading PostgreSQL. Every process serves `GET /metrics`, so the run can count
//! its AWS calls.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use microbatch_adapters::aws::Aws;
use microbatch_adapters::aws::provision::{self, Resources};

use super::{Proc, Services, Settings, Target, free_port, reset_schema};
use crate::probe::Probe;

/// Where the emulator is: one the caller runs (the test command's, `MICROBATCH_TEST_AWS_ENDPOINT`)
/// or one this run starts with the harness's script and stops when dropped.
#[derive(Debug)]
pub struct Emulator {
    pub endpoint: String,
    started: Option<(tempfile::TempDir, u32)>,
}

impl Emulator {
    pub fn at(endpoint: String) -> Self {
        Emulator {
            endpoint,
            started: None,
        }
    }

    /// moto in server mode, by `scripts/moto/start` (which installs it into the cache on its
    /// first run, as `./scripts/test` does).
    pub async fn start() -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/moto/start");
        let dir = tempfile::Builder::new().prefix("microbatch-moto.").tempdir()?;
        let status = tokio::process::Command::new(&script)
            .arg(dir.path())
            .status()
            .await
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !status.success() {
            bail!(
                "{} failed ({status}): the emulator did not start",
                script.display()
            );
        }
        let port = std::fs::read_to_string(dir.path().join("port"))?
            .trim()
            .to_owned();
        let pid = std::fs::read_to_string(dir.path().join("pid"))?.trim().parse()?;
        Ok(Emulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            started: Some((dir, pid)),
        })
    }

    /// An SDK configuration for the loadtest's own calls (resources, baselines).
    pub async fn aws(&self) -> Aws {
        provision::emulator_aws(&self.endpoint).await
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some((_, pid)) = &self.started {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// How many consumers share the shards: two, so a kill leaves one to take the leases over.
pub const CONSUMERS: [&str; 2] = ["consume-a", "consume-b"];

#[derive(Debug)]
pub struct EmulatedAws {
    emulator: std::sync::Arc<Emulator>,
    pg_url: String,
    schema: String,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    services: Services,
    /// Each process's role and metrics address (the producer's is its own port).
    metrics: Vec<(String, SocketAddr)>,
    resources: Option<Resources>,
}

impl EmulatedAws {
    pub fn new(bin: PathBuf, emulator: std::sync::Arc<Emulator>, pg_url: String) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("microbatch-loadtest-aws.")
            .tempdir()?;
        let services = Services::new(bin, dir.path().to_path_buf());
        Ok(EmulatedAws {
            emulator,
            pg_url,
            schema: "microbatch_loadtest_aws".into(),
            dir,
            addr: free_port()?,
            services,
            metrics: Vec::new(),
            resources: None,
        })
    }

    pub fn resources(&self) -> Option<&Resources> {
        self.resources.as_ref()
    }

    /// SIGKILLs one process by role (`consume-a`, `import`, …): the kill part's crash.
    pub async fn kill(&mut self, role: &str) -> anyhow::Result<()> {
        self.metrics.retain(|(r, _)| r != role);
        self.services.kill(role).await
    }

    /// Starts a process for `role` running `sub`, with its own metrics listener.
    pub fn spawn(&mut self, role: &str, sub: &str) -> anyhow::Result<()> {
        let metrics = free_port()?;
        let mut env = vec![("MICROBATCH_LOG__METRICS_LISTEN".to_owned(), metrics.to_string())];
        if sub == "consume" {
            env.push(("MICROBATCH_CONSUMER__WORKER_ID".into(), role.to_owned()));
        }
        self.services.spawn(role, sub, &env)?;
        self.metrics.push((role.to_owned(), metrics));
        Ok(())
    }
}

impl Target for EmulatedAws {
    fn name(&self) -> String {
        "emulated AWS (moto: Kinesis, S3, SQS, DynamoDB) + PostgreSQL".into()
    }

    fn start<'a>(&'a mut self, s: &'a Settings) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let aws = self.emulator.aws().await;
            let name = format!("lt-{}", crate::load::unix_us() % 10_000_000_000);
            let shards = i32::try_from(s.shards).context("shards")?;
            let resources = Resources::create(&aws, &name, shards, 30, 5)
                .await
                .with_context(|| format!("creating the run's resources on {}", self.emulator.endpoint))?;
            let catalog = self.dir.path().join("catalog");
            std::fs::create_dir_all(&catalog)?;
            std::fs::write(catalog.join("loadtest.toml"), &s.catalog_toml)?;
            let mut env = provision::emulator_env(&self.emulator.endpoint);
            env.extend(resources.env());
            env.extend(
                [
                    (
                        "MICROBATCH_DATA_DIR",
                        self.dir.path().join("data").display().to_string(),
                    ),
                    ("MICROBATCH_CATALOG__DIR", catalog.display().to_string()),
                    ("MICROBATCH_PRODUCER__LISTEN", self.addr.to_string()),
                    (
                        "MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS",
                        s.flush_interval_ms.to_string(),
                    ),
                    (
                        "MICROBATCH_CONSUMER__BUFFER_BUDGET_BYTES",
                        s.buffer_budget_bytes.to_string(),
                    ),
                    (
                        "MICROBATCH_CONSUMER__MAX_BATCH_BYTES",
                        (16usize << 20).min(s.buffer_budget_bytes / 2).to_string(),
                    ),
                    ("MICROBATCH_WAREHOUSE__URL", self.pg_url.clone()),
                    ("MICROBATCH_WAREHOUSE__SCHEMA", self.schema.clone()),
                    ("MICROBATCH_LOG__FILTER", "warn".into()),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
            reset_schema(&self.pg_url, &self.schema).await?;
            self.services.set_env(env);
            self.services.migrate().await?;
            self.resources = Some(resources);
            self.services.spawn("produce", "produce", &[])?;
            self.metrics.push(("produce".into(), self.addr));
            if !s.producer_only {
                self.start_rest().await?;
            }
            self.services.wait_ready(self.addr).await
        })
    }

    fn start_rest(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            for role in CONSUMERS {
                self.spawn(role, "consume")?;
            }
            self.spawn("import", "import")
        })
    }

    fn producer_addr(&self) -> SocketAddr {
        self.addr
    }

    fn warehouse_probe(&self) -> BoxFuture<'_, anyhow::Result<Probe>> {
        Box::pin(Probe::postgres(&self.pg_url, &self.schema))
    }

    fn processes(&self) -> Vec<Proc> {
        self.services.processes()
    }

    fn stop(&mut self) -> BoxFuture<'_, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let peaks = self.services.stop().await;
            self.metrics.clear();
            if let Some(resources) = self.resources.take() {
                let aws = self.emulator.aws().await;
                resources
                    .delete(&aws)
                    .await
                    .with_context(|| format!("deleting the run's resources on {}", self.emulator.endpoint))?;
            }
            peaks
        })
    }

    fn data_dir(&self) -> Option<&Path> {
        None
    }

    fn metrics_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.metrics.clone()
    }

    /// One of the two consumers and the importer, SIGKILLed; the importer restarts at once (ECS
    /// replaces a stopped task) while the consumer's leases wait out the failover time and move
    /// to the other one.
    fn crash(&mut self) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let killed = vec![CONSUMERS[0].to_owned(), "import".to_owned()];
            for role in &killed {
                self.kill(role).await?;
            }
            self.spawn("import-restarted", "import")?;
            Ok(killed)
        })
    }
}
