//! Configuration: one TOML file, `MICROBATCH_*` environment overrides, and defaults that run the
//! whole pipeline embedded with no file at all.
//!
//! Any setting can be overridden as `MICROBATCH_<SECTION>__<KEY>` (double underscore between
//! levels), e.g. `MICROBATCH_PRODUCER__LISTEN=0.0.0.0:8080`. The deployment's names
//! (docs/DEPLOY.md) are accepted as aliases: `MICROBATCH_STREAM_NAME`, `MICROBATCH_BUCKET`,
//! `MICROBATCH_QUEUE_URL`, `MICROBATCH_DLQ_URL`, `MICROBATCH_LEASE_TABLE`,
//! `MICROBATCH_WAREHOUSE_URL`, `MICROBATCH_REDSHIFT_IAM_ROLE`, `MICROBATCH_LOG_FORMAT`,
//! `MICROBATCH_METRICS`, `MICROBATCH_WEBHOOK_SECRETS`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use microbatch_core::batch::Compression;
use serde::{Deserialize, Serialize};

mod ports;

pub use ports::{
    DynamoDbConfig, KinesisConfig, LeasesConfig, LocalLeasesConfig, LocalQueueConfig, LocalStoreConfig,
    LocalStreamConfig, QueueConfig, S3Config, SqsConfig, StoreConfig, StreamConfig,
};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded stack keeps its files (stream, queue, objects, leases, warehouse).
    pub data_dir: PathBuf,
    pub catalog: CatalogConfig,
    pub producer: ProducerConfig,
    pub stream: StreamConfig,
    pub store: StoreConfig,
    pub queue: QueueConfig,
    pub warehouse: WarehouseConfig,
    pub leases: LeasesConfig,
    pub consumer: ConsumerConfig,
    pub importer: ImporterConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("microbatch-data"),
            catalog: CatalogConfig::default(),
            producer: ProducerConfig::default(),
            stream: StreamConfig::default(),
            store: StoreConfig::default(),
            queue: QueueConfig::default(),
            warehouse: WarehouseConfig::default(),
            leases: LeasesConfig::default(),
            consumer: ConsumerConfig::default(),
            importer: ImporterConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// A directory of catalog TOML files.
    pub dir: PathBuf,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            dir: PathBuf::from("examples/catalog"),
        }
    }
}

/// The HTTP producer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    pub listen: SocketAddr,
    /// Bearer tokens accepted on `/v1/events`; empty means no authentication (local use only).
    pub tokens: Vec<String>,
    pub max_body_bytes: usize,
    /// How long a request's body may take to arrive once its headers have: a client that
    /// trickles it (or stops) gets 408 instead of holding a connection and a task forever.
    pub body_timeout_ms: u64,
    /// How long a connection may take to send a request's headers (a new one, its first byte)
    /// before it is closed.
    pub header_timeout_ms: u64,
    pub max_events_per_request: usize,
    pub max_json_depth: usize,
    /// Events accepted but not yet durable before new requests get 503.
    pub max_pending_events: usize,
    /// How long events may wait to fill an aggregate. Unset: the stream kind's default
    /// ([`StreamConfig::producer_defaults`]: the KPL's 100 ms on Kinesis, 20 ms locally).
    pub linger_ms: Option<u64>,
    /// Largest aggregate record, in bytes (at most 1 MiB, a Kinesis record). Unset: the stream
    /// kind's default (the KPL's 50 KiB on Kinesis, 1 MiB locally).
    pub aggregate_bytes: Option<usize>,
    /// Seconds a 503 asks the client to wait.
    pub retry_after_secs: u64,
    /// How long the stream may fail this producer's calls (puts, shard listings) before
    /// `GET /readyz` answers 503, so that the load balancer sends the traffic elsewhere.
    pub stream_failure_grace_ms: u64,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            tokens: Vec::new(),
            max_body_bytes: 1 << 20,
            body_timeout_ms: 30_000,
            header_timeout_ms: 10_000,
            max_events_per_request: 1000,
            max_json_depth: 32,
            max_pending_events: 200_000,
            linger_ms: None,
            aggregate_bytes: None,
            retry_after_secs: 1,
            stream_failure_grace_ms: 5_000,
            webhooks: Vec::new(),
        }
    }
}

