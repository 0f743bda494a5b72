data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.id

  services = toset(["produce", "consume", "import"])

  log_group_prefix = "/ecs/${var.name}"

  # Every service: JSON logs with CloudWatch Embedded Metric Format lines
  # (namespace Microbatch, dimension Service), see docs/METRICS.md.
  # MICROBATCH_<SECTION>__<KEY> names are the binary's generic settings
  # (adapters/src/config.rs); the others are the deployment's aliases.
  common_environment = merge(
    {
      AWS_REGION              = local.region
      MICROBATCH_CATALOG__DIR = var.catalog_dir
      # The only writable place: the root file system is read-only.
      MICROBATCH_DATA_DIR   = "/tmp/microbatch"
      MICROBATCH_LOG_FORMAT = "json"
      MICROBATCH_METRICS    = "emf"
    },
    var.config_file == null ? {} : { MICROBATCH_CONFIG = var.config_file },
  )

  environment = {
    produce = {
      MICROBATCH_STREAM__KIND     = "kinesis"
      MICROBATCH_STREAM_NAME      = var.stream_name
      MICROBATCH_PRODUCER__LISTEN = "0.0.0.0:${var.producer_port}"
    }
    consume = {
      MICROBATCH_STREAM__KIND = "kinesis"
      MICROBATCH_STREAM_NAME  = var.stream_name
      MICROBATCH_STORE__KIND  = "s3"
      MICROBATCH_BUCKET       = var.bucket_name
      MICROBATCH_LEASES__KIND = "dynamodb"
      MICROBATCH_LEASE_TABLE  = var.lease_table_name
    }
    import = {
      MICROBATCH_STORE__KIND            = "s3"
      MICROBATCH_BUCKET                 = var.bucket_name
      MICROBATCH_QUEUE__KIND            = "sqs"
      MICROBATCH_QUEUE_URL              = var.queue_url
      MICROBATCH_DLQ_URL                = var.dlq_url
      MICROBATCH_QUEUE__VISIBILITY_SECS = tostring(var.queue_visibility_timeout_seconds)
      MICROBATCH_QUEUE__MAX_RECEIVES    = tostring(var.queue_max_receive_count)
      MICROBATCH_REDSHIFT_IAM_ROLE      = var.redshift_copy_role_arn
    }
  }

  # Injected by ECS from Secrets Manager at task start; never in the task definition.
  secrets = {
    produce = {
      MICROBATCH_WEBHOOK_SECRETS  = aws_secretsmanager_secret.webhook.arn
      MICROBATCH_PRODUCER__TOKENS = aws_secretsmanager_secret.api_tokens.arn
    }
    consume = {}
    import  = { MICROBATCH_WAREHOUSE_URL = var.warehouse_url_secret_value_from }
  }

  container_environment = {
    for s in local.services : s => merge(var.extra_environment, local.common_environment, local.environment[s])
  }
}

