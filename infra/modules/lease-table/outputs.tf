output "name" {
  description = "Name of the lease table (MICROBATCH_LEASE_TABLE)."
  value       = aws_dynamodb_table.this.name
}

output "arn" {
  description = "ARN of the lease table, for IAM policies (its indexes are under arn/index/*)."
  value       = aws_dynamodb_table.this.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the table."
  value       = aws_kms_key.this.arn
}
