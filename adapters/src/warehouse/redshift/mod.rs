//! Amazon Redshift: loads as pure SQL scripts ([`script`]) run over one of two transports
//! ([`transport`]: the PostgreSQL wire protocol, or the Redshift Data API), COPY reading the
//! objects from S3 itself ([`Warehouse::needs_body`] is false).
//!
//! Per group of batches the warehouse writes one COPY manifest per unit (table) to the batch
//! bucket, then runs the group's script as one transaction; the script's last query says which
//! batches it recorded (the others were loaded already) and how many rows each wrote. A failure
//! is named by the failing statement's role: a COPY's data error becomes a row error naming the
//! batch row, from `sys_load_error_detail` (so the importer's row isolation works here too); a
//! row count that does not match the metadata is permanent (`22P04`); the rest is classified as
//! usual (error 1023 and lock waits are transient).
//!
//! Migrations ([`ddl`]) run at importer start: the checked-in ones not yet recorded, then the
//! catalog's tables and new columns.

pub mod credentials;
pub mod data_api;
pub mod ddl;
pub mod script;
pub mod transport;
pub mod url;
pub mod wire;

#[cfg(test)]
mod emulator;
#[cfg(test)]
mod stand_in;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use microbatch_core::catalog::{Catalog, validate_ident};
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::Bytes;
use microbatch_core::ports::{LoadOutcome, LoadRequest, ObjectWriter, Warehouse};
use microbatch_core::time::Timestamp;

use self::ddl::Flavor;
use self::script::{Role, Script, ScriptOptions, literal, load_script};
use self::transport::{Failure, RedshiftTransport, Transport};
use super::{Existing, SchemaDifference, diff_schema};

/// A Redshift warehouse: a transport, the bucket writer for COPY manifests, and the script
/// options (schema, COPY role).
#[derive(Debug)]
pub struct RedshiftWarehouse<T = RedshiftTransport, W = crate::aws::S3Store> {
    transport: T,
    manifests: W,
    options: ScriptOptions,
    flavor: Flavor,
    /// At most this many statements per transaction (the Data API's limit); a larger group is
    /// loaded as consecutive transactions of whole batches.
    max_statements: Option<usize>,
}

/// How long a load may run before it is given up (and cancelled, or its connection dropped).
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl RedshiftWarehouse {
    /// Opens the warehouse `url` names ([`url::RedshiftUrl`]); COPY manifests go to `bucket`.
    pub async fn open(
        url: &url::RedshiftUrl,
        schema: &str,
        iam_role: &str,
        aws: &crate::aws::Aws,
        bucket: crate::aws::S3Store,
    ) -> Result<Self, WarehouseError> {
        match url {
            url::RedshiftUrl::Wire(url) => {
                let options = wire::WireOptions {
                    max_connections: 4,
                    timeout: STATEMENT_TIMEOUT,
                    refresh_every: None,
                };
                let transport = wire::WireTransport::connect(url, options, Some(aws)).await?;
                RedshiftWarehouse::new(RedshiftTransport::Wire(transport), bucket, schema, iam_role)
            }
            url::RedshiftUrl::DataApi { target, database } => {
                let transport = data_api::DataApiTransport::new(
                    aws,
                    data_api::DataApiOptions {
                        database: database.clone(),
                        target: target.clone(),
                        poll_min: std::time::Duration::from_millis(100),
                        poll_max: std::time::Duration::from_secs(2),
                        timeout: STATEMENT_TIMEOUT,
                    },
                );
                Ok(
                    RedshiftWarehouse::new(RedshiftTransport::DataApi(transport), bucket, schema, iam_role)?
                        .with_max_statements(data_api::MAX_STATEMENTS),
                )
            }
        }
    }

    /// Closes the wire transport's pool (the Data API holds no connection).
    pub async fn close(&self) {
        if let RedshiftTransport::Wire(w) = &self.transport {
            w.close().await;
        }
    }
}

impl<T: Transport, W: ObjectWriter> RedshiftWarehouse<T, W> {
    /// `iam_role` is the role Redshift assumes for COPY; COPY manifests go to `manifests`'
    /// bucket under `copy-manifests/`.
    pub fn new(transport: T, manifests: W, schema: &str, iam_role: &str) -> Result<Self, WarehouseError> {
        validate_ident(schema)
            .map_err(|e| WarehouseError::new(WarehouseErrorKind::Other, format!("warehouse schema: {e}")))?;
        if iam_role.is_empty() {
            return Err(WarehouseError::new(
                WarehouseErrorKind::Other,
                "no COPY role: set MICROBATCH_REDSHIFT_IAM_ROLE ([warehouse] iam_role) to the ARN of the \
                 role Redshift assumes to read the batch bucket",
            ));
        }
        literal(iam_role)?;
        Ok(RedshiftWarehouse {
            options: ScriptOptions {
                schema: schema.to_owned(),
                iam_role: iam_role.to_owned(),
                manifest_bucket: manifests.bucket().to_owned(),
                manifest_prefix: "copy-manifests/".to_owned(),
            },
            transport,
            manifests,
            flavor: Flavor::Redshift,
            max_statements: None,
        })
    }

