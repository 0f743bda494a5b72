variable "name" {
  description = "Name of the lease table (MICROBATCH_LEASE_TABLE). KCL names it after the consumer application."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.-]{3,255}$", var.name))
    error_message = "name must be 3-255 characters of [a-zA-Z0-9_.-]."
  }
}

variable "lease_owner_index" {
  description = "Create KCL 3's global secondary index LeaseOwnerToLeaseKeyIndex (partition key leaseOwner), so a worker lists its own leases with a Query instead of a Scan."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the table (and so every shard checkpoint) from deletion. Deleting it makes the consumer start again from its initial position."
  type        = bool
  default     = true
}

variable "kms_key_deletion_window_in_days" {
  description = "Waiting period before the table's KMS key is deleted after destroy."
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
