variable "name" {
  description = "Prefix for the queue names and the KMS key alias, e.g. microbatch-prod."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,60}$", var.name))
    error_message = "name must be 1-60 characters of [a-zA-Z0-9_-] (SQS queue names derive from it)."
  }
}

variable "bucket_name" {
  description = "Globally unique name of the S3 bucket that holds the batches (MICROBATCH_BUCKET)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 characters of [a-z0-9.-], starting and ending with a letter or digit."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a bucket that still holds objects. Keep false outside throwaway environments."
  type        = bool
  default     = false
}

variable "loads_prefix" {
  description = "Key prefix under which the consumer writes batches; the notification and the lifecycle rule are filtered on it. Must match the binary (docs/DESIGN.md: loads/)."
  type        = string
  default     = "loads/"

  validation {
    condition     = can(regex("^[a-z0-9_-]+/$", var.loads_prefix))
    error_message = "loads_prefix must be one path segment ending in a slash, e.g. loads/."
  }
}

variable "rejected_prefix" {
  description = "Key prefix under which the consumer writes events it cannot map, with their reason."
  type        = string
  default     = "rejected/"

  validation {
    condition     = can(regex("^[a-z0-9_-]+/$", var.rejected_prefix))
    error_message = "rejected_prefix must be one path segment ending in a slash, e.g. rejected/."
  }
}

variable "loads_expiration_days" {
  description = "Days after which batch objects under loads_prefix expire. Keep it above the SQS and DLQ retention so a replayed message still finds its object."
  type        = number
  default     = 30

  validation {
    condition     = var.loads_expiration_days >= 1 && floor(var.loads_expiration_days) == var.loads_expiration_days
    error_message = "loads_expiration_days must be a whole number of days, at least 1."
  }
}

variable "rejected_expiration_days" {
  description = "Days after which objects under rejected_prefix expire."
  type        = number
  default     = 90

  validation {
    condition     = var.rejected_expiration_days >= 1 && floor(var.rejected_expiration_days) == var.rejected_expiration_days
    error_message = "rejected_expiration_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten object versions expire (a replayed flush overwrites its object with the same bytes)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "max_load_seconds" {
  description = "Longest time one COPY of one batch may take, including retries inside one receive. The queue's visibility timeout must exceed it, or a second importer receive could start the same load."
  type        = number
  default     = 300

  validation {
    condition     = var.max_load_seconds >= 1 && var.max_load_seconds <= 21600
    error_message = "max_load_seconds must be between 1 and 21600."
  }
}

variable "visibility_timeout_seconds" {
  description = "Visibility timeout of the load queue. null means 2 x max_load_seconds + 60. Must be above max_load_seconds."
  type        = number
  default     = null

  validation {
    condition     = var.visibility_timeout_seconds == null ? true : (var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200)
    error_message = "visibility_timeout_seconds must be between 0 and 43200 (12 hours)."
  }
}

variable "max_receive_count" {
  description = "Deliveries of one notification before SQS moves it to the dead-letter queue (redrive policy maxReceiveCount). The importer dead-letters poison batches itself after its own attempts; this is the backstop for crashes mid-load."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count must be a whole number between 1 and 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long the load queue keeps an undelivered notification."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long the dead-letter queue keeps a message; the maximum (14 days) leaves the most time to fix and replay."
  type        = number
  default     = 1209600

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "dlq_message_retention_seconds must be between 60 and 1209600 (14 days)."
  }
}

variable "kms_key_deletion_window_in_days" {
  description = "Waiting period before the bucket's KMS key is deleted after destroy."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_key_deletion_window_in_days >= 7 && var.kms_key_deletion_window_in_days <= 30
    error_message = "kms_key_deletion_window_in_days must be between 7 and 30."
  }
}

variable "access_log_bucket" {
  description = "Name of an existing bucket that receives S3 server access logs for this bucket. null disables access logging."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of this module."
  type        = map(string)
  default     = {}
}