    /// Caps the statements of one transaction (the Data API takes at most
    /// [`data_api::MAX_STATEMENTS`]).
    pub fn with_max_statements(mut self, max: usize) -> Self {
        self.max_statements = Some(max);
        self
    }

    /// DDL without Redshift's table attributes: what the tests run on PostgreSQL.
    #[cfg(test)]
    pub(crate) fn portable(mut self) -> Self {
        self.flavor = Flavor::Portable;
        self
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn schema(&self) -> &str {
        &self.options.schema
    }

    async fn existing(&self) -> Result<Existing, WarehouseError> {
        let rows = self
            .transport
            .query(&ddl::columns_query(&self.options.schema)?)
            .await?;
        let mut out = Existing::new();
        for row in rows {
            if let [Some(table), Some(column), Some(ty)] = &row[..] {
                out.entry(table.clone())
                    .or_default()
                    .push((column.clone(), ty.clone()));
            }
        }
        Ok(out)
    }

    /// Proves the warehouse end to end without touching a catalog table: writes a one-row object
    /// and its COPY manifest to the bucket, then in one transaction creates a scratch table,
    /// COPYs the object with the COPY role, checks the count and drops the table. What it took is
    /// the fixed cost of one COPY and one commit on this cluster (docs/AWS.md's freshness model).
    pub async fn dry_run(&self) -> Result<std::time::Duration, WarehouseError> {
        let stamp = now().as_micros();
        let object = format!("{}check/{stamp}.csv", self.options.manifest_prefix);
        let write = |key: String, body: Vec<u8>, content_type: &'static str| async move {
            self.manifests
                .put(&key, Bytes::from(body), content_type)
                .await
                .map_err(|e| WarehouseError::new(WarehouseErrorKind::Other, format!("writing {key}: {e}")))
        };
        write(object.clone(), b"ok\n".to_vec(), "text/csv").await?;
        let url = format!("s3://{}/{object}", self.options.manifest_bucket);
        let manifest = serde_json::json!({ "entries": [{ "url": url, "mandatory": true }] });
        let manifest_key = format!("{}check/{stamp}.manifest", self.options.manifest_prefix);
        write(
            manifest_key.clone(),
            manifest.to_string().into_bytes(),
            "application/json",
        )
        .await?;
        let statements = vec![
            "CREATE TEMP TABLE \"microbatch_check\" (\"v\" VARCHAR(16))".to_owned(),
            format!(
                "COPY \"microbatch_check\" (\"v\") FROM {} IAM_ROLE {} MANIFEST FORMAT AS CSV NULL AS 'NULL' \
                 TIMEFORMAT 'auto' COMPUPDATE OFF STATUPDATE OFF",
                literal(&format!("s3://{}/{manifest_key}", self.options.manifest_bucket))?,
                literal(&self.options.iam_role)?
            ),
            "SELECT 1 / (CASE WHEN pg_last_copy_count() = 1 THEN 1 ELSE 0 END)".to_owned(),
            "DROP TABLE \"microbatch_check\"".to_owned(),
        ];
        let started = std::time::Instant::now();
        self.transport.run(&statements, None).await.map_err(|f| {
            let what = match f.statement {
                Some(0) => "creating a temporary table (does the user have TEMP on the database?)",
                Some(1) => {
                    "COPY from the bucket (can the cluster assume the COPY role, and may it read the bucket?)"
                }
                Some(2) => "checking the rows copied",
                _ => "the dry run",
            };
            WarehouseError {
                message: format!("{what}: {}", f.error.message),
                ..f.error
            }
        })?;
        Ok(started.elapsed())
    }

    /// Each catalog table and column missing from the schema or of another type there.
    pub async fn schema_diff(&self, catalog: &Catalog) -> Result<Vec<SchemaDifference>, WarehouseError> {
        Ok(diff_schema(catalog, &self.existing().await?, ddl::reported_type))
    }

