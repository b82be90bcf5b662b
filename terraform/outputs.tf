output "region" {
  description = "The region this state deploys."
  value       = local.region
}

output "kubeconfig_command" {
  description = "Points kubectl at this region's cluster."
  value       = "aws eks update-kubeconfig --region ${local.region} --name ${module.region.cluster_name}"
}

output "api_url" {
  description = "This region's API."
  value       = module.region.api_url
}

output "global_endpoints" {
  description = "The latency-routed API and the weighted webhook endpoint (set this one as the GitHub App's webhook URL, path /webhooks/github)."
  value = {
    api   = "https://${module.topology.global_hosts.api}"
    hooks = "https://${module.topology.global_hosts.hooks}/webhooks/github"
  }
}

output "hub_region" {
  description = "Where the catalog primary and the NATS hub live."
  value       = module.topology.hub_region
}

output "catalog" {
  description = "This region's catalog instance (primary on the hub, replica elsewhere)."
  value = {
    endpoint    = module.region.catalog_endpoint
    instance_id = module.region.catalog_instance_id
    is_primary  = local.region == var.hub_region
  }
}

output "shards" {
  description = "This region's shards: endpoint, RDS identifier, org-id range."
  value       = module.region.shards
}

output "all_shards" {
  description = "Every shard of every region with its org-id range (the catalog's shard map as planned)."
  value       = { for name, s in module.topology.shards : name => { region = s.region, id_start = s.id_start, id_end = s.id_end } }
}

output "traffic_weights" {
  description = "Webhook traffic weight of every region."
  value       = module.topology.traffic_weights
}

output "redis_endpoint" {
  description = "This region's Redis."
  value       = module.region.redis_endpoint
}

output "health_check_id" {
  description = "Route 53 health check of this region's API."
  value       = module.region.health_check_id
}
