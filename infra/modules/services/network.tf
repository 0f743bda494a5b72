data "aws_vpc" "this" {
  id = var.vpc_id
}

################################################################################
# Security groups
################################################################################

locals {
  security_groups = {
    alb     = "Producer load balancer: HTTPS in from the webhook senders"
    produce = "microbatch produce: the load balancer in, AWS APIs out"
    consume = "microbatch consume: AWS APIs out"
    import  = "microbatch import: AWS APIs and the warehouse out"
  }
}

resource "aws_security_group" "this" {
  for_each = local.security_groups

  name_prefix = "${var.name}-${each.key}-"
  description = each.value
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-${each.key}" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = toset(var.ingress_cidr_blocks)

  security_group_id = aws_security_group.this["alb"].id
  description       = "HTTPS from webhook senders"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_produce" {
  security_group_id            = aws_security_group.this["alb"].id
  description                  = "To the producer tasks"
  ip_protocol                  = "tcp"
  from_port                    = var.producer_port
  to_port                      = var.producer_port
  referenced_security_group_id = aws_security_group.this["produce"].id
}

resource "aws_vpc_security_group_ingress_rule" "produce_from_alb" {
  security_group_id            = aws_security_group.this["produce"].id
  description                  = "From the load balancer (traffic and /readyz health checks)"
  ip_protocol                  = "tcp"
  from_port                    = var.producer_port
  to_port                      = var.producer_port
  referenced_security_group_id = aws_security_group.this["alb"].id
}

# Tasks call AWS APIs (Kinesis, S3, SQS, DynamoDB, ECR, Logs, Secrets Manager)
# over HTTPS, through a NAT gateway or VPC endpoints.
resource "aws_vpc_security_group_egress_rule" "https" {
  for_each = toset(["produce", "consume", "import"])

  security_group_id = aws_security_group.this[each.key].id
  description       = "HTTPS to AWS APIs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "import_to_warehouse" {
  security_group_id = aws_security_group.this["import"].id
  description       = "To the warehouse inside the VPC"
  ip_protocol       = "tcp"
  from_port         = var.warehouse_port
  to_port           = var.warehouse_port
  cidr_ipv4         = data.aws_vpc.this.cidr_block
}

################################################################################
# Producer load balancer
################################################################################

resource "aws_lb" "produce" {
  name                       = "${var.name}-produce"
  load_balancer_type         = "application"
  internal                   = var.alb_internal
  subnets                    = var.alb_subnet_ids
  security_groups            = [aws_security_group.this["alb"].id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection

  dynamic "access_logs" {
    for_each = var.alb_access_logs_bucket == null ? [] : [var.alb_access_logs_bucket]

    content {
      bucket  = access_logs.value
      prefix  = "alb/${var.name}"
      enabled = true
    }
  }

  tags = var.tags
}

resource "aws_lb_target_group" "produce" {
  name                 = "${var.name}-produce"
  port                 = var.producer_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  # Ready means: the stream accepts puts. A producer that is not ready gets no
  # traffic, rather than answering 503 to every event.
  health_check {
    enabled             = true
    path                = "/readyz"
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.produce.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.produce.arn
  }

  tags = var.tags
}

resource "aws_wafv2_web_acl_association" "produce" {
  count = var.web_acl_arn == null ? 0 : 1

  resource_arn = aws_lb.produce.arn
  web_acl_arn  = var.web_acl_arn
}
