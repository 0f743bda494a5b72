output "ecr_repository_url" {
  description = "Push the microbatch image here (docs/DEPLOY.md)."
  value       = aws_ecr_repository.microbatch.repository_url
}

output "producer_dns_name" {
  description = "DNS name of the producer's load balancer; point the certificate's host name at it (CNAME or Route 53 alias)."
  value       = module.services.alb_dns_name
}

output "stream_name" {
  description = "MICROBATCH_STREAM_NAME"
  value       = module.stream.name
}

output "bucket_name" {
  description = "MICROBATCH_BUCKET"
  value       = module.batch_store.bucket_name
}

output "queue_url" {
  description = "MICROBATCH_QUEUE_URL"
  value       = module.batch_store.queue_url
}

output "queue_arn" {
  description = "ARN of the load queue (destination of a DLQ replay)."
  value       = module.batch_store.queue_arn
}

output "dlq_url" {
  description = "MICROBATCH_DLQ_URL"
  value       = module.batch_store.dlq_url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue (source of a DLQ replay)."
  value       = module.batch_store.dlq_arn
}

output "lease_table_name" {
  description = "MICROBATCH_LEASE_TABLE"
  value       = module.lease_table.name
}

output "redshift_copy_role_arn" {
  description = "MICROBATCH_REDSHIFT_IAM_ROLE"
  value       = module.warehouse.copy_role_arn
}

output "warehouse_secret_arn" {
  description = "Secret with the warehouse credentials; key url is MICROBATCH_WAREHOUSE_URL."
  value       = module.warehouse.secret_arn
}

output "warehouse_workgroup_name" {
  description = "Redshift Serverless workgroup (serverless mode), for the Redshift Data API."
  value       = module.warehouse.workgroup_name
}

output "warehouse_cluster_identifier" {
  description = "Redshift cluster (provisioned mode), for the Redshift Data API."
  value       = module.warehouse.cluster_identifier
}

output "warehouse_database_name" {
  description = "Database the importer loads into."
  value       = module.warehouse.database_name
}

output "redshift_data_api_args" {
  description = "Arguments of `aws redshift-data execute-statement` that reach the warehouse as its admin user (docs/DEPLOY.md)."
  value = join(" ", [
    module.warehouse.mode == "serverless" ? "--workgroup-name ${module.warehouse.workgroup_name}" : "--cluster-identifier ${module.warehouse.cluster_identifier}",
    "--database ${module.warehouse.database_name}",
    "--secret-arn ${module.warehouse.secret_arn}",
  ])
}

output "webhook_secret_arn" {
  description = "MICROBATCH_WEBHOOK_SECRETS: put the webhook senders' signing secrets into this secret."
  value       = module.services.webhook_secret_arn
}

output "api_tokens_secret_arn" {
  description = "MICROBATCH_PRODUCER__TOKENS: bearer tokens of POST /v1/events."
  value       = module.services.api_tokens_secret_arn
}

output "ecs_cluster_name" {
  description = "ECS cluster of the three services."
  value       = module.services.cluster_name
}

output "log_group_names" {
  description = "Log groups, by service."
  value       = module.services.log_group_names
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.monitoring.sns_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = module.monitoring.dashboard_name
}
