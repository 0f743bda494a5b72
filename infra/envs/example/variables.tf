variable "region" {
  description = "AWS region of the whole pipeline."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "name" {
  description = "Name of this environment; prefix of every resource."
  type        = string
  default     = "microbatch-example"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2-24 lowercase letters, digits and hyphens."
  }
}

variable "vpc_id" {
  description = "Existing VPC to deploy into."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (with a NAT gateway or VPC endpoints) for the tasks and the warehouse; three Availability Zones for Redshift Serverless."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets (two or more Availability Zones) for the producer's internet-facing load balancer."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate of the webhook host name, in the same region."
  type        = string
}

variable "ingress_cidr_blocks" {
  description = "Who may send webhooks (IPv4 CIDR blocks)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "image_tag" {
  description = "Tag of the microbatch image in the environment's ECR repository (push it before the services can start). Tags are immutable there, so every build gets a new one."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid image tag other than latest (tags are immutable in the repository)."
  }
}

variable "config_file" {
  description = "Path of a TOML configuration file baked into the image (MICROBATCH_CONFIG), e.g. declaring the webhook sources; null: environment only."
  type        = string
  default     = null
}

variable "cpu_architecture" {
  description = "X86_64 or ARM64: the platform the image was built for."
  type        = string
  default     = "X86_64"
}

variable "stream_mode" {
  description = "ON_DEMAND or PROVISIONED Kinesis capacity."
  type        = string
  default     = "ON_DEMAND"
}

variable "shard_count" {
  description = "Shards when stream_mode is PROVISIONED."
  type        = number
  default     = 2
}

variable "warehouse_mode" {
  description = "serverless or provisioned Redshift."
  type        = string
  default     = "serverless"
}

variable "consume_desired_count" {
  description = "Number of consumer tasks."
  type        = number
  default     = 2
}

variable "produce_desired_count" {
  description = "Number of producer tasks."
  type        = number
  default     = 2
}

variable "loads_expiration_days" {
  description = "Days batch objects under loads/ are kept."
  type        = number
  default     = 30
}

variable "max_receive_count" {
  description = "Deliveries of one load notification before it goes to the dead-letter queue."
  type        = number
  default     = 5
}

variable "max_load_seconds" {
  description = "Longest expected load; the queue's visibility timeout is set above it."
  type        = number
  default     = 300
}

variable "log_retention_days" {
  description = "Retention of the service log groups."
  type        = number
  default     = 30
}

variable "alarm_email_addresses" {
  description = "E-mail addresses that receive the alarms."
  type        = list(string)
  default     = []
}

variable "freshness_p99_target_ms" {
  description = "Freshness target (p99, ms) of the freshness alarm."
  type        = number
  default     = 120000
}

variable "protect_data" {
  description = "Deletion protection and final snapshots. Set false only for a throwaway environment you intend to destroy."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
