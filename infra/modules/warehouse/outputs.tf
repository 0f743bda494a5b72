output "mode" {
  description = "serverless or provisioned."
  value       = var.mode
}

output "endpoint_address" {
  description = "Host name of the warehouse endpoint (private)."
  value       = local.endpoint_address
}

output "port" {
  description = "Port of the warehouse endpoint."
  value       = var.port
}

output "database_name" {
  description = "Database the importer loads into."
  value       = var.database_name
}

output "cluster_identifier" {
  description = "Identifier of the provisioned cluster (null in serverless mode)."
  value       = one(aws_redshift_cluster.this[*].cluster_identifier)
}

output "workgroup_name" {
  description = "Name of the serverless workgroup (null in provisioned mode)."
  value       = one(aws_redshiftserverless_workgroup.this[*].workgroup_name)
}

output "secret_arn" {
  description = "ARN of the Secrets Manager secret with the admin credentials; its key url is MICROBATCH_WAREHOUSE_URL."
  value       = aws_secretsmanager_secret.this.arn
}

output "secret_kms_key_arn" {
  description = "ARN of the KMS key encrypting the secret (the importer's execution role decrypts with it)."
  value       = aws_kms_key.this.arn
}

output "url_secret_value_from" {
  description = "ECS valueFrom that injects only the url key of the secret."
  value       = "${aws_secretsmanager_secret.this.arn}:url::"
}

output "copy_role_arn" {
  description = "ARN of the role Redshift assumes for COPY (MICROBATCH_REDSHIFT_IAM_ROLE)."
  value       = aws_iam_role.copy.arn
}

output "security_group_id" {
  description = "Security group of the warehouse."
  value       = aws_security_group.this.id
}
