output "name" {
  description = "Name of the stream (MICROBATCH_STREAM_NAME)."
  value       = aws_kinesis_stream.this.name
}

output "arn" {
  description = "ARN of the stream, for IAM policies."
  value       = aws_kinesis_stream.this.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the stream: producers need kms:GenerateDataKey on it, consumers kms:Decrypt."
  value       = aws_kms_key.this.arn
}
