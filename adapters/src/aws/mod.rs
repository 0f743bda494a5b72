//! The AWS adapters: the ports over the official AWS SDK for Rust, one shared `SdkConfig`.
//!
//! - [`KinesisStream`]: the stream (`PutRecords`; `ListShards`, `GetShardIterator`,
//!   `GetRecords`), both halves.
//! - [`S3Store`]: the object store (`PutObject`, `HeadObject`, `GetObject`); S3 itself announces
//!   each batch to SQS.
//! - [`SqsQueue`]: the load queue and its dead-letter queue.
//! - [`DynamoLeases`]: the lease table, with the KCL's schema and conditional writes.
//!
//! Everything about where and as whom comes from the SDK's environment — `AWS_REGION`,
//! `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>`, the default credential chain — so one
//! binary runs against AWS, LocalStack or moto unchanged (docs/AWS.md). Each service maps its
//! errors to [`ErrorKind`]s in one function, [`error_kind`] underneath all of them.

mod dynamodb;
mod kinesis;
pub mod provision;
pub mod requests;
mod s3;
mod sqs;

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use microbatch_core::ports::{ErrorKind, PortError};

use requests::CountRequests;

pub use dynamodb::{DynamoLeases, KCL_ATTRIBUTES, check_kcl_item, kcl_item, lease_of_item};
pub use kinesis::KinesisStream;
pub use s3::S3Store;
pub use sqs::{SqsDeadLetter, SqsQueue};

/// One attempt of any call, at most: above SQS's 20 s long poll, below a lease's failover.
/// Without it a request stuck on a half-open connection would hang its driver.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A service's client on the shared configuration, counting its requests ([`requests`]). Every
/// client the adapters use is made here, so no call goes uncounted.
macro_rules! client {
    ($aws:expr, $sdk:ident) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from(&$aws.sdk)
                .interceptor(CountRequests)
                .build(),
        )
    };
}

/// The SDK's shared configuration: region, credentials, endpoints, timeouts.
#[derive(Clone, Debug)]
pub struct Aws {
    sdk: SdkConfig,
}

impl Aws {
    /// Loads the SDK's configuration from the environment. Fails, naming the variable, when no
    /// region is set: every call would fail later with a less helpful message.
    pub async fn from_env() -> Result<Self, PortError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        if sdk.region().is_none() {
            return Err(PortError::invalid(
                "aws",
                "no AWS region: set AWS_REGION (or a profile's region)",
            ));
        }
        Ok(Aws { sdk })
    }

    /// A configuration made elsewhere (tests point one at the emulator without touching the
    /// process's environment).
    pub fn from_sdk(sdk: SdkConfig) -> Self {
        Aws { sdk }
    }

    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        client!(self, aws_sdk_kinesis)
    }

    /// `path_style`: `http://host/bucket/key` addressing, which emulators on `localhost` need.
    pub fn s3(&self, path_style: bool) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(path_style)
            .interceptor(CountRequests)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        client!(self, aws_sdk_sqs)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        client!(self, aws_sdk_dynamodb)
    }

    pub fn redshift_data(&self) -> aws_sdk_redshiftdata::Client {
        client!(self, aws_sdk_redshiftdata)
    }

    pub fn redshift(&self) -> aws_sdk_redshift::Client {
        client!(self, aws_sdk_redshift)
    }

    pub fn redshift_serverless(&self) -> aws_sdk_redshiftserverless::Client {
        client!(self, aws_sdk_redshiftserverless)
    }

    /// The region, for messages.
    pub fn region(&self) -> String {
        self.sdk.region().map(ToString::to_string).unwrap_or_default()
    }
}

/// What an AWS error code and HTTP status mean for the caller. Codes first (they are precise),
/// then the status class.
pub fn error_kind(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    if let Some(code) = code {
        let kind = match code {
            "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "TooManyRequestsException"
            | "SlowDown"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "KMSThrottlingException"
            | "TransactionInProgressException" => Some(ErrorKind::Throttled),
            "InternalFailure"
            | "InternalError"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "RequestTimeout"
            | "RequestTimeoutException" => Some(ErrorKind::Unavailable),
            "ExpiredIteratorException" => Some(ErrorKind::Expired),
            "ResourceNotFoundException"
            | "NoSuchKey"
            | "NoSuchBucket"
            | "NotFound"
            | "QueueDoesNotExist"
            | "AWS.SimpleQueueService.NonExistentQueue" => Some(ErrorKind::NotFound),
            "AccessDenied"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSInvalidStateException"
            | "KMSNotFoundException"
            | "KMS.DisabledException"
            | "KMS.KMSInvalidStateException" => Some(ErrorKind::Denied),
            "ConditionalCheckFailedException" | "TransactionConflictException" => Some(ErrorKind::Conflict),
            _ => None,
        };
        if let Some(kind) = kind {
            return kind;
        }
    }
    match status {
        Some(429) => ErrorKind::Throttled,
        Some(403 | 401) => ErrorKind::Denied,
        Some(404) => ErrorKind::NotFound,
        Some(s) if s >= 500 => ErrorKind::Unavailable,
        Some(_) => ErrorKind::Invalid,
        // No response at all: the service could not be reached.
        None => ErrorKind::Unavailable,
    }
}

/// An SDK error as a [`PortError`] of `service`, prefixed with what was being done.
pub(crate) fn port_error<E>(service: &'static str, doing: &str, error: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &error {
        SdkError::ServiceError(e) => error_kind(e.err().code(), Some(e.raw().status().as_u16())),
        SdkError::ResponseError(e) => error_kind(None, Some(e.raw().status().as_u16()).filter(|s| *s >= 400)),
        SdkError::ConstructionFailure(_) => ErrorKind::Invalid,
        // Timeouts and dispatch failures: no answer.
        _ => ErrorKind::Unavailable,
    };
    let detail = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(&error).to_string(),
    };
    PortError::new(service, kind, format!("{doing}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_before_statuses() {
        let k = |code, status| error_kind(code, status);
        assert_eq!(
            k(Some("ProvisionedThroughputExceededException"), Some(400)),
            ErrorKind::Throttled
        );
        assert_eq!(k(Some("SlowDown"), Some(503)), ErrorKind::Throttled);
        assert_eq!(k(Some("ExpiredIteratorException"), Some(400)), ErrorKind::Expired);
        assert_eq!(
            k(Some("ResourceNotFoundException"), Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(k(Some("AccessDenied"), Some(403)), ErrorKind::Denied);
        assert_eq!(k(Some("KMSDisabledException"), Some(400)), ErrorKind::Denied);
        assert_eq!(
            k(Some("ConditionalCheckFailedException"), Some(400)),
            ErrorKind::Conflict
        );
        assert_eq!(k(Some("ValidationException"), Some(400)), ErrorKind::Invalid);
        assert_eq!(k(Some("SomethingNew"), Some(500)), ErrorKind::Unavailable);
        assert_eq!(k(None, Some(429)), ErrorKind::Throttled);
        assert_eq!(k(None, Some(404)), ErrorKind::NotFound);
        assert_eq!(k(None, None), ErrorKind::Unavailable);
        for transient in ["InternalFailure", "ServiceUnavailable", "ThrottlingException"] {
            assert!(k(Some(transient), Some(500)).is_transient(), "{transient}");
        }
        for permanent in [
            "AccessDeniedException",
            "InvalidArgumentException",
            "ResourceNotFoundException",
        ] {
            assert!(!k(Some(permanent), Some(400)).is_transient(), "{permanent}");
        }
    }
}
