variable "name" {
  description = "Prefix of the alarm names, the SNS topic and the dashboard."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,100}$", var.name))
    error_message = "name must be 1-100 characters of [a-zA-Z0-9_-]."
  }
}

variable "alarm_email_addresses" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_email_addresses : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", a))])
    error_message = "alarm_email_addresses must hold e-mail addresses."
  }
}

variable "stream_name" {
  description = "Name of the Kinesis stream (dimension StreamName of GetRecords.IteratorAgeMilliseconds)."
  type        = string
}

variable "dlq_name" {
  description = "Name of the dead-letter queue (dimension QueueName of ApproximateNumberOfMessagesVisible)."
  type        = string
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the producer's load balancer (dimension LoadBalancer of HTTPCode_ELB_5XX_Count)."
  type        = string
}

variable "consumer_lag_threshold_ms" {
  description = "Alarm when the consumer is this many milliseconds behind the tip of the stream (the larger of MillisBehindLatest and the stream's iterator age)."
  type        = number
  default     = 60000

  validation {
    condition     = var.consumer_lag_threshold_ms > 0
    error_message = "consumer_lag_threshold_ms must be positive."
  }
}

variable "consumer_lag_minutes" {
  description = "Consecutive minutes the consumer lag must stay over its threshold before the alarm fires."
  type        = number
  default     = 5

  validation {
    condition     = var.consumer_lag_minutes >= 1 && var.consumer_lag_minutes <= 60 && floor(var.consumer_lag_minutes) == var.consumer_lag_minutes
    error_message = "consumer_lag_minutes must be a whole number between 1 and 60."
  }
}

variable "producer_5xx_rate_threshold_percent" {
  description = "Alarm when more than this percentage of producer requests in 5 minutes end in 5xx (the producer's Http5xx plus the load balancer's own 5xx)."
  type        = number
  default     = 1

  validation {
    condition     = var.producer_5xx_rate_threshold_percent > 0 && var.producer_5xx_rate_threshold_percent <= 100
    error_message = "producer_5xx_rate_threshold_percent must be in (0, 100]."
  }
}

variable "producer_5xx_min_requests" {
  description = "Fewer requests than this in 5 minutes never trip the 5xx-rate alarm (one failure among three requests is no incident)."
  type        = number
  default     = 20

  validation {
    condition     = var.producer_5xx_min_requests >= 1
    error_message = "producer_5xx_min_requests must be at least 1."
  }
}

variable "import_failures_threshold" {
  description = "Alarm when the importer counts more than this many failed load attempts (LoadFailures, transient or permanent) in 5 minutes."
  type        = number
  default     = 5

  validation {
    condition     = var.import_failures_threshold >= 0
    error_message = "import_failures_threshold must be at least 0."
  }
}

variable "freshness_p99_target_ms" {
  description = "Target for the 99th percentile of freshness (time from an event's receipt to its rows being queryable), in milliseconds. Alarm after 15 minutes above it."
  type        = number
  default     = 120000

  validation {
    condition     = var.freshness_p99_target_ms > 0
    error_message = "freshness_p99_target_ms must be positive."
  }
}

variable "no_loads_minutes" {
  description = "Alarm when, in every 5-minute window of this many minutes, events were accepted but no batch was loaded. Keep it above the consumer's flush age plus a load."
  type        = number
  default     = 15

  validation {
    condition     = var.no_loads_minutes >= 5 && var.no_loads_minutes <= 1440 && var.no_loads_minutes % 5 == 0
    error_message = "no_loads_minutes must be a multiple of 5 between 5 and 1440."
  }
}

variable "create_dashboard" {
  description = "Create the CloudWatch dashboard."
  type        = bool
  default     = true
}

variable "kms_key_deletion_window_in_days" {
  description = "Waiting period before the alarm topic's KMS key is deleted after destroy."
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
