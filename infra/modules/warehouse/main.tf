data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id   = data.aws_caller_identity.current.account_id
  partition    = data.aws_partition.current.partition
  region       = data.aws_region.current.id
  serverless   = var.mode == "serverless"
  provisioned  = var.mode == "provisioned"
  bucket_name  = element(split(":::", var.bucket_arn), 1)
  loads_prefix = var.loads_prefix
  # Where the importer writes COPY manifests (fixed in the binary: copy-manifests/).
  copy_manifests_prefix = "copy-manifests/"

  serverless_address = one(flatten([for w in aws_redshiftserverless_workgroup.this : w.endpoint[*].address]))
  cluster_address    = one(aws_redshift_cluster.this[*].dns_name)
  endpoint_address   = local.serverless ? local.serverless_address : local.cluster_address

  # The importer's connection string (MICROBATCH_WAREHOUSE_URL). The password is
  # alphanumeric, so it needs no percent-encoding.
  url = format(
    "redshift://%s:%s@%s:%d/%s?sslmode=require",
    var.admin_username,
    random_password.admin.result,
    local.endpoint_address,
    var.port,
    var.database_name,
  )
}

################################################################################
# KMS key for the warehouse and its secret
################################################################################

data "aws_iam_policy_document" "kms" {
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Encrypts the ${var.name} warehouse and its credentials"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-warehouse"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# Credentials
################################################################################

resource "random_password" "admin" {
  length      = 40
  special     = false
  min_upper   = 2
  min_lower   = 2
  min_numeric = 2
}

resource "aws_secretsmanager_secret" "this" {
  name                    = "${var.name}/warehouse"
  description             = "Admin credentials of the ${var.name} warehouse; key url is MICROBATCH_WAREHOUSE_URL"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

# The keys username/password/engine/host/port/dbname follow the Redshift secret
# format, so the Redshift Data API and Query Editor v2 can use this secret too.
resource "aws_secretsmanager_secret_version" "this" {
  secret_id = aws_secretsmanager_secret.this.id
  secret_string = jsonencode({
    engine              = "redshift"
    host                = local.endpoint_address
    port                = var.port
    dbname              = var.database_name
    username            = var.admin_username
    password            = random_password.admin.result
    dbClusterIdentifier = local.provisioned ? var.name : null
    url                 = local.url
  })
}

################################################################################
# Network
################################################################################

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-warehouse-"
  description = "Redshift ${var.name}: the importer in, S3 out for COPY"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-warehouse" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "allowed" {
  for_each = var.allowed_security_group_ids

  security_group_id            = aws_security_group.this.id
  description                  = "Warehouse port from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = var.port
  to_port                      = var.port
  referenced_security_group_id = each.value
}

# With enhanced VPC routing, COPY reaches S3 through the VPC: an S3 gateway
# endpoint or a NAT gateway, over HTTPS.
resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.this.id
  description       = "HTTPS to S3 for COPY"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

################################################################################
# COPY role: reads only the bucket's loads/ prefix and the COPY manifests
################################################################################

# Only a cluster or namespace of this account can use the role: attaching it
# needs iam:PassRole on it, which no other account can be granted.
data "aws_iam_policy_document" "copy_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["redshift.amazonaws.com", "redshift-serverless.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "copy" {
  name_prefix        = "${substr(var.name, 0, 26)}-copy-"
  description        = "Assumed by Redshift for COPY from s3://${local.bucket_name}/${local.loads_prefix}"
  assume_role_policy = data.aws_iam_policy_document.copy_assume.json
  tags               = var.tags
}

# The importer lists each COPY's objects in a manifest under copy-manifests/ (a prefix fixed in
# the binary, outside loads/ so that no notification fires); COPY reads it, then the objects.
data "aws_iam_policy_document" "copy" {
  statement {
    sid       = "ReadBatchesAndCopyManifests"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/${local.loads_prefix}*", "${var.bucket_arn}/${local.copy_manifests_prefix}*"]
  }

  statement {
    sid       = "ListBatches"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.loads_prefix}*", "${local.copy_manifests_prefix}*"]
    }
  }

  statement {
    sid       = "DecryptBatchesThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [var.bucket_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "copy" {
  name   = "copy-from-loads"
  role   = aws_iam_role.copy.id
  policy = data.aws_iam_policy_document.copy.json
}

################################################################################
# Serverless
################################################################################

resource "aws_redshiftserverless_namespace" "this" {
  count = local.serverless ? 1 : 0

  namespace_name       = var.name
  db_name              = var.database_name
  admin_username       = var.admin_username
  admin_user_password  = random_password.admin.result
  kms_key_id           = aws_kms_key.this.arn
  iam_roles            = [aws_iam_role.copy.arn]
  default_iam_role_arn = aws_iam_role.copy.arn
  log_exports          = ["connectionlog", "userlog", "useractivitylog"]
  tags                 = var.tags
}

resource "aws_redshiftserverless_workgroup" "this" {
  count = local.serverless ? 1 : 0

  namespace_name       = aws_redshiftserverless_namespace.this[0].namespace_name
  workgroup_name       = var.name
  base_capacity        = var.serverless_base_capacity
  max_capacity         = var.serverless_max_capacity
  port                 = var.port
  subnet_ids           = var.subnet_ids
  security_group_ids   = [aws_security_group.this.id]
  publicly_accessible  = false
  enhanced_vpc_routing = true

  config_parameter {
    parameter_key   = "require_ssl"
    parameter_value = "true"
  }

  config_parameter {
    parameter_key   = "enable_user_activity_logging"
    parameter_value = "true"
  }

  tags = var.tags
}

################################################################################
# Provisioned
################################################################################

resource "aws_redshift_subnet_group" "this" {
  count = local.provisioned ? 1 : 0

  name       = var.name
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_redshift_parameter_group" "this" {
  count = local.provisioned ? 1 : 0

  name   = var.name
  family = "redshift-1.0"

  parameter {
    name  = "require_ssl"
    value = "true"
  }

  parameter {
    name  = "enable_user_activity_logging"
    value = "true"
  }

  tags = var.tags
}

resource "aws_redshift_cluster" "this" {
  count = local.provisioned ? 1 : 0

  cluster_identifier                  = var.name
  database_name                       = var.database_name
  master_username                     = var.admin_username
  master_password                     = random_password.admin.result
  node_type                           = var.node_type
  cluster_type                        = var.number_of_nodes > 1 ? "multi-node" : "single-node"
  number_of_nodes                     = var.number_of_nodes
  port                                = var.port
  encrypted                           = true
  kms_key_id                          = aws_kms_key.this.arn
  publicly_accessible                 = false
  enhanced_vpc_routing                = true
  vpc_security_group_ids              = [aws_security_group.this.id]
  cluster_subnet_group_name           = aws_redshift_subnet_group.this[0].name
  cluster_parameter_group_name        = aws_redshift_parameter_group.this[0].name
  iam_roles                           = [aws_iam_role.copy.arn]
  default_iam_role_arn                = aws_iam_role.copy.arn
  allow_version_upgrade               = true
  automated_snapshot_retention_period = var.automated_snapshot_retention_days
  skip_final_snapshot                 = var.skip_final_snapshot
  final_snapshot_identifier           = var.skip_final_snapshot ? null : "${var.name}-final"
  tags                                = var.tags
}

resource "aws_redshift_logging" "this" {
  count = local.provisioned ? 1 : 0

  cluster_identifier   = aws_redshift_cluster.this[0].id
  log_destination_type = "cloudwatch"
  log_exports          = ["connectionlog", "userlog", "useractivitylog"]
}
