//! What the loadtest runs against, behind [`Target`]: today the `microbatch` binary on the
//! embedded stack with the SQLite or the PostgreSQL warehouse, as child processes on a temporary
//! data directory. An emulated-AWS target (moto + PostgreSQL) implements the same trait: start the
//! emulator and the services with `AWS_ENDPOINT_URL` set, hand out the producer's URL, a
//! PostgreSQL [`Probe`], and the pids to sample.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use tokio::process::{Child, Command};

use crate::probe::Probe;

/// What a run needs from the pipeline.
#[derive(Debug, Clone)]
pub struct Settings {
    pub catalog_toml: String,
    pub shards: u32,
    pub flush_interval_ms: u64,
    pub buffer_budget_bytes: usize,
    /// Run `produce`, `consume` and `import` as three processes (the consumer's RSS alone) instead
    /// of one `run`.
    pub split: bool,
    /// Start only the producer; [`Target::start_rest`] starts the consumer and importer later
    /// (backlog drain). Needs `split`.
    pub producer_only: bool,
}

/// A process of the target, for RSS sampling.
#[derive(Debug, Clone)]
pub struct Proc {
    pub role: String,
    pub pid: u32,
}

/// A pipeline under test.
pub trait Target: Send {
    fn name(&self) -> String;
    /// Starts everything; returns once the producer answers `/readyz`.
    fn start<'a>(&'a mut self, settings: &'a Settings) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Starts what `producer_only` left out.
    fn start_rest(&mut self) -> BoxFuture<'_, anyhow::Result<()>>;
    fn producer_addr(&self) -> SocketAddr;
    fn base_url(&self) -> String {
        format!("http://{}", self.producer_addr())
    }
    /// A connection to the warehouse the pipeline loads.
    fn warehouse_probe(&self) -> BoxFuture<'_, anyhow::Result<Probe>>;
    fn processes(&self) -> Vec<Proc>;
    /// Stops gracefully (SIGTERM, then waits): returns each process's peak RSS in bytes.
    fn stop(&mut self) -> BoxFuture<'_, anyhow::Result<Vec<(String, u64)>>>;
    /// The data directory, when the target keeps its stream and objects in files.
    fn data_dir(&self) -> Option<&Path>;
}

