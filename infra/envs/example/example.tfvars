# Copy to terraform.tfvars and fill in. Everything else has a default
# (variables.tf).
region             = "eu-west-1"
name               = "microbatch-example"
vpc_id             = "vpc-0123456789abcdef0"
private_subnet_ids = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2", "subnet-0aaaaaaaaaaaaaaa3"]
public_subnet_ids  = ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]
certificate_arn    = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"

alarm_email_addresses = ["data-oncall@example.com"]
image_tag             = "0.1.0"
warehouse_mode        = "serverless"
