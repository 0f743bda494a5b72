data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  bucket_name = "${var.name}-batches-${data.aws_caller_identity.current.account_id}"
}

################################################################################
# Image repository (push the image here before the services can start)
################################################################################

data "aws_iam_policy_document" "ecr_kms" {
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

resource "aws_kms_key" "ecr" {
  description             = "Encrypts the ${var.name} image repository"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.ecr_kms.json
}

resource "aws_ecr_repository" "microbatch" {
  name                 = "${var.name}/microbatch"
  image_tag_mutability = "IMMUTABLE"
  force_delete         = !var.protect_data

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.ecr.arn
  }
}

resource "aws_ecr_lifecycle_policy" "microbatch" {
  repository = aws_ecr_repository.microbatch.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last 30 images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 30 }
      action       = { type = "expire" }
    }]
  })
}

################################################################################
# Pipeline
################################################################################

module "stream" {
  source = "../../modules/stream"

  name        = var.name
  stream_mode = var.stream_mode
  shard_count = var.shard_count
}

module "batch_store" {
  source = "../../modules/batch-store"

  name                  = var.name
  bucket_name           = local.bucket_name
  force_destroy         = !var.protect_data
  loads_expiration_days = var.loads_expiration_days
  max_receive_count     = var.max_receive_count
  max_load_seconds      = var.max_load_seconds
}

module "lease_table" {
  source = "../../modules/lease-table"

  name                = "${var.name}-consumer"
  deletion_protection = var.protect_data
}

module "warehouse" {
  source = "../../modules/warehouse"

  name                = var.name
  mode                = var.warehouse_mode
  vpc_id              = var.vpc_id
  subnet_ids          = var.private_subnet_ids
  bucket_arn          = module.batch_store.bucket_arn
  loads_prefix        = module.batch_store.loads_prefix
  bucket_kms_key_arn  = module.batch_store.kms_key_arn
  skip_final_snapshot = !var.protect_data

  allowed_security_group_ids = {
    import = module.services.import_security_group_id
  }
}

module "services" {
  source = "../../modules/services"

  name               = var.name
  image              = "${aws_ecr_repository.microbatch.repository_url}:${var.image_tag}"
  cpu_architecture   = var.cpu_architecture
  config_file        = var.config_file
  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids

  alb_subnet_ids          = var.public_subnet_ids
  certificate_arn         = var.certificate_arn
  ingress_cidr_blocks     = var.ingress_cidr_blocks
  alb_deletion_protection = var.protect_data

  produce_desired_count = var.produce_desired_count
  consume_desired_count = var.consume_desired_count
  log_retention_days    = var.log_retention_days

  stream_name        = module.stream.name
  stream_arn         = module.stream.arn
  stream_kms_key_arn = module.stream.kms_key_arn

  bucket_name        = module.batch_store.bucket_name
  bucket_arn         = module.batch_store.bucket_arn
  bucket_kms_key_arn = module.batch_store.kms_key_arn
  loads_prefix       = module.batch_store.loads_prefix
  rejected_prefix    = module.batch_store.rejected_prefix
  queue_url          = module.batch_store.queue_url
  queue_arn          = module.batch_store.queue_arn
  dlq_url            = module.batch_store.dlq_url
  dlq_arn            = module.batch_store.dlq_arn

  queue_visibility_timeout_seconds = module.batch_store.visibility_timeout_seconds
  queue_max_receive_count          = module.batch_store.max_receive_count

  lease_table_name        = module.lease_table.name
  lease_table_arn         = module.lease_table.arn
  lease_table_kms_key_arn = module.lease_table.kms_key_arn

  warehouse_secret_arn            = module.warehouse.secret_arn
  warehouse_url_secret_value_from = module.warehouse.url_secret_value_from
  warehouse_secret_kms_key_arn    = module.warehouse.secret_kms_key_arn
  warehouse_port                  = module.warehouse.port
  redshift_copy_role_arn          = module.warehouse.copy_role_arn
}

module "monitoring" {
  source = "../../modules/monitoring"

  name                    = var.name
  alarm_email_addresses   = var.alarm_email_addresses
  stream_name             = module.stream.name
  dlq_name                = module.batch_store.dlq_name
  alb_arn_suffix          = module.services.alb_arn_suffix
  freshness_p99_target_ms = var.freshness_p99_target_ms
}
