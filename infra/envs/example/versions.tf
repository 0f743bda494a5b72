terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.59, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5, < 4.0"
    }
  }

  # Keep state remote and encrypted: it holds the generated warehouse password.
  # Fill in and uncomment, then `terraform init -migrate-state`.
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "microbatch/example.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true    # Terraform >= 1.10; before: dynamodb_table = "terraform-locks"
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Application = "microbatch"
      Environment = var.name
      ManagedBy   = "terraform"
    })
  }
}