    /// Runs the script of `requests`; the outcome of each, in order.
    async fn run_group(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        let script = load_script(requests, &self.options, now())?;
        if let Some(max) = self.max_statements {
            let statements = self.statements(&script).len();
            if statements > max && requests.len() > 1 {
                let (a, b) = requests.split_at(requests.len() / 2);
                let mut out = Box::pin(self.run_group(a)).await?;
                out.extend(Box::pin(self.run_group(b)).await?);
                return Ok(out);
            }
        }
        for manifest in &script.manifests {
            self.manifests
                .put(
                    &manifest.location.key,
                    Bytes::from(manifest.body.clone()),
                    "application/json",
                )
                .await
                .map_err(|e| {
                    WarehouseError::new(
                        WarehouseErrorKind::Connection,
                        format!("writing the COPY manifest {}: {e}", manifest.location),
                    )
                })?;
        }
        let statements = self.statements(&script);
        let recorded_at = statements
            .iter()
            .position(|(_, s)| s.role == Role::Recorded)
            .expect("every script returns what it recorded");
        let sql: Vec<String> = statements.iter().map(|(_, s)| s.sql.clone()).collect();
        let rows = match self.transport.run(&sql, Some(recorded_at)).await {
            Ok(rows) => rows,
            Err(failure) => {
                let at = failure.statement.map(|i| statements[i].0);
                return Err(self.explain(&script, requests, at, failure).await);
            }
        };
        let recorded: HashMap<&str, u64> = rows
            .iter()
            .filter_map(|row| match &row[..] {
                [Some(key), Some(n)] => Some((key.as_str(), n.parse().unwrap_or(0))),
                _ => None,
            })
            .collect();
        Ok(requests
            .iter()
            .map(|r| match recorded.get(r.key()) {
                Some(&inserted) => LoadOutcome::Loaded { inserted },
                None => LoadOutcome::AlreadyLoaded,
            })
            .collect())
    }

