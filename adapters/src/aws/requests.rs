//! Every AWS call counted, for what AWS bills and rate-limits: one increment of
//! `microbatch_aws_requests_total{service, operation, outcome}` per HTTP attempt, retries
//! included, from an SDK interceptor on every client [`Aws`](super::Aws) makes. The loadtest
//! turns these into calls per million events and the cost model (docs/COST.md).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// The metric's name (docs/METRICS.md).
pub const AWS_REQUESTS_TOTAL: &str = "microbatch_aws_requests_total";

/// Counts each attempt once it has an answer, or has failed without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "microbatch::CountRequests"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        let status = context.response().map(|r| r.status().as_u16());
        metrics::counter!(
            AWS_REQUESTS_TOTAL,
            "service" => service_label(service),
            "operation" => operation.to_owned(),
            "outcome" => outcome(status),
        )
        .increment(1);
        Ok(())
    }
}

/// The SDK's service name as a label: `Kinesis` → `kinesis`, `Redshift Data` → `redshiftdata`
/// (the crates' names, which is how docs/METRICS.md and the loadtest spell them).
pub fn service_label(service: &str) -> String {
    service
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The answer's class: `ok`, `throttled` (429; Kinesis and DynamoDB throttle with a 400 whose
/// code says so, which `microbatch_port_retries_total{kind}` tells apart), `client_error`,
/// `server_error`, or `no_response` (a timeout or a broken connection).
pub fn outcome(status: Option<u16>) -> &'static str {
    match status {
        None => "no_response",
        Some(s) if s < 400 => "ok",
        Some(429) => "throttled",
        Some(s) if s < 500 => "client_error",
        Some(_) => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::{outcome, service_label};

    #[test]
    fn services_are_named_as_their_crates() {
        assert_eq!(service_label("Kinesis"), "kinesis");
        assert_eq!(service_label("DynamoDB"), "dynamodb");
        assert_eq!(service_label("Redshift Data"), "redshiftdata");
    }

    #[test]
    fn answers_are_classed_by_status() {
        assert_eq!(outcome(Some(200)), "ok");
        assert_eq!(outcome(Some(204)), "ok");
        assert_eq!(outcome(Some(429)), "throttled");
        assert_eq!(outcome(Some(400)), "client_error");
        assert_eq!(outcome(Some(404)), "client_error");
        assert_eq!(outcome(Some(503)), "server_error");
        assert_eq!(outcome(None), "no_response");
    }
}