################################################################################
# KMS key for the log groups and the webhook secret
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

  statement {
    sid       = "CloudWatchLogsEncryptsTheServiceLogGroups"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_prefix}/*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Encrypts the ${var.name} service logs and webhook secrets"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_in_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}-services"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# Producer secrets: webhook signing secrets and API tokens
################################################################################

# Webhook sources (path /v1/webhooks/<source>, signature scheme) are declared in
# the configuration file; this secret holds their signing secrets, a JSON
# object source -> [secret, ...]. It starts empty (no webhook source); put your
# senders' secrets in (docs/DEPLOY.md). Terraform does not overwrite them.
resource "aws_secretsmanager_secret" "webhook" {
  name                    = "${var.name}/webhook-secrets"
  description             = "Webhook signing secrets of the ${var.name} producer (MICROBATCH_WEBHOOK_SECRETS): JSON object, source -> [secret, ...]"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "webhook" {
  secret_id     = aws_secretsmanager_secret.webhook.id
  secret_string = jsonencode({})

  lifecycle {
    ignore_changes = [secret_string]
  }
}

# Bearer tokens accepted on POST /v1/events, a JSON array. Starts with one
# generated token; add and remove tokens out of band (docs/DEPLOY.md).
resource "random_password" "api_token" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "api_tokens" {
  name                    = "${var.name}/api-tokens"
  description             = "Bearer tokens of the ${var.name} producer's /v1/events (MICROBATCH_PRODUCER__TOKENS): JSON array of strings"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "api_tokens" {
  secret_id     = aws_secretsmanager_secret.api_tokens.id
  secret_string = jsonencode([random_password.api_token.result])

  lifecycle {
    ignore_changes = [secret_string]
  }
}

################################################################################
# Logs
################################################################################

resource "aws_cloudwatch_log_group" "this" {
  for_each = local.services

  name              = "${local.log_group_prefix}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = merge(var.tags, { Service = each.key })
}

################################################################################
# Cluster, task definitions, services
################################################################################

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_ecs_task_definition" "this" {
  for_each = local.services

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_size[each.key].cpu
  memory                   = var.task_size[each.key].memory
  execution_role_arn       = aws_iam_role.execution[each.key].arn
  task_role_arn            = aws_iam_role.task[each.key].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Scratch space on the task's ephemeral storage; the root filesystem is read-only.
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = "microbatch"
      image                  = var.image
      essential              = true
      command                = [each.key]
      readonlyRootFilesystem = true
      privileged             = false
      stopTimeout            = var.stop_timeout_seconds[each.key]
      linuxParameters        = { initProcessEnabled = true }

      portMappings = each.key == "produce" ? [{ containerPort = var.producer_port, protocol = "tcp" }] : []
      mountPoints  = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]

      environment = [
        for k in sort(keys(local.container_environment[each.key])) : { name = k, value = local.container_environment[each.key][k] }
      ]
      secrets = [
        for k in sort(keys(local.secrets[each.key])) : { name = k, valueFrom = local.secrets[each.key][k] }
      ]

      logConfiguration = {
        logDriver = "awslogs"
        options = {
          "awslogs-group"         = aws_cloudwatch_log_group.this[each.key].name
          "awslogs-region"        = local.region
          "awslogs-stream-prefix" = each.key
          # Metrics travel in the logs (EMF): never drop lines to keep up.
          "mode" = "blocking"
        }
      }
    }
  ])

  tags = merge(var.tags, { Service = each.key })
}

resource "aws_ecs_service" "produce" {
  name                              = "produce"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.this["produce"].arn
  desired_count                     = var.produce_desired_count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  health_check_grace_period_seconds = 30
  enable_ecs_managed_tags           = true
  propagate_tags                    = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.this["produce"].id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.produce.arn
    container_name   = "microbatch"
    container_port   = var.producer_port
  }

  tags = merge(var.tags, { Service = "produce" })

  depends_on = [aws_lb_listener.https, aws_iam_role_policy.task]
}

resource "aws_ecs_service" "consume" {
  name                    = "consume"
  cluster                 = aws_ecs_cluster.this.id
  task_definition         = aws_ecs_task_definition.this["consume"].arn
  desired_count           = var.consume_desired_count
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  # Old and new consumers may overlap during a deployment: shard leases in the
  # lease table keep each shard with one owner.
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.this["consume"].id]
    assign_public_ip = false
  }

  tags = merge(var.tags, { Service = "consume" })

  depends_on = [aws_iam_role_policy.task]
}

resource "aws_ecs_service" "import" {
  name                    = "import"
  cluster                 = aws_ecs_cluster.this.id
  task_definition         = aws_ecs_task_definition.this["import"].arn
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  # Exactly one importer, and never two at once, not even during a deployment:
  # the old task stops before the new one starts.
  desired_count                      = 1
  deployment_maximum_percent         = 100
  deployment_minimum_healthy_percent = 0

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.this["import"].id]
    assign_public_ip = false
  }

  tags = merge(var.tags, { Service = "import" })

  depends_on = [aws_iam_role_policy.task]
}