    /// The statements this transport runs, with their index in the script: the Data API's
    /// session ends with its batch, so its temporary tables need no `DROP`.
    fn statements<'s>(&self, script: &'s Script) -> Vec<(usize, &'s script::Statement)> {
        let drops = self.max_statements.is_none();
        script
            .statements
            .iter()
            .enumerate()
            .filter(|(_, s)| drops || s.role != Role::Drop)
            .collect()
    }

    /// A failed script's error, by the role of the statement that failed.
    async fn explain(
        &self,
        script: &Script,
        requests: &[LoadRequest<'_>],
        at: Option<usize>,
        failure: Failure,
    ) -> WarehouseError {
        let Failure { error, .. } = failure;
        let Some(role) = at.map(|i| &script.statements[i].role) else {
            return error;
        };
        match role {
            Role::CountCheck { table, expected } => WarehouseError::with_sqlstate(
                "22P04",
                format!(
                    "row count mismatch: the COPY into {table:?} did not read the {expected} rows its \
                     batches' metadata says ({})",
                    error.message
                ),
            ),
            Role::Copy(copy) => {
                let detail = self.load_error(copy, requests).await;
                let mut e = WarehouseError {
                    message: format!("COPY into {:?}: {}", copy.table, error.message),
                    ..error
                };
                if let Some((file, line, reason)) = detail {
                    e.message.push_str(&format!(" ({file}, line {line}: {reason})"));
                    // The object is read whole, so its line is the batch row (1-based).
                    let batch = requests.iter().find(|r| r.location.to_string() == file);
                    if batch.is_some() && line > 0 {
                        e = e.at_row(line - 1);
                    }
                }
                e
            }
            other => WarehouseError {
                message: format!("{}: {}", describe(other), error.message),
                ..error
            },
        }
    }

    /// The latest load error of a COPY's objects that is not a row refused before (those the
    /// COPY was allowed to skip): file, line (1-based), reason.
    async fn load_error(
        &self,
        copy: &script::Copy,
        requests: &[LoadRequest<'_>],
    ) -> Option<(String, u64, String)> {
        let mut files = Vec::with_capacity(copy.objects.len());
        for o in &copy.objects {
            files.push(literal(&o.to_string()).ok()?);
        }
        let sql = format!(
            "SELECT TRIM(file_name), CAST(line_number AS VARCHAR(32)), TRIM(error_message) \
             FROM sys_load_error_detail WHERE TRIM(file_name) IN ({}) ORDER BY start_time DESC LIMIT 100",
            files.join(", ")
        );
        let refused_before = |file: &str, line: u64| {
            requests
                .iter()
                .any(|r| r.location.to_string() == file && r.skip_rows.contains(&line.saturating_sub(1)))
        };
        match self.transport.query(&sql).await {
            Ok(rows) => rows.into_iter().find_map(|row| match &row[..] {
                [Some(file), Some(line), reason] => {
                    let line: u64 = line.parse().ok()?;
                    (!refused_before(file, line))
                        .then(|| (file.clone(), line, reason.clone().unwrap_or_default()))
                }
                _ => None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not read sys_load_error_detail after a failed COPY");
                None
            }
        }
    }
}

fn describe(role: &Role) -> String {
    match role {
        Role::Lock => "locking the load manifest".into(),
        Role::Group | Role::Skip => "listing the group's batches".into(),
        Role::Stage { table } => format!("creating the staging table of {table:?}"),
        Role::Merge { table } => format!("merging the staged rows into {table:?}"),
        Role::Manifest => "writing the manifest rows".into(),
        Role::Recorded => "reading what the load recorded".into(),
        Role::Drop => "dropping a temporary table".into(),
        Role::Copy(copy) => format!("COPY into {:?}", copy.table),
        Role::CountCheck { table, .. } => format!("checking the rows copied into {table:?}"),
    }
}

fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Timestamp::from_micros(micros)
}

impl<T: Transport, W: ObjectWriter> Warehouse for RedshiftWarehouse<T, W> {
    fn needs_body(&self) -> bool {
        false
    }

    async fn migrate(&self, catalog: &Catalog) -> Result<(), WarehouseError> {
        let schema = &self.options.schema;
        for statement in ddl::bootstrap(schema) {
            self.transport
                .run(&[statement], None)
                .await
                .map_err(|f| f.error)?;
        }
        // Two importers starting together may plan the same column; the second fails and
        // plans again from what the first made.
        let mut attempt = 0;
        loop {
            let applied: Vec<i64> = self
                .transport
                .query(&ddl::applied_query(schema))
                .await?
                .into_iter()
                .filter_map(|row| row.first().cloned().flatten()?.parse().ok())
                .collect();
            let existing = self.existing().await?;
            let plan = ddl::migration_plan(
                schema,
                &applied,
                &existing,
                catalog,
                self.flavor,
                &now().to_string(),
            )?;
            match self.transport.run(&plan, None).await {
                Ok(_) => break,
                Err(f) if attempt < 2 => {
                    attempt += 1;
                    tracing::info!(error = %f.error, "migration raced another importer; planning again");
                }
                Err(f) => return Err(f.error),
            }
        }
        for difference in self.schema_diff(catalog).await? {
            tracing::warn!(%difference, schema = %schema, "the warehouse differs from the catalog");
        }
        Ok(())
    }

    async fn is_loaded(&self, key: &str, sha256: &str) -> Result<bool, WarehouseError> {
        let sql = format!(
            "SELECT 1 FROM {}.{} WHERE \"key\" = {} AND \"sha256\" = {} LIMIT 1",
            microbatch_core::catalog::Quoted(&self.options.schema),
            microbatch_core::catalog::Quoted(super::MANIFEST_TABLE),
            literal(key)?,
            literal(sha256)?
        );
        Ok(!self.transport.query(&sql).await?.is_empty())
    }

    async fn load_all(&self, requests: &[LoadRequest<'_>]) -> Result<Vec<LoadOutcome>, WarehouseError> {
        // A batch named twice loads once: its later mentions are already loaded.
        let mut first: HashMap<(&str, &str), usize> = HashMap::new();
        let mut unique = Vec::with_capacity(requests.len());
        let mut slot = Vec::with_capacity(requests.len());
        for r in requests {
            let id = (r.key(), r.metadata.sha256.as_str());
            match first.get(&id) {
                Some(_) => slot.push(None),
                None => {
                    first.insert(id, unique.len());
                    slot.push(Some(unique.len()));
                    unique.push(*r);
                }
            }
        }
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = self.run_group(&unique).await?;
        Ok(slot
            .into_iter()
            .map(|s| s.map_or(LoadOutcome::AlreadyLoaded, |i| outcomes[i]))
            .collect())
    }

    /// COPY reads whole objects from S3, so a range of rows cannot be tried on its own; Redshift
    /// names the row it refuses in `sys_load_error_detail` instead, which is what the importer's
    /// isolation uses.
    async fn probe(
        &self,
        request: LoadRequest<'_>,
        _rows: std::ops::Range<u64>,
    ) -> Result<(), WarehouseError> {
        Err(WarehouseError::new(
            WarehouseErrorKind::Database,
            format!(
                "{}: Redshift cannot load part of an object; the refused row is named by \
                 sys_load_error_detail or not at all",
                request.key()
            ),
        ))
    }
}
