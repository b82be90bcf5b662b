variable "region" {
  description = "The AWS region this stack deploys (a key of topology.regions)."
  type        = string
}

variable "topology" {
  description = "Outputs of the topology module, computed from the same regions variable in every region's stack."
  type = object({
    region_names     = list(string)
    hub_region       = string
    traffic_weights  = map(number)
    shards           = map(any)
    shards_by_region = map(list(string))
    leafnode_remotes = map(list(string))
    peerings         = map(string)
    catalog          = object({ primary_region = string, replica_regions = list(string) })
    endpoints        = map(object({ api_host = string, api_url = string, leaf_host = string }))
    global_hosts     = object({ api = string, hooks = string })
  })
}

variable "regions" {
  description = "The regions variable itself (CIDRs of the other regions are needed for peering and firewall rules)."
  type = map(object({
    cidr           = string
    traffic_weight = number
    id_block       = number
    shards         = object({ count = number, instance_class = string, allocated_storage = number })
  }))
}

variable "zone_id" {
  description = "Route 53 public hosted zone of the domain."
  type        = string
}

variable "eks" {
  description = "The EKS cluster: Kubernetes version, node instance types and counts, who may administer it, and which networks may reach its public endpoint (empty: private endpoint only)."
  type = object({
    version              = string
    instance_types       = list(string)
    min_nodes            = number
    max_nodes            = number
    desired_nodes        = number
    admin_principal_arns = list(string)
    public_access_cidrs  = list(string)
  })
}

variable "catalog" {
  description = "The catalog database: instance class and storage of the primary (and of its replicas)."
  type = object({
    instance_class    = string
    allocated_storage = number
  })
}

variable "postgres_version" {
  description = "PostgreSQL major.minor of the catalog and the shards."
  type        = string
  default     = "16.4"
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window) of every database."
  type        = number
  default     = 14
}

variable "redis" {
  description = "ElastiCache for Redis: node type and number of cache nodes (a primary and at least one replica in another zone)."
  type = object({
    node_type       = string
    num_cache_nodes = number
  })

  validation {
    condition     = var.redis.num_cache_nodes >= 2
    error_message = "Redis needs at least two nodes for automatic failover."
  }
}

variable "nats" {
  description = "NATS: chart version, servers per region, JetStream file storage per server."
  type = object({
    chart_version = string
    replicas      = number
    storage_size  = string
  })
}

variable "switchyard" {
  description = "The Switchyard chart: image registry and tag, worker pool size at install, extra values (YAML) merged last."
  type = object({
    image_registry  = string
    image_tag       = string
    initial_workers = number
    extra_values    = string
  })
}

variable "app_secrets_name" {
  description = <<-EOT
    Name of the AWS Secrets Manager secret (in this region) holding the application secrets
    as JSON: {"operator_tokens": [...], "webhook_secrets": [...], "jwt_signing_key": "PEM",
    "github_app_private_key": "PEM"}. Operators create and rotate it (docs/operations.md).
  EOT
  type        = string
}

variable "tags" {
  description = "Tags of every AWS resource."
  type        = map(string)
  default     = {}
}
