//! What the loadtest runs against, behind [`Target`]: the `microbatch` binary as child
//! processes ([`Services`]), on the embedded stack with the SQLite or the PostgreSQL warehouse
//! ([`Embedded`]), or on the emulated AWS stack with PostgreSQL ([`EmulatedAws`]: moto, the
//! services as `infra/` runs them).

pub mod aws;

pub use aws::EmulatedAws;

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
    /// Where each process serves `GET /metrics`, for the AWS calls it made ([`crate::calls`]).
    fn metrics_addrs(&self) -> Vec<(String, SocketAddr)> {
        Vec::new()
    }
    /// The kill part's crash: SIGKILLs what the target's kill takes down, restarts what a
    /// scheduler would restart, and returns the roles killed.
    fn crash(&mut self) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async { bail!("this target has no separate workers to kill") })
    }
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
    warehouse: WarehouseKind,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    services: Services,
}

/// A free port on 127.0.0.1 (bound and released; the child binds it right after).
pub fn free_port() -> anyhow::Result<SocketAddr> {
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

/// CPU time (user + system) a live process has used, in seconds: `/proc/<pid>/stat`'s utime
/// and stime, in clock ticks of 1/100 s (USER_HZ, fixed by the kernel's ABI).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
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
        let services = Services::new(bin, dir.path().to_path_buf());
        Ok(Embedded {
            warehouse,
            dir,
            addr: free_port()?,
            services,
        })
    }
}

/// The `microbatch` processes of a target, one per role, each logging to `<role>.log` in the
/// target's directory; stopped in the order they started (the producer first, so everything
/// accepted drains downstream).
#[derive(Debug)]
pub struct Services {
    bin: PathBuf,
    logs: PathBuf,
    env: Vec<(String, String)>,
    children: Vec<(String, Child)>,
}

impl Services {
    pub fn new(bin: PathBuf, logs: PathBuf) -> Self {
        Services {
            bin,
            logs,
            env: Vec::new(),
            children: Vec::new(),
        }
    }

    /// The environment of every process started from now on.
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.env = env;
    }

    fn command(&self, sub: &str, more: &[(String, String)]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(sub)
            .envs(self.env.iter().chain(more).map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .stdin(Stdio::null());
        c
    }

    fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{role}.log"))).unwrap_or_default()
    }

    /// Runs `microbatch migrate` to its end: the warehouse tables exist before the first
    /// event, so the probe can read them.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let out = self.command("migrate", &[]).output().await?;
        if !out.status.success() {
            bail!(
                "microbatch migrate failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts `microbatch <sub>` as `role`, with `more` on top of the shared environment.
    pub fn spawn(&mut self, role: &str, sub: &str, more: &[(String, String)]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.logs.join(format!("{role}.log")))?;
        let child = self
            .command(sub, more)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} {sub}", self.bin.display()))?;
        self.children.push((role.to_owned(), child));
        Ok(())
    }

    /// Waits until the producer at `addr` answers `/readyz`, failing with its log if any
    /// process exits first.
    pub async fn wait_ready(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if readyz(addr).await {
                return Ok(());
            }
            let mut exited = None;
            for (role, child) in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    exited = Some((role.clone(), status));
                }
            }
            if let Some((role, status)) = exited {
                bail!("microbatch {role} exited with {status}:\n{}", self.log(&role));
            }
            if Instant::now() > deadline {
                bail!("the producer did not become ready on {addr} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn processes(&self) -> Vec<Proc> {
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

    /// SIGKILLs `role` (no drain, no goodbye: a crashed task) and forgets it.
    pub async fn kill(&mut self, role: &str) -> anyhow::Result<()> {
        let i = self
            .children
            .iter()
            .position(|(r, _)| r == role)
            .with_context(|| format!("no process {role}"))?;
        let (_, mut child) = self.children.remove(i);
        child.kill().await?;
        Ok(())
    }

    /// SIGTERM to each, in order, waiting for it to drain: each one's peak RSS in bytes.
    pub async fn stop(&mut self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut peaks = Vec::new();
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
                        let log = std::fs::read_to_string(self.logs.join(format!("{role}.log")));
                        bail!(
                            "microbatch {role} exited with {status}:\n{}",
                            log.unwrap_or_default()
                        );
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
    }
}

/// Drops `schema` (a run starts on empty tables; `migrate` makes them again).
pub async fn reset_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url}"))?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
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
                reset_schema(url, schema).await?;
            }
            self.services.set_env(env);
            self.services.migrate().await?;
            if s.split {
                self.services.spawn("produce", "produce", &[])?;
                if !s.producer_only {
                    self.start_rest().await?;
                }
            } else {
                self.services.spawn("run", "run", &[])?;
            }
            self.services.wait_ready(self.addr).await
        })
    }

    fn start_rest(&mut self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.services.spawn("consume", "consume", &[])?;
            self.services.spawn("import", "import", &[])
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
        self.services.processes()
    }

    fn stop(&mut self) -> BoxFuture<'_, anyhow::Result<Vec<(String, u64)>>> {
        Box::pin(self.services.stop())
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(self.dir.path())
    }
}
