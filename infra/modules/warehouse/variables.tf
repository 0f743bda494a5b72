variable "name" {
  description = "Identifier of the cluster or of the serverless namespace and workgroup; prefix of the role, secret and security group."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,50}[a-z0-9]$", var.name))
    error_message = "name must be lowercase letters, digits and hyphens, start with a letter, end with a letter or digit, at most 52 characters."
  }
}

variable "mode" {
  description = "serverless (Redshift Serverless namespace + workgroup) or provisioned (Redshift cluster)."
  type        = string
  default     = "serverless"

  validation {
    condition     = contains(["serverless", "provisioned"], var.mode)
    error_message = "mode must be serverless or provisioned."
  }
}

variable "database_name" {
  description = "Database the importer loads into."
  type        = string
  default     = "microbatch"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,63}$", var.database_name)) && var.database_name != "dev"
    error_message = "database_name must be a lowercase identifier of at most 64 characters, and not the default dev."
  }
}

variable "admin_username" {
  description = "Admin user. Its generated password is stored, with the URL the importer uses, in the warehouse secret."
  type        = string
  default     = "microbatch_admin"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,126}$", var.admin_username)) && !contains(["admin", "rdsadmin", "root", "public"], var.admin_username)
    error_message = "admin_username must be a lowercase identifier and not a reserved name."
  }
}

variable "port" {
  description = "Port the warehouse listens on."
  type        = number
  default     = 5439

  validation {
    condition     = var.port >= 1150 && var.port <= 65535
    error_message = "port must be between 1150 and 65535."
  }
}

variable "vpc_id" {
  description = "VPC of the warehouse and of the importer."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the warehouse. Redshift Serverless needs subnets in at least three Availability Zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold at least one subnet id (subnet-...)."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups admitted on the warehouse port, keyed by a static name (e.g. { import = sg-... }): the importer, a bastion."
  type        = map(string)
  default     = {}
}

variable "node_type" {
  description = "Node type of the provisioned cluster (mode = provisioned)."
  type        = string
  default     = "ra3.xlplus"

  validation {
    condition     = can(regex("^(ra3|dc2)\\.", var.node_type))
    error_message = "node_type must be an ra3.* or dc2.* node type."
  }
}

variable "number_of_nodes" {
  description = "Number of nodes of the provisioned cluster; 1 makes a single-node cluster."
  type        = number
  default     = 1

  validation {
    condition     = var.number_of_nodes >= 1 && var.number_of_nodes <= 128 && floor(var.number_of_nodes) == var.number_of_nodes
    error_message = "number_of_nodes must be a whole number between 1 and 128."
  }
}

variable "serverless_base_capacity" {
  description = "Base capacity of the serverless workgroup in RPUs (mode = serverless)."
  type        = number
  default     = 8

  validation {
    condition     = var.serverless_base_capacity >= 8 && var.serverless_base_capacity <= 1024 && var.serverless_base_capacity % 8 == 0
    error_message = "serverless_base_capacity must be a multiple of 8 between 8 and 1024."
  }
}

variable "serverless_max_capacity" {
  description = "Upper bound of the serverless workgroup in RPUs; null leaves it unbounded."
  type        = number
  default     = null

  validation {
    condition     = var.serverless_max_capacity == null ? true : (var.serverless_max_capacity >= 8 && var.serverless_max_capacity <= 5632 && var.serverless_max_capacity % 8 == 0)
    error_message = "serverless_max_capacity must be null or a multiple of 8 between 8 and 5632."
  }
}

variable "automated_snapshot_retention_days" {
  description = "Days automated snapshots of the provisioned cluster are kept."
  type        = number
  default     = 7

  validation {
    condition     = var.automated_snapshot_retention_days >= 1 && var.automated_snapshot_retention_days <= 35
    error_message = "automated_snapshot_retention_days must be between 1 and 35."
  }
}

variable "skip_final_snapshot" {
  description = "Destroy the provisioned cluster without a final snapshot. Keep false outside throwaway environments."
  type        = bool
  default     = false
}

variable "bucket_arn" {
  description = "ARN of the batch bucket that COPY reads from."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9.-]+$", var.bucket_arn))
    error_message = "bucket_arn must be an S3 bucket ARN."
  }
}

variable "loads_prefix" {
  description = "The only key prefix the COPY role may read."
  type        = string
  default     = "loads/"

  validation {
    condition     = can(regex("^[a-z0-9_-]+/$", var.loads_prefix))
    error_message = "loads_prefix must be one path segment ending in a slash, e.g. loads/."
  }
}

variable "bucket_kms_key_arn" {
  description = "ARN of the KMS key encrypting the batch objects; the COPY role may decrypt with it through S3 only."
  type        = string
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted warehouse secret can still be restored; 0 deletes at once."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_in_days == 0 || (var.secret_recovery_window_in_days >= 7 && var.secret_recovery_window_in_days <= 30)
    error_message = "secret_recovery_window_in_days must be 0 or between 7 and 30."
  }
}

variable "kms_key_deletion_window_in_days" {
  description = "Waiting period before the warehouse's KMS key is deleted after destroy."
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
