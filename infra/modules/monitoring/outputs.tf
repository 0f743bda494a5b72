output "sns_topic_arn" {
  description = "ARN of the SNS topic the alarms notify; subscribe pagers or chat to it."
  value       = aws_sns_topic.alarms.arn
}

output "alarm_arns" {
  description = "ARNs of the alarms, by name."
  value = {
    dlq_not_empty     = aws_cloudwatch_metric_alarm.dlq_not_empty.arn
    consumer_lag      = aws_cloudwatch_metric_alarm.consumer_lag.arn
    producer_5xx_rate = aws_cloudwatch_metric_alarm.producer_5xx_rate.arn
    import_failures   = aws_cloudwatch_metric_alarm.import_failures.arn
    freshness_p99     = aws_cloudwatch_metric_alarm.freshness_p99.arn
    no_loads          = aws_cloudwatch_metric_alarm.no_loads.arn
  }
}

output "dashboard_name" {
  description = "Name of the CloudWatch dashboard (null when create_dashboard is false)."
  value       = one(aws_cloudwatch_dashboard.this[*].dashboard_name)
}

output "emf_metric_names" {
  description = "The Microbatch EMF metric names the alarms and the dashboard read (docs/METRICS.md)."
  value       = sort([for m in values(local.emf) : m.name])
}
