output "bucket_name" {
  description = "Name of the batch bucket (MICROBATCH_BUCKET)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the batch bucket."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the objects: writers need kms:GenerateDataKey, readers kms:Decrypt."
  value       = aws_kms_key.this.arn
}

output "loads_prefix" {
  description = "Key prefix of the batches (filter of the notification and of the COPY role)."
  value       = var.loads_prefix
}

output "rejected_prefix" {
  description = "Key prefix of the rejected events."
  value       = var.rejected_prefix
}

output "queue_url" {
  description = "URL of the load queue (MICROBATCH_QUEUE_URL)."
  value       = aws_sqs_queue.this.url
}

output "queue_arn" {
  description = "ARN of the load queue."
  value       = aws_sqs_queue.this.arn
}

output "queue_name" {
  description = "Name of the load queue."
  value       = aws_sqs_queue.this.name
}

output "visibility_timeout_seconds" {
  description = "Visibility timeout the load queue was given."
  value       = aws_sqs_queue.this.visibility_timeout_seconds
}

output "max_receive_count" {
  description = "maxReceiveCount of the load queue's redrive policy."
  value       = var.max_receive_count
}

output "dlq_url" {
  description = "URL of the dead-letter queue (MICROBATCH_DLQ_URL)."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue (source of a replay with aws sqs start-message-move-task)."
  value       = aws_sqs_queue.dlq.arn
}

output "dlq_name" {
  description = "Name of the dead-letter queue (dimension QueueName of its alarm)."
  value       = aws_sqs_queue.dlq.name
}
