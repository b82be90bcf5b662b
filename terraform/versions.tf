terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.38"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }

  # One state per region: `terraform workspace select <region>` (see README.md). The
  # bucket, table and key prefix come from `terraform init -backend-config=backend.hcl`.
  backend "s3" {
    workspace_key_prefix = "switchyard"
    key                  = "terraform.tfstate"
    encrypt              = true
  }
}