/// The signature scheme of a webhook source.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub and others).
    HubSignature,
    /// `Stripe-Signature: t=<unix ts>,v1=<hex HMAC-SHA256 of "t.body">` with a replay window.
    TimestampedSignature,
}

/// One webhook source, e.g. `POST /v1/webhooks/github`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `{source}` in the path.
    pub source: String,
    pub scheme: WebhookScheme,
    /// Several secrets are accepted at once, so a secret can be rotated without downtime.
    pub secrets: Vec<String>,
    /// The header carrying the signature (default per scheme).
    #[serde(default)]
    pub signature_header: Option<String>,
    /// Where the event type is: a header name, or a JSON pointer into the body.
    #[serde(default)]
    pub type_header: Option<String>,
    #[serde(default)]
    pub type_pointer: Option<String>,
    /// Where the delivery id (the event id, so redeliveries dedupe) is: a header or a pointer.
    #[serde(default)]
    pub id_header: Option<String>,
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// Prepended to the provider's event type to form the catalog's event type.
    #[serde(default)]
    pub type_prefix: String,
    /// How old a timestamped signature may be.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
    /// The form field holding the JSON when a delivery comes form-encoded
    /// (`application/x-www-form-urlencoded`, as a code host sends `payload=<json>`); unset, such a
    /// delivery gets 415.
    #[serde(default)]
    pub form_field: Option<String>,
}

fn default_tolerance() -> u64 {
    300
}

impl WebhookConfig {
    /// A code host's webhook (`X-Hub-Signature-256`, `X-GitHub-Event`, `X-GitHub-Delivery`).
    pub fn hub(source: &str, secrets: Vec<String>) -> Self {
        WebhookConfig {
            source: source.into(),
            scheme: WebhookScheme::HubSignature,
            secrets,
            signature_header: None,
            type_header: Some("X-GitHub-Event".into()),
            type_pointer: None,
            id_header: Some("X-GitHub-Delivery".into()),
            id_pointer: None,
            type_prefix: String::new(),
            tolerance_secs: default_tolerance(),
            form_field: Some("payload".into()),
        }
    }

