locals {
  name        = "switchyard-${var.region}"
  is_hub      = var.region == var.topology.hub_region
  cidr        = var.regions[var.region].cidr
  hub_cidr    = var.regions[var.topology.hub_region].cidr
  spoke_cidrs = [for name, r in var.regions : r.cidr if name != var.topology.hub_region]
  # Networks that reach this region's private services: itself, and on the hub every
  # spoke (catalog primary, NATS leafnodes).
  trusted_cidrs = local.is_hub ? concat([local.cidr], local.spoke_cidrs) : [local.cidr]
  my_shards     = { for name in var.topology.shards_by_region[var.region] : name => var.topology.shards[name] }
  endpoints     = var.topology.endpoints[var.region]
  azs           = slice(data.aws_availability_zones.available.names, 0, 3)

  tags = merge(var.tags, {
    "switchyard:region" = var.region
    "managed-by"        = "terraform"
  })
}

data "aws_availability_zones" "available" {
  # checkov:skip=CKV_AWS_394: only the first three zones are used (slice), and names sort stably, so a zone AWS adds later changes no subnet
  state = "available"
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}
