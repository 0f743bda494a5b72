data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "kms" {
  # The account administers the key through IAM; the consumer's task role
  # gets kms:Decrypt/Encrypt/GenerateDataKey via DynamoDB only.
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Encrypts the ${var.name} lease table"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-leases"
  target_key_id = aws_kms_key.this.key_id
}

# The KCL lease-table schema: one item per shard, keyed by leaseKey (the shard
# id), with leaseOwner, leaseCounter, checkpoint, checkpointSubSequenceNumber,
# ownerSwitchesSinceCheckpoint, parentShardId... as plain attributes. Only key
# attributes are declared in DynamoDB.
resource "aws_dynamodb_table" "this" {
  name                        = var.name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "leaseKey"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "leaseKey"
    type = "S"
  }

  dynamic "attribute" {
    for_each = var.lease_owner_index ? ["leaseOwner"] : []

    content {
      name = attribute.value
      type = "S"
    }
  }

  dynamic "global_secondary_index" {
    for_each = var.lease_owner_index ? ["LeaseOwnerToLeaseKeyIndex"] : []

    content {
      name            = global_secondary_index.value
      hash_key        = "leaseOwner"
      projection_type = "KEYS_ONLY"
    }
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.this.arn
  }

  tags = var.tags
}
