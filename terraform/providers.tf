# Terraform cannot create providers from a variable, so one apply deploys one region:
# `region` (the workspace name by default) picks it from `regions`. `aws.hub` reaches the
# hub region for what only it holds (the catalog primary, the core network).

provider "aws" {
  region = local.region
  default_tags {
    tags = var.tags
  }
}

provider "aws" {
  alias  = "hub"
  region = var.hub_region
  default_tags {
    tags = var.tags
  }
}

# The cluster is created by this same apply; the providers authenticate with short-lived
# tokens from the AWS CLI, so nothing long-lived lands in the state.
provider "kubernetes" {
  host                   = module.region.cluster_endpoint
  cluster_ca_certificate = base64decode(module.region.cluster_ca_certificate)
  exec {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--region", local.region, "--cluster-name", module.region.cluster_name]
  }
}

provider "helm" {
  kubernetes = {
    host                   = module.region.cluster_endpoint
    cluster_ca_certificate = base64decode(module.region.cluster_ca_certificate)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--region", local.region, "--cluster-name", module.region.cluster_name]
    }
  }
}
