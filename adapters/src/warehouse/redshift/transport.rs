//! How statements reach Redshift: over its PostgreSQL wire protocol ([`WireTransport`]) or
//! through the Redshift Data API ([`DataApiTransport`]). Both run a statement list as one
//! transaction and say which statement failed, so that the warehouse can name what went wrong
//! by the statement's [`Role`](super::script::Role).

use std::future::Future;

use microbatch_core::import::WarehouseError;

use super::data_api::DataApiTransport;
use super::wire::WireTransport;

/// Rows of a result, every value as text (`None` for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// A statement list that failed: the error, and the index of the statement that raised it when
/// the transport knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub statement: Option<usize>,
    pub error: WarehouseError,
}

impl From<WarehouseError> for Failure {
    fn from(error: WarehouseError) -> Self {
        Failure {
            statement: None,
            error,
        }
    }
}

/// Runs SQL on Redshift.
pub trait Transport: Send + Sync {
    /// Runs `statements` as one transaction, all or nothing, and returns the rows of statement
    /// `result` (empty when `None`).
    fn run(
        &self,
        statements: &[String],
        result: Option<usize>,
    ) -> impl Future<Output = Result<Rows, Failure>> + Send;

    /// One query, outside any load.
    fn query(&self, sql: &str) -> impl Future<Output = Result<Rows, WarehouseError>> + Send {
        async move {
            self.run(&[sql.to_owned()], Some(0))
                .await
                .map_err(|failure| failure.error)
        }
    }

    /// Which transport, for logs and `microbatch check`.
    fn describe(&self) -> String;
}

/// The transport the configuration chose.
#[derive(Debug)]
pub enum RedshiftTransport {
    Wire(WireTransport),
    DataApi(DataApiTransport),
}

impl Transport for RedshiftTransport {
    async fn run(&self, statements: &[String], result: Option<usize>) -> Result<Rows, Failure> {
        match self {
            RedshiftTransport::Wire(t) => t.run(statements, result).await,
            RedshiftTransport::DataApi(t) => t.run(statements, result).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            RedshiftTransport::Wire(t) => t.describe(),
            RedshiftTransport::DataApi(t) => t.describe(),
        }
    }
}