/// Which warehouse the embedded stack loads.
#[derive(Debug, Clone)]
pub enum WarehouseKind {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// The `microbatch` binary on the embedded stack (local stream, directory, queue).
#[derive(Debug)]
pub struct Embedded {
    bin: PathBuf,
    warehouse: WarehouseKind,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    env: Vec<(String, String)>,
    children: Vec<(String, Child)>,
}

/// A free port on 127.0.0.1 (bound and released; the child binds it right after).
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Peak resident set (VmHWM) of a live process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

/// Current resident set (VmRSS), in bytes.
pub fn current_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|k| k * 1024)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Embedded {
    pub fn new(bin: PathBuf, warehouse: WarehouseKind) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("microbatch-loadtest.")
            .tempdir()?;
        Ok(Embedded {
            bin,
            warehouse,
            dir,
            addr: free_port()?,
            env: Vec::new(),
            children: Vec::new(),
        })
    }

    fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(sub)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .stdin(Stdio::null());
        c
    }

    async fn spawn(&mut self, sub: &str) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join(format!("{sub}.log")))?;
        let child = self
            .command(sub)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} {sub}", self.bin.display()))?;
        self.children.push((sub.to_owned(), child));
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if readyz(self.addr).await {
                return Ok(());
            }
            for (role, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{role}.log")))
                        .unwrap_or_default();
                    bail!("microbatch {role} exited with {status}:\n{log}");
                }
            }
            if Instant::now() > deadline {
                bail!("the producer did not become ready on {} within 30 s", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether `GET /readyz` answers 200.
pub async fn readyz(addr: SocketAddr) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.starts_with(b"HTTP/1.1 200")
}

impl Target for Embedded {
    fn name(&self) -> String {
        match &self.warehouse {
            WarehouseKind::Sqlite => "embedded (SQLite warehouse)".into(),
            WarehouseKind::Postgres { .. } => "embedded + PostgreSQL warehouse".into(),
        }
    }

    fn start<'a>(&'a mut self, s: &'a Settings) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let data = self.dir.path().to_path_buf();
            let catalog = data.join("catalog");
            std::fs::create_dir_all(&catalog)?;
            std::fs::write(catalog.join("loadtest.toml"), &s.catalog_toml)?;
            let mut env = vec![
                (
                    "MICROBATCH_DATA_DIR".to_owned(),
                    data.join("data").display().to_string(),
                ),
                ("MICROBATCH_CATALOG__DIR".into(), catalog.display().to_string()),
                ("MICROBATCH_PRODUCER__LISTEN".into(), self.addr.to_string()),
                ("MICROBATCH_STREAM__SHARDS".into(), s.shards.to_string()),
                (
                    "MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS".into(),
                    s.flush_interval_ms.to_string(),
                ),
                (
                    "MICROBATCH_CONSUMER__BUFFER_BUDGET_BYTES".into(),
                    s.buffer_budget_bytes.to_string(),
                ),
                (
                    "MICROBATCH_CONSUMER__MAX_BATCH_BYTES".into(),
                    (16usize << 20).min(s.buffer_budget_bytes / 2).to_string(),
                ),
                ("MICROBATCH_LOG__FILTER".into(), "warn".into()),
            ];
            if let WarehouseKind::Postgres { url, schema } = &self.warehouse {
                env.push(("MICROBATCH_WAREHOUSE__URL".into(), url.clone()));
                env.push(("MICROBATCH_WAREHOUSE__SCHEMA".into(), schema.clone()));
                let pool = sqlx::PgPool::connect(url)
                    .await
                    .context("cannot reach PostgreSQL")?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&pool)
                    .await?;
                pool.close().await;
            }
            self.env = env;
            // The warehouse tables exist before the first event, so the probe can read them.
            let status = self.command("migrate").stdout(Stdio::null()).status().await?;
            if !status.success() {
                bail!("microbatch migrate failed ({status})");
            }
            if s.split {
                self.spawn("produce").await?;
                if !s.producer_only {
                    self.start_rest().await?;
                }
            } else {
                self.spawn("run").await?;
            }
            self.wait_ready().await
        })
    }

    fn start_rest(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.spawn("consume").await?;
            self.spawn("import").await
        })
    }

    fn producer_addr(&self) -> SocketAddr {
        self.addr
    }

    fn warehouse_probe(&self) -> BoxFuture<'_, anyhow::Result<Probe>> {
        Box::pin(async move {
            match &self.warehouse {
                WarehouseKind::Sqlite => {
                    Probe::sqlite(&self.dir.path().join("data").join("warehouse.db")).await
                }
                WarehouseKind::Postgres { url, schema } => Probe::postgres(url, schema).await,
            }
        })
    }

    fn processes(&self) -> Vec<Proc> {
        self.children
            .iter()
            .filter_map(|(role, c)| {
                c.id().map(|pid| Proc {
                    role: role.clone(),
                    pid,
                })
            })
            .collect()
    }

    fn stop(&mut self) -> BoxFuture<'_, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(async move {
            let mut peaks = Vec::new();
            // Producer first, so everything accepted drains downstream; then the rest.
            for (role, child) in &mut self.children {
                let Some(pid) = child.id() else { continue };
                peaks.push((role.clone(), peak_rss(pid).unwrap_or(0)));
                let _ = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
                    Ok(status) => {
                        let status = status?;
                        if !status.success() {
                            let log = std::fs::read_to_string(self.dir.path().join(format!("{role}.log")))
                                .unwrap_or_default();
                            bail!("microbatch {role} exited with {status}:\n{log}");
                        }
                    }
                    Err(_) => {
                        child.kill().await?;
                        bail!("microbatch {role} did not stop within 60 s of SIGTERM");
                    }
                }
            }
            self.children.clear();
            Ok(peaks)
        })
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(self.dir.path())
    }
}
