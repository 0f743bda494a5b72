//! Redshift through the Redshift Data API (`aws-sdk-redshiftdata`): no VPC connectivity, no
//! database password in the task (IAM, or a Secrets Manager secret), which is why Serverless
//! users want it.
//!
//! A statement list is one `BatchExecuteStatement` (one transaction, in one session, so the
//! script's temporary tables live for exactly its statements), or one `ExecuteStatement` for a
//! single query. Then `DescribeStatement` is polled with backoff until the statement finishes,
//! fails or is aborted; past the timeout it is cancelled (`CancelStatement`). Each submission
//! carries a fresh `ClientToken`, so the SDK's own retries of a submission whose answer was lost
//! do not run the script twice. A failure names its sub-statement (`<id>:<n>`), and a result is
//! read with `GetStatementResult`, page by page.

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::types::{Field, StatusString};
use microbatch_core::import::{WarehouseError, WarehouseErrorKind};
use microbatch_core::ports::ErrorKind;
use sha2::{Digest, Sha256};

use super::transport::{Failure, Rows, Transport};
use crate::aws::{Aws, port_error};

/// `BatchExecuteStatement` takes at most this many statements.
pub const MAX_STATEMENTS: usize = 40;

/// Which Redshift the Data API reaches, and as whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataApiTarget {
    /// A provisioned cluster: as `db_user` (temporary credentials from IAM) or with a secret.
    Cluster {
        cluster_identifier: String,
        db_user: Option<String>,
        secret_arn: Option<String>,
    },
    /// A Serverless workgroup: as the IAM identity, or with a secret.
    Workgroup {
        workgroup_name: String,
        secret_arn: Option<String>,
    },
}

/// How the Data API transport waits.
#[derive(Clone, Debug)]
pub struct DataApiOptions {
    pub database: String,
    pub target: DataApiTarget,
    /// First and longest wait between two `DescribeStatement` calls.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// How long a statement may run before it is cancelled.
    pub timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct DataApiTransport {
    client: Client,
    options: DataApiOptions,
}

impl DataApiTransport {
    pub fn new(aws: &Aws, options: DataApiOptions) -> Self {
        DataApiTransport {
            client: aws.redshift_data(),
            options,
        }
    }

    /// A token no earlier submission used: the statements, the time and the process.
    fn client_token(statements: &[String]) -> String {
        let mut hasher = Sha256::new();
        for s in statements {
            hasher.update(s.as_bytes());
            hasher.update([0]);
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        hasher.update(now.as_nanos().to_le_bytes());
        hasher.update(std::process::id().to_le_bytes());
        hex::encode(&hasher.finalize()[..16])
    }

    async fn submit(&self, statements: &[String]) -> Result<String, WarehouseError> {
        let token = Self::client_token(statements);
        let o = &self.options;
        let (cluster, db_user, secret, workgroup) = match &o.target {
            DataApiTarget::Cluster {
                cluster_identifier,
                db_user,
                secret_arn,
            } => (
                Some(cluster_identifier.clone()),
                db_user.clone(),
                secret_arn.clone(),
                None,
            ),
            DataApiTarget::Workgroup {
                workgroup_name,
                secret_arn,
            } => (None, None, secret_arn.clone(), Some(workgroup_name.clone())),
        };
        if let [sql] = statements {
            let out = self
                .client
                .execute_statement()
                .sql(sql)
                .database(&o.database)
                .set_cluster_identifier(cluster)
                .set_db_user(db_user)
                .set_secret_arn(secret)
                .set_workgroup_name(workgroup)
                .client_token(token)
                .send()
                .await
                .map_err(|e| sdk_error(port_error("redshift-data", "ExecuteStatement", e)))?;
            return out.id.ok_or_else(|| missing("ExecuteStatement", "Id"));
        }
        let out = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(statements.to_vec()))
            .database(&o.database)
            .set_cluster_identifier(cluster)
            .set_db_user(db_user)
            .set_secret_arn(secret)
            .set_workgroup_name(workgroup)
            .client_token(token)
            .send()
            .await
            .map_err(|e| sdk_error(port_error("redshift-data", "BatchExecuteStatement", e)))?;
        out.id.ok_or_else(|| missing("BatchExecuteStatement", "Id"))
    }

