# Redis (rate limits, quotas): ElastiCache with a replica in another zone, TLS and an
# auth token, encrypted at rest.

resource "aws_elasticache_subnet_group" "this" {
  name       = local.name
  subnet_ids = aws_subnet.private[*].id
  tags       = local.tags
}

resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "Redis of Switchyard ${var.region}: reachable from the region's VPC only"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  security_group_id = aws_security_group.redis.id
  description       = "Redis from the region's VPC"
  cidr_ipv4         = local.cidr
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "random_password" "redis" {
  length  = 48
  special = false
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id       = local.name
  description                = "Switchyard ${var.region} rate limits and quotas"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis.node_type
  num_cache_clusters         = var.redis.num_cache_nodes
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.redis.id]
  automatic_failover_enabled = true
  multi_az_enabled           = true
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.this.arn
  transit_encryption_enabled = true
  auth_token                 = random_password.redis.result
  snapshot_retention_limit   = 7
  snapshot_window            = "02:00-03:00"
  maintenance_window         = "sun:05:30-sun:06:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = local.tags
}
