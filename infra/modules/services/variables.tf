variable "name" {
  description = "Name of the ECS cluster; prefix of the services, roles, log groups, load balancer and secrets."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2-24 lowercase letters, digits and hyphens (load balancer names derive from it)."
  }
}

variable "image" {
  description = "Container image of the microbatch binary (repository:tag or repository@sha256:digest); every service runs it."
  type        = string

  validation {
    condition     = length(var.image) > 0
    error_message = "image must not be empty."
  }
}

variable "catalog_dir" {
  description = "Folder of catalog TOML files inside the image (MICROBATCH_CATALOG__DIR). The Dockerfile puts examples/catalog there; bake your own catalog into a derived image."
  type        = string
  default     = "/etc/microbatch/catalog"

  validation {
    condition     = startswith(var.catalog_dir, "/")
    error_message = "catalog_dir must be an absolute path inside the image."
  }
}

variable "config_file" {
  description = "Path of a TOML configuration file inside the image (MICROBATCH_CONFIG), e.g. one declaring the webhook sources; null: environment only."
  type        = string
  default     = null

  validation {
    condition     = var.config_file == null ? true : startswith(var.config_file, "/")
    error_message = "config_file must be null or an absolute path inside the image."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture the image was built for: X86_64 or ARM64 (Graviton)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "vpc_id" {
  description = "VPC of the services and of the load balancer."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks. They need a route to ECR, CloudWatch Logs, Secrets Manager, Kinesis, S3, SQS and DynamoDB (NAT gateway or VPC endpoints); tasks get no public IP."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 1 && alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "private_subnet_ids must hold at least one subnet id (subnet-...)."
  }
}

variable "alb_subnet_ids" {
  description = "Subnets of the producer's load balancer: public subnets for an internet-facing one, at least two Availability Zones."
  type        = list(string)

  validation {
    condition     = length(var.alb_subnet_ids) >= 2 && alltrue([for s in var.alb_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "alb_subnet_ids must hold at least two subnet ids (subnet-...)."
  }
}

variable "alb_internal" {
  description = "Make the producer's load balancer internal (reachable only inside the VPC) instead of internet-facing."
  type        = bool
  default     = false
}

variable "ingress_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach the producer over HTTPS (the webhook senders)."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.ingress_cidr_blocks) >= 1 && alltrue([for c in var.ingress_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "ingress_cidr_blocks must hold at least one valid IPv4 CIDR block."
  }
}

variable "certificate_arn" {
  description = "ARN of the ACM certificate of the producer's HTTPS listener. Webhooks carry secrets, so there is no plain-HTTP listener."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition     = can(regex("^ELBSecurityPolicy-(TLS13|FS-1-2|TLS-1-2)", var.ssl_policy))
    error_message = "ssl_policy must be a TLS 1.2+ ELBSecurityPolicy."
  }
}

variable "alb_deletion_protection" {
  description = "Protect the producer's load balancer from deletion."
  type        = bool
  default     = true
}

variable "alb_access_logs_bucket" {
  description = "Existing bucket receiving the load balancer's access logs (it needs the ELB log delivery bucket policy). null disables access logs."
  type        = string
  default     = null
}

variable "web_acl_arn" {
  description = "ARN of a WAFv2 web ACL to attach to the producer's load balancer. null attaches none."
  type        = string
  default     = null
}

variable "producer_port" {
  description = "Port the producer listens on inside the task (MICROBATCH_PRODUCER__LISTEN=0.0.0.0:<port>)."
  type        = number
  default     = 8080

  validation {
    condition     = var.producer_port >= 1024 && var.producer_port <= 65535
    error_message = "producer_port must be an unprivileged port (1024-65535): the image runs as non-root."
  }
}

variable "produce_desired_count" {
  description = "Number of producer tasks behind the load balancer."
  type        = number
  default     = 2

  validation {
    condition     = var.produce_desired_count >= 0 && floor(var.produce_desired_count) == var.produce_desired_count
    error_message = "produce_desired_count must be a whole number, at least 0."
  }
}

variable "consume_desired_count" {
  description = "Number of consumer tasks. They share the shards through the lease table, so more tasks than shards leaves some idle."
  type        = number
  default     = 2

  validation {
    condition     = var.consume_desired_count >= 0 && floor(var.consume_desired_count) == var.consume_desired_count
    error_message = "consume_desired_count must be a whole number, at least 0."
  }
}

variable "task_size" {
  description = "Fargate CPU units and memory (MiB) of each service's task."
  type = object({
    produce = object({ cpu = number, memory = number })
    consume = object({ cpu = number, memory = number })
    import  = object({ cpu = number, memory = number })
  })
  default = {
    produce = { cpu = 512, memory = 1024 }
    consume = { cpu = 1024, memory = 2048 }
    import  = { cpu = 512, memory = 1024 }
  }

  validation {
    condition     = alltrue([for s in values(var.task_size) : contains([256, 512, 1024, 2048, 4096, 8192, 16384], s.cpu) && s.memory >= 512 && s.memory <= 122880])
    error_message = "Each task_size cpu must be a Fargate CPU value (256-16384) and memory between 512 and 122880 MiB."
  }
}

variable "stop_timeout_seconds" {
  description = "Seconds between SIGTERM and SIGKILL per service: the consumer flushes and checkpoints, the importer finishes its load, the producer drains."
  type = object({
    produce = number
    consume = number
    import  = number
  })
  default = {
    produce = 30
    consume = 120
    import  = 120
  }

  validation {
    condition     = alltrue([for t in values(var.stop_timeout_seconds) : t >= 2 && t <= 120])
    error_message = "Fargate stop timeouts must be between 2 and 120 seconds."
  }
}

variable "log_retention_days" {
  description = "Retention of the services' CloudWatch log groups (the EMF metrics are extracted at ingestion and do not depend on it)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, ...)."
  }
}

