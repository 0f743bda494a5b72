locals {
  # [namespace, name, "Service", service] for each EMF metric.
  m = { for k, v in local.emf : k => [local.namespace, v.name, "Service", v.service] }

  dlq_metric      = [local.aws_metrics.dlq_visible.namespace, local.aws_metrics.dlq_visible.name, "QueueName", var.dlq_name]
  iterator_metric = [local.aws_metrics.iterator_age.namespace, local.aws_metrics.iterator_age.name, "StreamName", var.stream_name]
  elb_5xx_metric  = [local.aws_metrics.elb_5xx.namespace, local.aws_metrics.elb_5xx.name, "LoadBalancer", var.alb_arn_suffix]

  alarm_arns = [
    aws_cloudwatch_metric_alarm.dlq_not_empty.arn,
    aws_cloudwatch_metric_alarm.consumer_lag.arn,
    aws_cloudwatch_metric_alarm.producer_5xx_rate.arn,
    aws_cloudwatch_metric_alarm.import_failures.arn,
    aws_cloudwatch_metric_alarm.freshness_p99.arn,
    aws_cloudwatch_metric_alarm.no_loads.arn,
  ]

  graph = {
    view    = "timeSeries"
    region  = local.region
    period  = 60
    stacked = false
  }

  widgets = [
    {
      type       = "alarm"
      x          = 0
      y          = 0
      width      = 24
      height     = 3
      properties = { title = "Alarms", alarms = local.alarm_arns }
    },
    {
      type   = "metric"
      x      = 0
      y      = 3
      width  = 12
      height = 6
      properties = merge(local.graph, {
        title = "Flow: events in, records read, rows loaded (per minute)"
        metrics = [
          concat(local.m.events_accepted, [{ stat = "Sum", label = "EventsAccepted (produce)" }]),
          concat(local.m.records_read, [{ stat = "Sum", label = "RecordsRead (consume)" }]),
          concat(local.m.rows_loaded, [{ stat = "Sum", label = "RowsLoaded (import)" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 12
      y      = 3
      width  = 12
      height = 6
      properties = merge(local.graph, {
        title = "Producer: requests, 5xx, rejected, back-pressure"
        metrics = [
          concat(local.m.http_requests, [{ stat = "Sum" }]),
          concat(local.m.http_5xx, [{ stat = "Sum" }]),
          concat(local.elb_5xx_metric, [{ stat = "Sum", label = "ALB 5xx (no healthy producer)" }]),
          concat(local.m.events_rejected, [{ stat = "Sum" }]),
          concat(local.m.backpressure, [{ stat = "Sum" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 0
      y      = 9
      width  = 12
      height = 6
      properties = merge(local.graph, {
        title = "Consumer lag (ms)"
        metrics = [
          concat(local.m.millis_behind_latest, [{ stat = "Maximum" }]),
          concat(local.iterator_metric, [{ stat = "Maximum", label = "Kinesis iterator age" }]),
        ]
        annotations = { horizontal = [{ label = "alarm", value = var.consumer_lag_threshold_ms }] }
      })
    },
    {
      type   = "metric"
      x      = 12
      y      = 9
      width  = 12
      height = 6
      properties = merge(local.graph, {
        title  = "Freshness: event received -> rows queryable (ms)"
        period = 300
        metrics = [
          concat(local.m.freshness_millis, [{ stat = "p50", label = "p50" }]),
          concat(local.m.freshness_millis, [{ stat = "p99", label = "p99" }]),
        ]
        annotations = { horizontal = [{ label = "p99 target", value = var.freshness_p99_target_ms }] }
      })
    },
    {
      type   = "metric"
      x      = 0
      y      = 15
      width  = 8
      height = 6
      properties = merge(local.graph, {
        title = "Consumer: batches flushed, unmappable events"
        metrics = [
          concat(local.m.batches_flushed, [{ stat = "Sum" }]),
          concat(local.m.events_unmappable, [{ stat = "Sum" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 8
      y      = 15
      width  = 8
      height = 6
      properties = merge(local.graph, {
        title = "Consumer: batch size"
        metrics = [
          concat(local.m.batch_rows, [{ stat = "Average" }]),
          concat(local.m.batch_bytes, [{ stat = "Average", yAxis = "right" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 16
      y      = 15
      width  = 8
      height = 6
      properties = merge(local.graph, {
        title = "Consumer: buffers and checkpoints"
        metrics = [
          concat(local.m.buffer_bytes, [{ stat = "Maximum" }]),
          concat(local.m.batch_age_millis, [{ stat = "p99", yAxis = "right" }]),
          concat(local.m.checkpoint_lag_records, [{ stat = "Maximum", yAxis = "right" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 0
      y      = 21
      width  = 8
      height = 6
      properties = merge(local.graph, {
        title = "Importer: loads, failures, dead-lettered"
        metrics = [
          concat(local.m.loads_completed, [{ stat = "Sum" }]),
          concat(local.m.load_failures, [{ stat = "Sum" }]),
          concat(local.m.loads_dead_lettered, [{ stat = "Sum" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 8
      y      = 21
      width  = 8
      height = 6
      properties = merge(local.graph, {
        title = "Latency (ms): load duration, HTTP"
        metrics = [
          concat(local.m.load_duration_millis, [{ stat = "p99", label = "load p99" }]),
          concat(local.m.http_latency_millis, [{ stat = "p99", label = "HTTP p99" }]),
        ]
      })
    },
    {
      type   = "metric"
      x      = 16
      y      = 21
      width  = 8
      height = 6
      properties = merge(local.graph, {
        title   = "Dead-letter queue: visible messages"
        period  = 300
        metrics = [concat(local.dlq_metric, [{ stat = "Maximum" }])]
      })
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  count = var.create_dashboard ? 1 : 0

  dashboard_name = var.name
  dashboard_body = jsonencode({ widgets = local.widgets })
}
