# The one place that names the metrics the microbatch binary emits as
# CloudWatch Embedded Metric Format (namespace Microbatch, one dimension
# Service). Every alarm and dashboard widget reads its Microbatch metrics from
# here, and scripts/check-infra checks each entry against docs/METRICS.md.
locals {
  namespace = "Microbatch"

  emf = {
    http_requests          = { name = "HttpRequests", service = "produce" }
    http_latency_millis    = { name = "HttpLatencyMillis", service = "produce" }
    http_5xx               = { name = "Http5xx", service = "produce" }
    events_accepted        = { name = "EventsAccepted", service = "produce" }
    events_rejected        = { name = "EventsRejected", service = "produce" }
    backpressure           = { name = "Backpressure", service = "produce" }
    records_read           = { name = "RecordsRead", service = "consume" }
    events_unmappable      = { name = "EventsUnmappable", service = "consume" }
    batches_flushed        = { name = "BatchesFlushed", service = "consume" }
    batch_rows             = { name = "BatchRows", service = "consume" }
    batch_bytes            = { name = "BatchBytes", service = "consume" }
    batch_age_millis       = { name = "BatchAgeMillis", service = "consume" }
    buffer_bytes           = { name = "BufferBytes", service = "consume" }
    millis_behind_latest   = { name = "MillisBehindLatest", service = "consume" }
    checkpoint_lag_records = { name = "CheckpointLagRecords", service = "consume" }
    object_writes_stalled  = { name = "ObjectWritesStalled", service = "consume" }
    loads_completed        = { name = "LoadsCompleted", service = "import" }
    rows_loaded            = { name = "RowsLoaded", service = "import" }
    load_duration_millis   = { name = "LoadDurationMillis", service = "import" }
    load_failures          = { name = "LoadFailures", service = "import" }
    loads_dead_lettered    = { name = "LoadsDeadLettered", service = "import" }
    freshness_millis       = { name = "FreshnessMillis", service = "import" }
  }

  # AWS's own metrics the alarms read besides the binary's.
  aws_metrics = {
    dlq_visible  = { namespace = "AWS/SQS", name = "ApproximateNumberOfMessagesVisible" }
    iterator_age = { namespace = "AWS/Kinesis", name = "GetRecords.IteratorAgeMilliseconds" }
    elb_5xx      = { namespace = "AWS/ApplicationELB", name = "HTTPCode_ELB_5XX_Count" }
  }
}
