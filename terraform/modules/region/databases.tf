# PostgreSQL: the catalog (primary in the hub region, a cross-region read replica in every
# other region, ready to be promoted) and this region's shard databases. All Multi-AZ,
# encrypted, TLS-only, with point-in-time recovery.

resource "aws_db_subnet_group" "this" {
  name       = local.name
  subnet_ids = aws_subnet.private[*].id
  tags       = local.tags
}

resource "aws_security_group" "postgres" {
  name        = "${local.name}-postgres"
  description = "PostgreSQL of Switchyard ${var.region}: reachable from the region's VPC and, on the hub, the other regions"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each          = toset([for name, r in var.regions : r.cidr])
  security_group_id = aws_security_group.postgres.id
  description       = "PostgreSQL from Switchyard VPC ${each.key}"
  cidr_ipv4         = each.key
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

resource "aws_db_parameter_group" "this" {
  name   = "${local.name}-pg16"
  family = "postgres16"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
  tags = local.tags
}

resource "aws_iam_role" "rds_monitoring" {
  name = "${local.name}-rds-monitoring"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# --- catalog -----------------------------------------------------------------------------

resource "random_password" "catalog" {
  count   = local.is_hub ? 1 : 0
  length  = 40
  special = false
}

resource "aws_db_instance" "catalog" {
  count = local.is_hub ? 1 : 0

  identifier                          = "switchyard-catalog"
  engine                              = "postgres"
  engine_version                      = var.postgres_version
  instance_class                      = var.catalog.instance_class
  allocated_storage                   = var.catalog.allocated_storage
  max_allocated_storage               = var.catalog.allocated_storage * 4
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.this.arn
  db_name                             = "switchyard_catalog"
  username                            = "switchyard"
  password                            = random_password.catalog[0].result
  multi_az                            = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.postgres.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  backup_retention_period             = var.backup_retention_days
  backup_window                       = "03:00-04:00"
  maintenance_window                  = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "switchyard-catalog-final"
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.this.arn
  monitoring_interval                 = 30
  monitoring_role_arn                 = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  tags                                = merge(local.tags, { "switchyard:database" = "catalog" })
}

# The other regions replicate the primary; a failover promotes one of them.
data "aws_db_instance" "catalog_primary" {
  count                  = local.is_hub ? 0 : 1
  provider               = aws.hub
  db_instance_identifier = "switchyard-catalog"
}

resource "aws_db_instance" "catalog_replica" {
  count = local.is_hub ? 0 : 1

  identifier             = "switchyard-catalog-${var.region}"
  replicate_source_db    = data.aws_db_instance.catalog_primary[0].db_instance_arn
  instance_class         = var.catalog.instance_class
  storage_type           = "gp3"
  storage_encrypted      = true
  kms_key_id             = aws_kms_key.this.arn
  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.postgres.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  # Backups on the replica, so that once promoted it is protected from the first minute.
  backup_retention_period             = var.backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.this.arn
  monitoring_interval                 = 30
  monitoring_role_arn                 = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  tags                                = merge(local.tags, { "switchyard:database" = "catalog-replica" })
}

# The services' catalog URL, written by the hub and replicated by Secrets Manager into
# every region, where each region's stack reads it.
resource "aws_secretsmanager_secret" "catalog_url" {
  # checkov:skip=CKV2_AWS_57: rotating the catalog password restarts every region's services; it is a planned operation (docs/operations.md, "Rotate database passwords"), not a Lambda on a timer
  count       = local.is_hub ? 1 : 0
  name        = "switchyard/catalog-url"
  description = "Connection URL of the Switchyard catalog primary"
  kms_key_id  = aws_kms_key.this.arn

  dynamic "replica" {
    for_each = toset(var.topology.catalog.replica_regions)
    content {
      region = replica.key
    }
  }
  tags = local.tags
}

resource "aws_secretsmanager_secret_version" "catalog_url" {
  count         = local.is_hub ? 1 : 0
  secret_id     = aws_secretsmanager_secret.catalog_url[0].id
  secret_string = "postgres://switchyard:${random_password.catalog[0].result}@${aws_db_instance.catalog[0].address}:5432/switchyard_catalog?sslmode=require"
}

data "aws_secretsmanager_secret_version" "catalog_url" {
  count     = local.is_hub ? 0 : 1
  secret_id = "switchyard/catalog-url"
}

# --- shards ------------------------------------------------------------------------------

resource "random_password" "shard" {
  for_each = local.my_shards
  length   = 40
  special  = false
}

resource "aws_db_instance" "shard" {
  for_each = local.my_shards

  identifier                          = each.value.db_identifier
  engine                              = "postgres"
  engine_version                      = var.postgres_version
  instance_class                      = each.value.instance_class
  allocated_storage                   = each.value.allocated_storage
  max_allocated_storage               = each.value.allocated_storage * 4
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.this.arn
  db_name                             = each.value.db_name
  username                            = "switchyard"
  password                            = random_password.shard[each.key].result
  multi_az                            = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.postgres.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  backup_retention_period             = var.backup_retention_days
  backup_window                       = "03:00-04:00"
  maintenance_window                  = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${each.value.db_identifier}-final"
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.this.arn
  monitoring_interval                 = 30
  monitoring_role_arn                 = aws_iam_role.rds_monitoring.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  tags                                = merge(local.tags, { "switchyard:database" = "shard", "switchyard:shard" = each.key })
}

locals {
  catalog_url = local.is_hub ? aws_secretsmanager_secret_version.catalog_url[0].secret_string : data.aws_secretsmanager_secret_version.catalog_url[0].secret_string
  shard_dsns = {
    for name, db in aws_db_instance.shard :
    name => "postgres://switchyard:${random_password.shard[name].result}@${db.address}:5432/${local.my_shards[name].db_name}?sslmode=require"
  }
}
