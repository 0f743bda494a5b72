variable "name" {
  description = "Name of the Kinesis data stream (also the prefix of the KMS key alias)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.-]{1,128}$", var.name))
    error_message = "name must be 1-128 characters of [a-zA-Z0-9_.-]."
  }
}

variable "stream_mode" {
  description = "Capacity mode of the stream: ON_DEMAND (scales by itself, billed per GB) or PROVISIONED (fixed shard_count)."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "PROVISIONED"], var.stream_mode)
    error_message = "stream_mode must be ON_DEMAND or PROVISIONED."
  }
}

variable "shard_count" {
  description = "Number of shards when stream_mode is PROVISIONED (ignored for ON_DEMAND). Each shard takes 1 MB/s or 1000 records/s in and gives 2 MB/s out."
  type        = number
  default     = 2

  validation {
    condition     = var.shard_count >= 1 && var.shard_count <= 10000 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count must be a whole number between 1 and 10000."
  }
}

variable "retention_period_hours" {
  description = "How long records stay readable in the stream. This bounds how far back the consumer can replay after an outage; keep it above your longest tolerated consumer outage."
  type        = number
  default     = 168

  validation {
    condition     = var.retention_period_hours >= 24 && var.retention_period_hours <= 8760
    error_message = "retention_period_hours must be between 24 and 8760."
  }
}

variable "shard_level_metrics" {
  description = "Enhanced shard-level CloudWatch metrics to enable (billed per shard). The alarms need none of them: they read the stream-level GetRecords.IteratorAgeMilliseconds."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for m in var.shard_level_metrics : contains([
      "IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
      "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded",
      "IteratorAgeMilliseconds", "ALL",
    ], m)])
    error_message = "shard_level_metrics accepts only Kinesis shard-level metric names or ALL."
  }
}

variable "kms_key_deletion_window_in_days" {
  description = "Waiting period before the stream's KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_key_deletion_window_in_days >= 7 && var.kms_key_deletion_window_in_days <= 30
    error_message = "kms_key_deletion_window_in_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
