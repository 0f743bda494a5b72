################################################################################
# Execution roles: pull the image, write the logs, read this service's secrets
################################################################################

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  for_each = local.services

  name_prefix        = "${var.name}-${each.key}-exec-"
  description        = "ECS execution role of ${var.name} ${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(var.tags, { Service = each.key })
}

resource "aws_iam_role_policy_attachment" "execution" {
  for_each = local.services

  role       = aws_iam_role.execution[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_produce" {
  statement {
    sid       = "ReadProducerSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.webhook.arn, aws_secretsmanager_secret.api_tokens.arn]
  }

  statement {
    sid       = "DecryptProducerSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "execution_import" {
  statement {
    sid       = "ReadWarehouseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.warehouse_secret_arn]
  }

  statement {
    sid       = "DecryptWarehouseSecret"
    actions   = ["kms:Decrypt"]
    resources = [var.warehouse_secret_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
}

locals {
  execution_policies = {
    produce = data.aws_iam_policy_document.execution_produce.json
    import  = data.aws_iam_policy_document.execution_import.json
  }
}

resource "aws_iam_role_policy" "execution" {
  for_each = local.execution_policies

  name   = "read-secrets"
  role   = aws_iam_role.execution[each.key].id
  policy = each.value
}

################################################################################
# Task roles: least privilege per service
################################################################################

# produce: put records into the stream.
data "aws_iam_policy_document" "task_produce" {
  statement {
    sid       = "PutRecords"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
    resources = [var.stream_arn]
  }

  statement {
    sid       = "EncryptRecords"
    actions   = ["kms:GenerateDataKey"]
    resources = [var.stream_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${local.region}.amazonaws.com"]
    }
  }
}

# consume: read the stream, hold leases and checkpoints, write batches and rejects.
data "aws_iam_policy_document" "task_consume" {
  statement {
    sid = "ReadStream"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:ListShards",
    ]
    resources = [var.stream_arn]
  }

  statement {
    sid       = "DecryptRecords"
    actions   = ["kms:Decrypt"]
    resources = [var.stream_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid = "LeasesAndCheckpoints"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
      "dynamodb:Scan",
    ]
    resources = [var.lease_table_arn, "${var.lease_table_arn}/index/*"]
  }

  statement {
    sid       = "LeaseTableKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.lease_table_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid     = "WriteBatchesSchemasAndRejects"
    actions = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [
      "${var.bucket_arn}/${var.loads_prefix}*",
      "${var.bucket_arn}/${var.schemas_prefix}*",
      "${var.bucket_arn}/${var.rejected_prefix}*",
    ]
  }

  # HeadBucket, for `microbatch check`.
  statement {
    sid       = "ProbeBucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }

  statement {
    sid       = "EncryptBatches"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.bucket_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

# import: take notifications, read batch metadata and schema objects, keep refused rows under
# rejected/rows/, write COPY manifests under copy-manifests/, dead-letter poison batches. COPY
# itself reads S3 with the Redshift role. With a redshift-data:// warehouse URL, also the Data API.
data "aws_iam_policy_document" "task_import" {
  statement {
    sid = "ConsumeLoadQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [var.queue_arn]
  }

  # Dead-lettering sends to the DLQ; `microbatch dlq list` / `replay`, run in the import task
  # (ECS exec), receive, re-hide and delete there and send back to the load queue.
  statement {
    sid = "DeadLetter"
    actions = [
      "sqs:SendMessage",
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [var.dlq_arn]
  }

  statement {
    sid       = "ReplayToLoadQueue"
    actions   = ["sqs:SendMessage"]
    resources = [var.queue_arn]
  }

  statement {
    sid       = "ReadBatchesAndSchemas"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/${var.loads_prefix}*", "${var.bucket_arn}/${var.schemas_prefix}*"]
  }

  # Without ListBucket, S3 answers a read of a missing key with 403 instead of 404: the importer
  # could not tell a batch not yet visible from a denial. Also what HeadBucket (`microbatch
  # check`) needs.
  statement {
    sid       = "TellMissingObjects"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }

  statement {
    sid       = "KeepRefusedRows"
    actions   = ["s3:PutObject"]
    resources = ["${var.bucket_arn}/${var.rejected_prefix}rows/*"]
  }

  # One manifest per table and load (and `microbatch check --warehouse`'s one-row object); the
  # prefix is fixed in the binary.
  statement {
    sid       = "WriteCopyManifests"
    actions   = ["s3:PutObject"]
    resources = ["${var.bucket_arn}/copy-manifests/*"]
  }

  # The Redshift Data API (redshift-data:// URLs): statements on the named workgroup or cluster;
  # describing, reading and cancelling are limited by AWS to the statements this role ran.
  dynamic "statement" {
    for_each = length(var.redshift_data_api_resource_arns) > 0 ? [1] : []
    content {
      sid       = "RunWarehouseStatements"
      actions   = ["redshift-data:BatchExecuteStatement", "redshift-data:ExecuteStatement"]
      resources = var.redshift_data_api_resource_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.redshift_data_api_resource_arns) > 0 ? [1] : []
    content {
      sid = "FollowWarehouseStatements"
      actions = [
        "redshift-data:DescribeStatement",
        "redshift-data:GetStatementResult",
        "redshift-data:CancelStatement",
      ]
      resources = ["*"]
    }
  }

  # Temporary database credentials for the Data API without a secret (IAM identity on
  # Serverless, db_user on a cluster).
  dynamic "statement" {
    for_each = length(var.redshift_data_api_resource_arns) > 0 ? [1] : []
    content {
      sid       = "WarehouseCredentials"
      actions   = ["redshift-serverless:GetCredentials", "redshift:GetClusterCredentials"]
      resources = var.redshift_data_api_resource_arns
    }
  }

  statement {
    sid       = "ListBatches"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.loads_prefix}*"]
    }
  }

  statement {
    sid       = "DecryptBatches"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.bucket_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

locals {
  task_policies = {
    produce = data.aws_iam_policy_document.task_produce.json
    consume = data.aws_iam_policy_document.task_consume.json
    import  = data.aws_iam_policy_document.task_import.json
  }
}

resource "aws_iam_role" "task" {
  for_each = local.services

  name_prefix        = "${var.name}-${each.key}-task-"
  description        = "Task role of ${var.name} ${each.key}"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(var.tags, { Service = each.key })
}

resource "aws_iam_role_policy" "task" {
  for_each = local.task_policies

  name   = "${each.key}-least-privilege"
  role   = aws_iam_role.task[each.key].id
  policy = each.value
}
