# One alarm per failure mode of the pipeline; docs/DEPLOY.md has a runbook
# entry for each, under the same name.

locals {
  actions = [aws_sns_topic.alarms.arn]
}

# Poison batches the importer gave up on, or notifications SQS moved after
# max_receive_count deliveries.
resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "Batches are waiting in the dead-letter queue ${var.dlq_name}: their rows are not in the warehouse. Runbook: docs/DEPLOY.md#dlq-not-empty"
  namespace           = local.aws_metrics.dlq_visible.namespace
  metric_name         = local.aws_metrics.dlq_visible.name
  dimensions          = { QueueName = var.dlq_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

# How far the consumer is behind the tip of the stream: the larger of what
# the consumer reports (MillisBehindLatest) and what Kinesis measures
# (GetRecords.IteratorAgeMilliseconds). No data at all means no consumer reads.
resource "aws_cloudwatch_metric_alarm" "consumer_lag" {
  alarm_name          = "${var.name}-consumer-lag"
  alarm_description   = "The consumer is more than ${var.consumer_lag_threshold_ms} ms behind the stream ${var.stream_name}. Runbook: docs/DEPLOY.md#consumer-lag"
  evaluation_periods  = var.consumer_lag_minutes
  datapoints_to_alarm = var.consumer_lag_minutes
  threshold           = var.consumer_lag_threshold_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags

  metric_query {
    id = "behind"

    metric {
      namespace   = local.namespace
      metric_name = local.emf.millis_behind_latest.name
      dimensions  = { Service = local.emf.millis_behind_latest.service }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id = "iterator"

    metric {
      namespace   = local.aws_metrics.iterator_age.namespace
      metric_name = local.aws_metrics.iterator_age.name
      dimensions  = { StreamName = var.stream_name }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "lag"
    expression  = "MAX([behind, iterator])"
    label       = "Consumer lag (ms)"
    return_data = true
  }
}

# Share of webhook requests answered 5xx: the producer's own (including 503
# back-pressure) plus those the load balancer answers when no producer is healthy.
resource "aws_cloudwatch_metric_alarm" "producer_5xx_rate" {
  alarm_name          = "${var.name}-producer-5xx-rate"
  alarm_description   = "More than ${var.producer_5xx_rate_threshold_percent}% of webhook requests got a 5xx. Runbook: docs/DEPLOY.md#producer-5xx-rate"
  evaluation_periods  = 1
  threshold           = var.producer_5xx_rate_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags

  metric_query {
    id = "app5xx"

    metric {
      namespace   = local.namespace
      metric_name = local.emf.http_5xx.name
      dimensions  = { Service = local.emf.http_5xx.service }
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "requests"

    metric {
      namespace   = local.namespace
      metric_name = local.emf.http_requests.name
      dimensions  = { Service = local.emf.http_requests.service }
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "elb5xx"

    metric {
      namespace   = local.aws_metrics.elb_5xx.namespace
      metric_name = local.aws_metrics.elb_5xx.name
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id         = "errors"
    expression = "FILL(app5xx, 0) + FILL(elb5xx, 0)"
    label      = "5xx responses"
  }

  metric_query {
    id         = "total"
    expression = "FILL(requests, 0) + FILL(elb5xx, 0)"
    label      = "Requests"
  }

  metric_query {
    id          = "rate"
    expression  = "IF(total >= ${var.producer_5xx_min_requests}, 100 * errors / total, 0)"
    label       = "5xx rate (%)"
    return_data = true
  }
}

resource "aws_cloudwatch_metric_alarm" "import_failures" {
  alarm_name          = "${var.name}-import-failures"
  alarm_description   = "The importer failed more than ${var.import_failures_threshold} load attempts in 5 minutes. Runbook: docs/DEPLOY.md#import-failures"
  namespace           = local.namespace
  metric_name         = local.emf.load_failures.name
  dimensions          = { Service = local.emf.load_failures.service }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.import_failures_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

# An object write the consumer keeps retrying that retries alone will not cure
# (access denied, a disabled KMS key): its shard is not read meanwhile.
resource "aws_cloudwatch_metric_alarm" "object_writes_stalled" {
  alarm_name          = "${var.name}-object-writes-stalled"
  alarm_description   = "The consumer cannot write batches (a permanent S3 error): their shards wait. Runbook: docs/DEPLOY.md#object-writes-stalled"
  namespace           = local.namespace
  metric_name         = local.emf.object_writes_stalled.name
  dimensions          = { Service = local.emf.object_writes_stalled.service }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "freshness_p99" {
  alarm_name          = "${var.name}-freshness-p99"
  alarm_description   = "p99 freshness (event received -> rows queryable) has been above ${var.freshness_p99_target_ms} ms for 15 minutes. Runbook: docs/DEPLOY.md#freshness-p99"
  namespace           = local.namespace
  metric_name         = local.emf.freshness_millis.name
  dimensions          = { Service = local.emf.freshness_millis.service }
  extended_statistic  = "p99"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  threshold           = var.freshness_p99_target_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

# Events are coming in but nothing reaches the warehouse: in each of the last
# no_loads_minutes / 5 windows of 5 minutes, the producer accepted events and
# the importer loaded no batch. Catches a dead consumer or importer, a broken
# notification, or a stuck queue, which the other alarms may not.
resource "aws_cloudwatch_metric_alarm" "no_loads" {
  alarm_name          = "${var.name}-no-loads"
  alarm_description   = "Events were accepted but no batch was loaded for ${var.no_loads_minutes} minutes. Runbook: docs/DEPLOY.md#no-loads"
  evaluation_periods  = var.no_loads_minutes / 5
  datapoints_to_alarm = var.no_loads_minutes / 5
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags

  metric_query {
    id = "accepted"

    metric {
      namespace   = local.namespace
      metric_name = local.emf.events_accepted.name
      dimensions  = { Service = local.emf.events_accepted.service }
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id = "loaded"

    metric {
      namespace   = local.namespace
      metric_name = local.emf.loads_completed.name
      dimensions  = { Service = local.emf.loads_completed.service }
      period      = 300
      stat        = "Sum"
    }
  }

  metric_query {
    id          = "stalled"
    expression  = "IF((FILL(accepted, 0) > 0) AND (FILL(loaded, 0) == 0), 1, 0)"
    label       = "Events accepted, nothing loaded"
    return_data = true
  }
}