    /// A payments provider's webhook (`Stripe-Signature`, type at `/type`, id at `/id`).
    pub fn timestamped(source: &str, secrets: Vec<String>) -> Self {
        WebhookConfig {
            source: source.into(),
            scheme: WebhookScheme::TimestampedSignature,
            secrets,
            signature_header: None,
            type_header: None,
            type_pointer: Some("/type".into()),
            id_header: None,
            id_pointer: Some("/id".into()),
            type_prefix: String::new(),
            tolerance_secs: default_tolerance(),
            form_field: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WarehouseConfig {
    /// `sqlite://path` (default: a file in the data directory), `postgres://…`, or
    /// `redshift://user:pass@host:5439/db` (with the AWS adapters).
    pub url: String,
    /// PostgreSQL schema for the tables and the manifest.
    pub schema: String,
    /// The IAM role Redshift's COPY assumes to read the bucket.
    pub iam_role: String,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig {
            url: String::new(),
            schema: "public".into(),
            iam_role: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// This worker's lease owner name. Empty: the one kept in the data directory
    /// (`worker-<n>.id`, one per process running on it), so a restarted process takes its own
    /// leases back at once instead of waiting the failover time.
    pub worker_id: String,
    pub flush_interval_ms: u64,
    pub max_batch_rows: usize,
    pub max_batch_bytes: usize,
    /// Memory for all buffers together.
    pub buffer_budget_bytes: usize,
    /// How batch objects are compressed: `none`, `gzip` or `zstd`.
    pub compression: Compression,
    pub read_limit: usize,
    pub idle_poll_ms: u64,
    /// Reads of one shard a second, at most. Kinesis allows 5 for all its readers together, and
    /// a worker whose lease was just taken reads on until its next lease sync, so the default
    /// leaves one a second for that overlap.
    pub read_calls_per_sec: f64,
    /// Bytes read from one shard a second, at most (Kinesis allows 2 MiB).
    pub read_bytes_per_sec: u64,
    pub max_inflight_writes: usize,
    /// How often leases are renewed and balanced; well below `failover_ms`.
    pub lease_sync_ms: u64,
    /// How often the stream's shards are listed (resharding).
    pub shard_sync_ms: u64,
    /// A lease not renewed for this long is taken by another worker.
    pub failover_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            worker_id: String::new(),
            flush_interval_ms: 1000,
            max_batch_rows: 500_000,
            max_batch_bytes: 16 << 20,
            buffer_budget_bytes: 128 << 20,
            compression: Compression::None,
            read_limit: 10_000,
            idle_poll_ms: 100,
            read_calls_per_sec: 4.0,
            read_bytes_per_sec: 2 << 20,
            max_inflight_writes: 32,
            lease_sync_ms: 3_000,
            shard_sync_ms: 30_000,
            failover_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImporterConfig {
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// How long a receive waits for a first message. Unset: the queue kind's default
    /// ([`QueueConfig::default_receive_wait_ms`]: SQS's 20 s long poll, 1 s locally).
    pub receive_wait_ms: Option<u64>,
    /// Loads in flight at once (receive-and-load loops); keep it at or below the warehouse's
    /// connection pool.
    pub concurrency: usize,
    /// Messages one load cycle takes at most: the first receive waits, further receives take
    /// what queued up meanwhile. Unset: 100 for Redshift (every COPY and commit has a fixed cost,
    /// docs/AWS.md), one receive (10) otherwise.
    pub cycle_max_messages: Option<usize>,
    /// Batches of one cycle share a warehouse transaction up to this many bytes of CSV.
    pub load_group_bytes: usize,
    /// Rows of one batch the warehouse may refuse (each kept in `rejected/rows/`) before the
    /// batch itself is dead-lettered.
    pub max_refused_rows: usize,
}

impl Default for ImporterConfig {
    fn default() -> Self {
        ImporterConfig {
            max_attempts: 8,
            backoff_base_ms: 500,
            backoff_cap_ms: 300_000,
            receive_wait_ms: None,
            cycle_max_messages: None,
            concurrency: 4,
            load_group_bytes: 8 << 20,
            max_refused_rows: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricsFormat {
    /// `GET /metrics` only.
    Prometheus,
    /// Also CloudWatch Embedded Metric Format lines in the logs.
    Emf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub metrics: MetricsFormat,
    /// Where `consume` and `import` serve `GET /metrics` (they have no HTTP port otherwise; the
    /// producer serves it on its own). Unset: no listener.
    pub metrics_listen: Option<SocketAddr>,
    /// `RUST_LOG`-style filter.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            metrics: MetricsFormat::Prometheus,
            metrics_listen: None,
            filter: "info".into(),
        }
    }
}

/// The deployment's variable names and the settings they stand for.
const ALIASES: &[(&str, &str)] = &[
    ("STREAM_NAME", "stream.name"),
    ("BUCKET", "store.bucket"),
    ("QUEUE_URL", "queue.url"),
    ("DLQ_URL", "queue.dlq_url"),
    ("WAREHOUSE_URL", "warehouse.url"),
    ("LEASE_TABLE", "leases.table"),
    ("REDSHIFT_IAM_ROLE", "warehouse.iam_role"),
    ("LOG_FORMAT", "log.format"),
    ("METRICS", "log.metrics"),
];

/// The environment's settings: `MICROBATCH_` (in any case) before the setting's name.
const PREFIX: &str = "MICROBATCH_";

/// One `MICROBATCH_*` variable as a figment layer, named in errors by the variable itself. Its
/// value is read as figment reads the environment: `4` a number, `true` a boolean, `[…]` an
/// array, anything else a string.
struct EnvVar<'a> {
    name: &'a str,
    path: String,
    value: &'a str,
}

impl figment::Provider for EnvVar<'_> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("environment variable MICROBATCH_{}", self.name))
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        // figment's value parser recurses once per bracket: a deep enough value overflows the
        // stack (the fuzzer found it at a few thousand), so depth is refused before parsing.
        if nesting(self.value) > MAX_ENV_NESTING {
            return Err(figment::Error::from(format!(
                "the value nests deeper than {MAX_ENV_NESTING} levels of [ ] and {{ }}"
            )));
        }
        let value: figment::value::Value = ascii_in_quotes(self.value).parse().expect("infallible");
        let dict = figment::util::nest(&self.path, value)
            .into_dict()
            .expect("a non-empty path nests into a dict");
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// Deeper than any setting's shape (a list of tables of lists).
const MAX_ENV_NESTING: usize = 16;

/// The deepest bracket nesting of `value` outside its quoted strings.
fn nesting(value: &str) -> usize {
    let (mut depth, mut deepest, mut quoted, mut escaped) = (0usize, 0, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '[' | '{' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `value` with every non-ASCII character inside its quoted strings written as a `\U` escape.
/// figment 0.10's unescaping takes a character's index for its byte offset: on a quoted string
/// with a non-ASCII character before a backslash it panicked, or silently dropped characters
/// (the fuzzer found both); in pure ASCII the two offsets agree, and the escape reads back as
/// the same character.
fn ascii_in_quotes(value: &str) -> std::borrow::Cow<'_, str> {
    if value.is_ascii() {
        return value.into();
    }
    let (mut out, mut quoted, mut escaped) = (String::with_capacity(value.len() + 16), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                out.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                out.push(c);
            }
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            c if quoted && !c.is_ascii() => out.push_str(&format!("\\U{:08X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.into()
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Defaults, then the file (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let vars = std::env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()));
        Self::load_with(file, vars)
    }

    /// [`Config::load`] with the environment given as `vars` instead of read from the process:
    /// the seam tests and the fuzzer use.
    pub fn load_with(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::defaults_but_ports()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!("{} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let prefix = k.get(..PREFIX.len())?;
                prefix
                    .eq_ignore_ascii_case(PREFIX)
                    .then(|| (k[PREFIX.len()..].trim().to_owned(), v))
            })
            .collect();
        // Only `SECTION__KEY` names (and `DATA_DIR`) are settings, then the deployment's
        // aliases over them: other MICROBATCH_* variables, such as the test suite's, are not.
        let settings = vars.iter().filter_map(|(k, v)| {
            let path = if k.eq_ignore_ascii_case("data_dir") {
                "data_dir".to_owned()
            } else if k.contains("__") {
                k.to_ascii_lowercase().replace("__", ".")
            } else {
                return None;
            };
            Some((k, path, v))
        });
        let aliases = vars.iter().filter_map(|(k, v)| {
            let (_, path) = ALIASES.iter().find(|(alias, _)| k.eq_ignore_ascii_case(alias))?;
            Some((k, (*path).to_owned(), v))
        });
        for (name, path, value) in settings.chain(aliases).collect::<Vec<_>>() {
            if path.split('.').any(str::is_empty) {
                return Err(ConfigError(format!(
                    "MICROBATCH_{name} names no setting (an empty part between its `__`)"
                )));
            }
            figment = figment.merge(EnvVar { name, path, value });
        }
        let secrets = vars.iter().find(|(k, _)| k == "WEBHOOK_SECRETS").map(|(_, v)| v);
        let mut config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        if let Some(secrets) = secrets {
            config.apply_webhook_secrets(secrets)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The defaults as figment's first layer, with only the `kind` of each port section: the
    /// sections are tagged by `kind`, and the local kind's other defaults merged under
    /// `kind = "kinesis"` would be settings Kinesis does not take. A setting given without a
    /// kind (`MICROBATCH_STREAM__SHARDS=4`) is the local kind's; the rest of each section gets
    /// its kind's defaults when extracted.
    fn defaults_but_ports() -> figment::value::Dict {
        let value = figment::value::Value::serialize(Config::default()).expect("the defaults serialize");
        let mut dict = value.into_dict().expect("the defaults are a table");
        for port in ["stream", "store", "queue", "leases"] {
            let mut section = figment::value::Dict::new();
            section.insert("kind".into(), "local".into());
            dict.insert(port.into(), section.into());
        }
        dict
    }

    /// `MICROBATCH_WEBHOOK_SECRETS`: a JSON object `{"source": ["secret", …]}` (from a secrets
    /// manager), replacing the secrets of the named sources.
    fn apply_webhook_secrets(&mut self, json: &str) -> Result<(), ConfigError> {
        let map: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(json).map_err(|e| {
                ConfigError(format!(
                    "MICROBATCH_WEBHOOK_SECRETS must be a JSON object of source → secrets: {e}"
                ))
            })?;
        for (source, secrets) in map {
            match self.producer.webhooks.iter_mut().find(|w| w.source == source) {
                Some(w) => w.secrets = secrets,
                None => {
                    return Err(ConfigError(format!(
                        "MICROBATCH_WEBHOOK_SECRETS names unknown webhook source {source:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for w in &self.producer.webhooks {
            if w.secrets.is_empty() || w.secrets.iter().any(String::is_empty) {
                return Err(ConfigError(format!(
                    "webhook source {:?} needs at least one non-empty secret",
                    w.source
                )));
            }
            if w.type_header.is_none() && w.type_pointer.is_none() {
                return Err(ConfigError(format!(
                    "webhook source {:?} needs type_header or type_pointer",
                    w.source
                )));
            }
        }
        if self.consumer.buffer_budget_bytes < self.consumer.max_batch_bytes {
            return Err(ConfigError(
                "consumer.buffer_budget_bytes must be at least consumer.max_batch_bytes".into(),
            ));
        }
        self.validate_ports()?;
        if let Some(bytes) = self.producer.aggregate_bytes
            && !(1024..=microbatch_core::kpl::KINESIS_MAX_RECORD_BYTES).contains(&bytes)
        {
            return Err(ConfigError(format!(
                "producer.aggregate_bytes ({bytes}) must be between 1024 and 1048576 (a Kinesis record)"
            )));
        }
        let c = &self.consumer;
        if c.lease_sync_ms == 0 || c.lease_sync_ms * 2 > c.failover_ms {
            return Err(ConfigError(format!(
                "consumer.lease_sync_ms ({}) must be above 0 and at most half of consumer.failover_ms ({}): \
                 a lease must be renewed at least twice before another worker may take it",
                c.lease_sync_ms, c.failover_ms
            )));
        }
        if !(c.read_calls_per_sec >= 0.0 && c.read_calls_per_sec.is_finite()) {
            return Err(ConfigError(
                "consumer.read_calls_per_sec must be a number of at least 0 (0: no limit)".into(),
            ));
        }
        Ok(())
    }

    /// Each port's kind has what it cannot run without.
    fn validate_ports(&self) -> Result<(), ConfigError> {
        let missing = |setting: &str, alias: &str, kind: &str| {
            ConfigError(format!(
                "{setting} is needed with kind = \"{kind}\" (or set {alias})"
            ))
        };
        match &self.stream {
            StreamConfig::Local(c) if c.shards == 0 => {
                return Err(ConfigError("stream.shards must be at least 1".into()));
            }
            StreamConfig::Kinesis(c) if c.name.is_empty() => {
                return Err(missing("stream.name", "MICROBATCH_STREAM_NAME", "kinesis"));
            }
            _ => {}
        }
        if let StoreConfig::S3(c) = &self.store
            && c.bucket.is_empty()
        {
            return Err(missing("store.bucket", "MICROBATCH_BUCKET", "s3"));
        }
        if let QueueConfig::Sqs(c) = &self.queue {
            if c.url.is_empty() {
                return Err(missing("queue.url", "MICROBATCH_QUEUE_URL", "sqs"));
            }
            if c.dlq_url.is_empty() {
                return Err(missing("queue.dlq_url", "MICROBATCH_DLQ_URL", "sqs"));
            }
        }
        if let LeasesConfig::Dynamodb(c) = &self.leases
            && c.table.is_empty()
        {
            return Err(missing("leases.table", "MICROBATCH_LEASE_TABLE", "dynamodb"));
        }
        Ok(())
    }

    /// The producer's linger and aggregate size: as configured, else the stream kind's.
    pub fn producer_aggregation(&self) -> (Duration, usize) {
        let (linger, bytes) = self.stream.producer_defaults();
        (
            Duration::from_millis(self.producer.linger_ms.unwrap_or(linger)),
            self.producer.aggregate_bytes.unwrap_or(bytes),
        )
    }

    /// How long the importer's receive waits: as configured, else the queue kind's.
    pub fn receive_wait(&self) -> Duration {
        Duration::from_millis(
            self.importer
                .receive_wait_ms
                .unwrap_or_else(|| self.queue.default_receive_wait_ms()),
        )
    }

    /// [`ImporterConfig::cycle_max_messages`], or its default for the warehouse.
    pub fn cycle_max_messages(&self) -> usize {
        let redshift = crate::warehouse::redshift::url::RedshiftUrl::parse(&self.warehouse.url).is_some();
        self.importer
            .cycle_max_messages
            .unwrap_or(if redshift { 100 } else { 10 })
            .max(1)
    }

    /// The warehouse URL, defaulting to a SQLite file in the data directory.
    pub fn warehouse_url(&self) -> String {
        if self.warehouse.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("warehouse.db").display())
        } else {
            self.warehouse.url.clone()
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.consumer.flush_interval_ms)
    }
}

#[cfg(test)]
// figment's Jail returns its large error type from the test closures.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_need_no_file() {
        Jail::expect_with(|_| {
            let c = Config::load(None).unwrap();
            assert_eq!(c, Config::default());
            assert_eq!(c.warehouse_url(), "sqlite://microbatch-data/warehouse.db");
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_then_aliases() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "mb.toml",
                r#"
                data_dir = "/var/lib/mb"
                [producer]
                listen = "0.0.0.0:9000"
                tokens = ["t1"]
                [[producer.webhooks]]
                source = "github"
                scheme = "hub_signature"
                secrets = ["s1"]
                type_header = "X-GitHub-Event"
                "#,
            )?;
            jail.set_env("MICROBATCH_PRODUCER__LISTEN", "127.0.0.1:7000");
            jail.set_env("MICROBATCH_STREAM_NAME", "events");
            jail.set_env("MICROBATCH_LOG_FORMAT", "json");
            jail.set_env("MICROBATCH_TEST_DATABASE_URL", "postgres://ignored");
            jail.set_env("MICROBATCH_WEBHOOK_SECRETS", r#"{"github": ["new", "old"]}"#);
            jail.set_env("MICROBATCH_PRODUCER__TOKENS", r#"["tok-a", "tok-b"]"#);
            jail.set_env("MICROBATCH_LEASE_TABLE", "leases");
            jail.set_env("MICROBATCH_LEASES__KIND", "dynamodb");
            jail.set_env("MICROBATCH_STREAM__KIND", "kinesis");
            let c = Config::load(Some(Path::new("mb.toml"))).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/var/lib/mb"));
            assert_eq!(c.producer.listen.to_string(), "127.0.0.1:7000");
            assert_eq!(
                c.producer.tokens,
                ["tok-a", "tok-b"],
                "a JSON array from a secret"
            );
            assert_eq!(
                c.leases,
                LeasesConfig::Dynamodb(DynamoDbConfig {
                    table: "leases".into()
                })
            );
            assert_eq!(
                c.stream,
                StreamConfig::Kinesis(KinesisConfig {
                    name: "events".into(),
                    ..KinesisConfig::default()
                })
            );
            assert!(matches!(c.log.format, LogFormat::Json));
            assert_eq!(c.producer.webhooks[0].secrets, ["new", "old"]);
            Ok(())
        });
    }

    #[test]
    fn consumer_settings_are_typed_and_checked() {
        Jail::expect_with(|jail| {
            jail.set_env("MICROBATCH_CONSUMER__COMPRESSION", "zstd");
            jail.set_env("MICROBATCH_CONSUMER__FAILOVER_MS", "20000");
            let c = Config::load(None).unwrap();
            assert_eq!(c.consumer.compression, Compression::Zstd);
            assert_eq!(c.consumer.failover_ms, 20_000);
            jail.set_env("MICROBATCH_CONSUMER__COMPRESSION", "lz4");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("lz4") && err.to_lowercase().contains("compression"),
                "{err}"
            );
            jail.set_env("MICROBATCH_CONSUMER__COMPRESSION", "gzip");
            jail.set_env("MICROBATCH_CONSUMER__LEASE_SYNC_MS", "15000");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("at most half of consumer.failover_ms"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn each_port_kind_takes_its_own_settings_with_its_defaults() {
        Jail::expect_with(|jail| {
            // The deployment's variables for the importer (infra/modules/services/main.tf).
            jail.set_env("MICROBATCH_STORE__KIND", "s3");
            jail.set_env("MICROBATCH_BUCKET", "mb-loads");
            jail.set_env("MICROBATCH_QUEUE__KIND", "sqs");
            jail.set_env("MICROBATCH_QUEUE_URL", "http://127.0.0.1:5000/123456789012/loads");
            jail.set_env(
                "MICROBATCH_DLQ_URL",
                "http://127.0.0.1:5000/123456789012/loads-dlq",
            );
            jail.set_env("MICROBATCH_QUEUE__VISIBILITY_SECS", "300");
            let c = Config::load(None).unwrap();
            assert_eq!(
                c.store,
                StoreConfig::S3(S3Config {
                    bucket: "mb-loads".into(),
                    path_style: false
                })
            );
            let QueueConfig::Sqs(q) = &c.queue else {
                panic!("{:?}", c.queue)
            };
            assert_eq!((q.visibility_secs, q.max_receives), (300, 10));
            assert_eq!(c.receive_wait(), Duration::from_secs(20), "SQS long-polls");
            assert_eq!(c.stream, StreamConfig::default(), "untouched sections stay local");
            assert_eq!(c.producer_aggregation(), (Duration::from_millis(20), 1 << 20));

            // A setting of another kind is named, not ignored.
            jail.set_env("MICROBATCH_QUEUE__KIND", "local");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("url"), "{err}");
            jail.set_env("MICROBATCH_QUEUE__KIND", "rabbitmq");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("rabbitmq") && err.contains("sqs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_port_setting_without_a_kind_is_the_local_kinds() {
        Jail::expect_with(|jail| {
            jail.set_env("MICROBATCH_QUEUE__VISIBILITY_SECS", "2");
            jail.set_env("MICROBATCH_STREAM__SHARDS", "4");
            let c = Config::load(None).unwrap();
            assert_eq!(
                c.queue,
                QueueConfig::Local(LocalQueueConfig {
                    visibility_secs: 2,
                    ..LocalQueueConfig::default()
                })
            );
            assert_eq!(
                c.stream,
                StreamConfig::Local(LocalStreamConfig {
                    shards: 4,
                    ..LocalStreamConfig::default()
                })
            );
            Ok(())
        });
    }

    #[test]
    fn an_aws_kind_without_its_resource_is_refused_at_start() {
        Jail::expect_with(|jail| {
            jail.set_env("MICROBATCH_STREAM__KIND", "kinesis");
            let err = Config::load(None).unwrap_err().to_string();
            assert_eq!(
                err,
                "configuration: stream.name is needed with kind = \"kinesis\" (or set MICROBATCH_STREAM_NAME)"
            );
            jail.set_env("MICROBATCH_STREAM_NAME", "events");
            let c = Config::load(None).unwrap();
            assert_eq!(
                c.producer_aggregation(),
                (Duration::from_millis(100), 50 * 1024),
                "the KPL's defaults on Kinesis"
            );
            jail.set_env("MICROBATCH_PRODUCER__LINGER_MS", "5");
            assert_eq!(
                Config::load(None).unwrap().producer_aggregation().0,
                Duration::from_millis(5)
            );
            jail.set_env("MICROBATCH_LEASES__KIND", "dynamodb");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("leases.table is needed"), "{err}");
            jail.set_env("MICROBATCH_LEASES__KIND", "local");
            jail.set_env("MICROBATCH_QUEUE__KIND", "sqs");
            jail.set_env("MICROBATCH_QUEUE_URL", "http://q");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("queue.dlq_url is needed"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn mistakes_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                "[producer]
listen = 5
",
            )?;
            let err = Config::load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(err.contains("listen"), "{err}");
            jail.create_file(
                "typo.toml",
                "[consumer]
flush_intervall_ms = 5
",
            )?;
            let err = Config::load(Some(Path::new("typo.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("flush_intervall_ms"), "{err}");
            let err = Config::load(Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert_eq!(err, "configuration: missing.toml does not exist");
            jail.set_env("MICROBATCH_WEBHOOK_SECRETS", r#"{"nope": ["x"]}"#);
            let err = Config::load(None).unwrap_err().to_string();
            assert_eq!(
                err,
                "configuration: MICROBATCH_WEBHOOK_SECRETS names unknown webhook source \"nope\""
            );
            Ok(())
        });
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    /// The environment can be given instead of read: what the process has set does not leak in.
    #[test]
    fn the_environment_can_be_given() {
        Jail::expect_with(|jail| {
            jail.set_env("MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS", "7");
            let given = vars(&[
                ("MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS", "9"),
                ("microbatch_stream__shards", "3"),
                ("MICROBATCH_LOG_FORMAT", "json"),
            ]);
            let c = Config::load_with(None, given).unwrap();
            assert_eq!(c.consumer.flush_interval_ms, 9);
            assert!(matches!(c.log.format, LogFormat::Json));
            assert_eq!(
                Config::load_with(None, []).unwrap().consumer.flush_interval_ms,
                1000
            );
            Ok(())
        });
    }

    /// A quoted value with a non-ASCII character before an escape reads back as written (figment
    /// alone lost the `o` here, and panicked on other spellings).
    #[test]
    fn quoted_values_with_escapes_and_non_ascii_read_back_as_written() {
        let c = Config::load_with(None, vars(&[("MICROBATCH_LOG__FILTER", r#""héllo\tworld""#)])).unwrap();
        assert_eq!(c.log.filter, "héllo\tworld");
        let c = Config::load_with(None, vars(&[("MICROBATCH_PRODUCER__TOKENS", r#"["é\n", "ü"]"#)])).unwrap();
        assert_eq!(c.producer.tokens, ["é\n", "ü"]);
    }

    /// Bad variables are refused naming the variable: a wrong type, an empty part of the
    /// name, and a value nested deep enough to have overflowed figment's parser's stack.
    #[test]
    fn bad_variables_are_named() {
        let err = |pairs: &[(&str, &str)]| Config::load_with(None, vars(pairs)).unwrap_err().to_string();
        let e = err(&[("MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS", "soon")]);
        assert!(
            e.contains("MICROBATCH_CONSUMER__FLUSH_INTERVAL_MS") && e.contains("flush_interval_ms"),
            "{e}"
        );
        let e = err(&[("MICROBATCH_CONSUMER____FLUSH", "1")]);
        assert!(e.contains("MICROBATCH_CONSUMER____FLUSH names no setting"), "{e}");
        let deep = "[".repeat(100_000);
        let e = err(&[("MICROBATCH_PRODUCER__TOKENS", &deep)]);
        assert!(
            e.contains("nests deeper than 16 levels") && e.contains("MICROBATCH_PRODUCER__TOKENS"),
            "{e}"
        );
    }
}
