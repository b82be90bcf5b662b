# The multi-region layout as data: which region is the hub, how webhook traffic is
# weighted, which shards exist and which org ids each one owns, which NATS leafnode
# connections join the regions. Every region's stack computes the same answer from the
# same `regions` variable.

locals {
  region_names = sort(keys(var.regions))

  # Shards: `<region>-<index>`. A shard's id range depends only on its region's fixed
  # id_block and its own index, so adding a region or a shard never moves an existing range.
  shards = merge([
    for region, r in var.regions : {
      for i in range(r.shards.count) : "${region}-${i}" => {
        region            = region
        index             = i
        number            = r.id_block * var.max_shards_per_region + i
        id_start          = var.first_org_id + (r.id_block * var.max_shards_per_region + i) * var.ids_per_shard
        id_end            = var.first_org_id + (r.id_block * var.max_shards_per_region + i + 1) * var.ids_per_shard
        db_identifier     = "switchyard-shard-${region}-${i}"
        db_name           = "switchyard_shard_${replace(region, "-", "_")}_${i}"
        instance_class    = r.shards.instance_class
        allocated_storage = r.shards.allocated_storage
      }
    }
  ]...)

  shards_by_region = {
    for region in local.region_names : region => sort([for name, s in local.shards : name if s.region == region])
  }

  # NATS: leafnode connections must form an acyclic graph, so the regions form a star
  # around the hub: every other region solicits one leafnode connection to it. Traffic
  # between two spokes crosses the hub.
  leafnode_remotes = {
    for region in local.region_names : region => region == var.hub_region ? [] : [var.hub_region]
  }
  leafnode_links = [for region in local.region_names : { from = region, to = var.hub_region } if region != var.hub_region]

  # The same star carries the private network: each spoke VPC peers with the hub VPC.
  peerings = { for l in local.leafnode_links : l.from => l.to }

  catalog_replica_regions = [for region in local.region_names : region if region != var.hub_region]

  endpoints = {
    for region in local.region_names : region => {
      api_host  = "api.${region}.${var.domain}"
      api_url   = "https://api.${region}.${var.domain}"
      leaf_host = "leaf.${region}.${var.domain}"
    }
  }
}
