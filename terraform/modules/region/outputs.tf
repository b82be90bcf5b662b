output "cluster_name" {
  description = "The EKS cluster: `aws eks update-kubeconfig --region <region> --name <this>`."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "The EKS API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_ca_certificate" {
  description = "The EKS cluster's CA certificate (base64)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "vpc_id" {
  description = "The region's VPC."
  value       = aws_vpc.this.id
}

output "api_url" {
  description = "This region's public API base URL."
  value       = local.endpoints.api_url
}

output "catalog_endpoint" {
  description = "The catalog instance in this region: the primary on the hub, a read replica elsewhere (the failover target)."
  value       = local.is_hub ? aws_db_instance.catalog[0].address : aws_db_instance.catalog_replica[0].address
}

output "catalog_instance_id" {
  description = "RDS identifier of this region's catalog instance (promote it in a regional failover)."
  value       = local.is_hub ? aws_db_instance.catalog[0].identifier : aws_db_instance.catalog_replica[0].identifier
}

output "shards" {
  description = "This region's shards: RDS endpoint and identifier, org-id range."
  value = {
    for name, db in aws_db_instance.shard : name => {
      endpoint   = db.address
      identifier = db.identifier
      id_start   = local.my_shards[name].id_start
      id_end     = local.my_shards[name].id_end
    }
  }
}

output "redis_endpoint" {
  description = "ElastiCache primary endpoint."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "health_check_id" {
  description = "Route 53 health check of this region's API (drives the global records)."
  value       = aws_route53_health_check.api.id
}

output "ingress_load_balancer" {
  description = "DNS name of the load balancer in front of the API."
  value       = data.aws_lb.ingress.dns_name
}
