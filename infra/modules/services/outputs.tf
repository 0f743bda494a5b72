output "cluster_name" {
  description = "Name of the ECS cluster (dimension ClusterName of the ECS metrics)."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "service_names" {
  description = "ECS service names, by service (produce, consume, import)."
  value = {
    produce = aws_ecs_service.produce.name
    consume = aws_ecs_service.consume.name
    import  = aws_ecs_service.import.name
  }
}

output "task_definition_arns" {
  description = "Task definition ARNs, by service."
  value       = { for k, v in aws_ecs_task_definition.this : k => v.arn }
}

output "task_role_arns" {
  description = "Task role ARNs, by service."
  value       = { for k, v in aws_iam_role.task : k => v.arn }
}

output "security_group_ids" {
  description = "Security group ids, by service, plus alb."
  value       = { for k, v in aws_security_group.this : k => v.id }
}

output "import_security_group_id" {
  description = "Security group of the importer tasks, to admit on the warehouse port."
  value       = aws_security_group.this["import"].id
}

output "log_group_names" {
  description = "CloudWatch log group names, by service. EMF metrics are extracted from them."
  value       = { for k, v in aws_cloudwatch_log_group.this : k => v.name }
}

output "alb_dns_name" {
  description = "DNS name of the producer's load balancer; point your webhook host name (the certificate's) at it."
  value       = aws_lb.produce.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone id of the load balancer, for a Route 53 alias record."
  value       = aws_lb.produce.zone_id
}

output "alb_arn_suffix" {
  description = "ARN suffix of the load balancer (dimension LoadBalancer of the AWS/ApplicationELB metrics)."
  value       = aws_lb.produce.arn_suffix
}

output "target_group_arn_suffix" {
  description = "ARN suffix of the producer target group (dimension TargetGroup of the AWS/ApplicationELB metrics)."
  value       = aws_lb_target_group.produce.arn_suffix
}

output "webhook_secret_arn" {
  description = "ARN of the webhook signing secrets (MICROBATCH_WEBHOOK_SECRETS); put your senders' secrets into it."
  value       = aws_secretsmanager_secret.webhook.arn
}

output "api_tokens_secret_arn" {
  description = "ARN of the bearer tokens of POST /v1/events (MICROBATCH_PRODUCER__TOKENS)."
  value       = aws_secretsmanager_secret.api_tokens.arn
}

output "environment" {
  description = "Plain environment variables given to each service (secrets excluded), for docs and debugging."
  value       = local.container_environment
}
