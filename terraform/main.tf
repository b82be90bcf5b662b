# Switchyard in several regions. Every region's apply reads the same `regions` variable;
# the topology module turns it into the shared plan (hub, weights, shards and their id
# ranges, leafnode star), and the region module builds the one region this apply is for.

locals {
  region = var.region != "" ? var.region : terraform.workspace
}

module "topology" {
  source = "./modules/topology"

  regions    = var.regions
  hub_region = var.hub_region
  domain     = var.domain
}

data "aws_route53_zone" "this" {
  name         = var.domain
  private_zone = false
}

module "region" {
  source = "./modules/region"
  providers = {
    aws     = aws
    aws.hub = aws.hub
  }

  region           = local.region
  topology         = module.topology
  regions          = var.regions
  zone_id          = data.aws_route53_zone.this.zone_id
  eks              = var.eks
  catalog          = var.catalog
  redis            = var.redis
  nats             = var.nats
  switchyard       = var.switchyard
  app_secrets_name = var.app_secrets_name
  tags             = var.tags
}

check "region_is_listed" {
  assert {
    condition     = contains(keys(var.regions), local.region)
    error_message = "The workspace (or var.region) ${local.region} is not a key of var.regions."
  }
}