variable "stream_name" {
  description = "Name of the Kinesis stream (MICROBATCH_STREAM_NAME)."
  type        = string
}

variable "stream_arn" {
  description = "ARN of the Kinesis stream."
  type        = string
}

variable "stream_kms_key_arn" {
  description = "ARN of the stream's KMS key."
  type        = string
}

variable "bucket_name" {
  description = "Name of the batch bucket (MICROBATCH_BUCKET)."
  type        = string
}

variable "bucket_arn" {
  description = "ARN of the batch bucket."
  type        = string
}

variable "bucket_kms_key_arn" {
  description = "ARN of the batch bucket's KMS key."
  type        = string
}

variable "loads_prefix" {
  description = "Key prefix the consumer writes batches under and the importer reads from."
  type        = string
  default     = "loads/"
}

variable "rejected_prefix" {
  description = "Key prefix the consumer writes unmappable events under, and the importer the rows the warehouse refused (rejected/rows/)."
  type        = string
  default     = "rejected/"
}

variable "schemas_prefix" {
  description = "Key prefix of the batches' schema objects (their column lists): written by the consumer, read by the importer. Never expire them: every batch names one."
  type        = string
  default     = "schemas/"
}

variable "queue_url" {
  description = "URL of the load queue (MICROBATCH_QUEUE_URL)."
  type        = string
}

variable "queue_arn" {
  description = "ARN of the load queue."
  type        = string
}

variable "queue_visibility_timeout_seconds" {
  description = "Visibility timeout of the load queue, so the importer knows how long a received message stays hidden (MICROBATCH_QUEUE__VISIBILITY_SECS)."
  type        = number

  validation {
    condition     = var.queue_visibility_timeout_seconds >= 0 && var.queue_visibility_timeout_seconds <= 43200
    error_message = "queue_visibility_timeout_seconds must be between 0 and 43200."
  }
}

variable "queue_max_receive_count" {
  description = "maxReceiveCount of the load queue's redrive policy (MICROBATCH_QUEUE__MAX_RECEIVES)."
  type        = number

  validation {
    condition     = var.queue_max_receive_count >= 1 && var.queue_max_receive_count <= 1000
    error_message = "queue_max_receive_count must be between 1 and 1000."
  }
}

variable "dlq_url" {
  description = "URL of the dead-letter queue (MICROBATCH_DLQ_URL)."
  type        = string
}

variable "dlq_arn" {
  description = "ARN of the dead-letter queue."
  type        = string
}

variable "lease_table_name" {
  description = "Name of the lease table (MICROBATCH_LEASE_TABLE)."
  type        = string
}

variable "lease_table_arn" {
  description = "ARN of the lease table."
  type        = string
}

variable "lease_table_kms_key_arn" {
  description = "ARN of the lease table's KMS key."
  type        = string
}

variable "warehouse_secret_arn" {
  description = "ARN of the warehouse secret."
  type        = string
}

variable "warehouse_url_secret_value_from" {
  description = "ECS valueFrom of the warehouse URL (secret ARN followed by :url::), injected as MICROBATCH_WAREHOUSE_URL."
  type        = string
}

variable "warehouse_secret_kms_key_arn" {
  description = "ARN of the KMS key encrypting the warehouse secret."
  type        = string
}

variable "warehouse_port" {
  description = "Port of the warehouse; the importer may connect to it inside the VPC."
  type        = number
  default     = 5439
}

variable "redshift_copy_role_arn" {
  description = "ARN of the role Redshift assumes for COPY (MICROBATCH_REDSHIFT_IAM_ROLE)."
  type        = string
}

variable "redshift_data_api_resource_arns" {
  description = "ARNs of the Redshift Serverless workgroup or cluster (and its dbuser ARN for GetClusterCredentials) the importer reaches through the Data API, for a redshift-data:// warehouse URL; empty: no Data API permissions."
  type        = list(string)
  default     = []
}

variable "extra_environment" {
  description = "More environment variables for every task (e.g. RUST_LOG, or MICROBATCH_* settings of the TOML file). They cannot replace the ones this module sets."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : can(regex("^[A-Z_][A-Z0-9_]*$", k))])
    error_message = "extra_environment keys must be upper-case environment variable names."
  }
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted webhook secret can still be restored; 0 deletes at once."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_in_days == 0 || (var.secret_recovery_window_in_days >= 7 && var.secret_recovery_window_in_days <= 30)
    error_message = "secret_recovery_window_in_days must be 0 or between 7 and 30."
  }
}

variable "kms_key_deletion_window_in_days" {
  description = "Waiting period before the services' KMS key (logs, webhook secret) is deleted after destroy."
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
