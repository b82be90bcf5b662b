output "region_names" {
  description = "The regions, sorted."
  value       = local.region_names
}

output "hub_region" {
  description = "The region of the catalog primary and the NATS leafnode hub."
  value       = var.hub_region
}

output "traffic_weights" {
  description = "Route 53 weight of each region's webhook endpoint (percent)."
  value       = { for name, r in var.regions : name => r.traffic_weight }
}

output "shards" {
  description = "Every shard: region, index, global number, org-id range [id_start, id_end), database identifier and name, size."
  value       = local.shards
}

output "shards_by_region" {
  description = "Shard names of each region."
  value       = local.shards_by_region
}

output "leafnode_remotes" {
  description = "For each region, the regions its NATS cluster solicits leafnode connections to."
  value       = local.leafnode_remotes
}

output "leafnode_links" {
  description = "Every leafnode connection, spoke to hub."
  value       = local.leafnode_links
}

output "peerings" {
  description = "VPC peering of each spoke region with the hub (spoke => hub)."
  value       = local.peerings
}

output "catalog" {
  description = "Where the catalog primary and its cross-region read replicas live."
  value = {
    primary_region  = var.hub_region
    replica_regions = local.catalog_replica_regions
  }
}

output "endpoints" {
  description = "Host names of each region: its API, and its NATS leafnode listener (used on the hub)."
  value       = local.endpoints
}

output "global_hosts" {
  description = "The global API (latency-routed) and webhook (weighted) host names."
  value = {
    api   = "api.${var.domain}"
    hooks = "hooks.${var.domain}"
  }
}