    /// Polls until the statement ends; its final description.
    async fn wait(
        &self,
        id: &str,
    ) -> Result<aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput, Failure> {
        let started = Instant::now();
        let mut pause = self.options.poll_min;
        loop {
            let d = self
                .client
                .describe_statement()
                .id(id)
                .send()
                .await
                .map_err(|e| sdk_error(port_error("redshift-data", "DescribeStatement", e)))?;
            match d.status() {
                Some(StatusString::Finished) => return Ok(d),
                Some(StatusString::Failed | StatusString::Aborted) => return Err(statement_failure(&d)),
                _ => {}
            }
            if started.elapsed() >= self.options.timeout {
                let cancelled = self.client.cancel_statement().id(id).send().await;
                tracing::warn!(
                    id,
                    ?cancelled,
                    "cancelled a Redshift Data API statement past its timeout"
                );
                return Err(Failure::from(WarehouseError::new(
                    WarehouseErrorKind::Timeout,
                    format!(
                        "statement {id} did not finish within {:?} and was cancelled",
                        self.options.timeout
                    ),
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.poll_max);
        }
    }

    async fn result(&self, id: &str) -> Result<Rows, WarehouseError> {
        let mut rows = Rows::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(id)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| sdk_error(port_error("redshift-data", "GetStatementResult", e)))?;
            for record in page.records() {
                rows.push(record.iter().map(field_text).collect());
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                _ => return Ok(rows),
            }
        }
    }
}

impl Transport for DataApiTransport {
    async fn run(&self, statements: &[String], result: Option<usize>) -> Result<Rows, Failure> {
        if statements.len() > MAX_STATEMENTS {
            return Err(Failure::from(WarehouseError::new(
                WarehouseErrorKind::Other,
                format!(
                    "{} statements in one Data API transaction; it takes at most {MAX_STATEMENTS} \
                     (warehouse adapter bug: the group should have been split)",
                    statements.len()
                ),
            )));
        }
        let id = self.submit(statements).await?;
        let description = self.wait(&id).await?;
        let Some(index) = result else {
            return Ok(Rows::new());
        };
        let result_id = if statements.len() == 1 {
            id
        } else {
            description
                .sub_statements()
                .get(index)
                .map(|s| s.id().to_owned())
                .unwrap_or_else(|| format!("{id}:{}", index + 1))
        };
        Ok(self.result(&result_id).await?)
    }

    fn describe(&self) -> String {
        match &self.options.target {
            DataApiTarget::Cluster {
                cluster_identifier, ..
            } => format!(
                "the Redshift Data API to cluster {cluster_identifier}, database {}",
                self.options.database
            ),
            DataApiTarget::Workgroup { workgroup_name, .. } => format!(
                "the Redshift Data API to workgroup {workgroup_name}, database {}",
                self.options.database
            ),
        }
    }
}

/// A failed or aborted statement: its error, and which sub-statement raised it.
fn statement_failure(
    d: &aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput,
) -> Failure {
    let failed = d.sub_statements().iter().position(|s| {
        matches!(
            s.status(),
            Some(aws_sdk_redshiftdata::types::StatementStatusString::Failed)
        )
    });
    let message = failed
        .and_then(|i| d.sub_statements()[i].error())
        .or(d.error())
        .unwrap_or("the statement failed without an error message")
        .to_owned();
    let aborted = matches!(d.status(), Some(StatusString::Aborted));
    let error = if aborted {
        WarehouseError::new(
            WarehouseErrorKind::Timeout,
            format!("statement {} was aborted: {message}", d.id()),
        )
    } else {
        WarehouseError {
            sqlstate: sqlstate_in(&message),
            ..WarehouseError::new(WarehouseErrorKind::Database, message)
        }
    };
    Failure {
        statement: failed,
        error,
    }
}

/// The SQLSTATE some Data API errors carry (`… [SQLState 23505]` or `SQLSTATE: 40001`).
fn sqlstate_in(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("sqlstate")? + "sqlstate".len();
    let code: String = message[at..]
        .trim_start_matches([' ', ':', '='])
        .chars()
        .take(5)
        .collect();
    (code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric())).then_some(code)
}

fn field_text(field: &Field) -> Option<String> {
    match field {
        Field::IsNull(true) => None,
        Field::StringValue(s) => Some(s.clone()),
        Field::LongValue(n) => Some(n.to_string()),
        Field::DoubleValue(x) => Some(x.to_string()),
        Field::BooleanValue(b) => Some(b.to_string()),
        Field::BlobValue(b) => Some(hex::encode(b.as_ref())),
        _ => None,
    }
}

/// An SDK failure as a warehouse error: transient kinds are retried like a lost connection;
/// the others (denied, invalid, not found) are the configuration's fault.
fn sdk_error(e: microbatch_core::ports::PortError) -> WarehouseError {
    let kind = match e.kind {
        ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Expired | ErrorKind::Conflict => {
            WarehouseErrorKind::Connection
        }
        ErrorKind::NotFound | ErrorKind::Denied | ErrorKind::Invalid => WarehouseErrorKind::Database,
    };
    WarehouseError::new(kind, e.to_string())
}

fn missing(operation: &str, field: &str) -> WarehouseError {
    WarehouseError::new(
        WarehouseErrorKind::Protocol,
        format!("the Data API's {operation} answer has no {field}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_found_in_messages() {
        assert_eq!(
            sqlstate_in("ERROR: boom [SQLState 23505]").as_deref(),
            Some("23505")
        );
        assert_eq!(sqlstate_in("x SQLSTATE: 40001 y").as_deref(), Some("40001"));
        assert_eq!(sqlstate_in("ERROR: Load into table 'x' failed."), None);
    }

    #[test]
    fn client_tokens_differ_per_submission() {
        let s = vec!["SELECT 1".to_owned()];
        assert_ne!(
            DataApiTransport::client_token(&s),
            DataApiTransport::client_token(&s)
        );
        assert_eq!(DataApiTransport::client_token(&s).len(), 32);
    }
}
