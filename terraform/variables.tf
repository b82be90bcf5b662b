variable "regions" {
  description = "Every region Switchyard runs in (see modules/topology for the fields). Weights sum to 100."
  type = map(object({
    cidr           = string
    traffic_weight = number
    id_block       = number
    shards = object({
      count             = number
      instance_class    = string
      allocated_storage = number
    })
  }))

  validation {
    condition     = sum([for r in values(var.regions) : r.traffic_weight]) == 100
    error_message = "The regions' traffic_weight values must sum to 100."
  }
}

variable "region" {
  description = "The region this apply deploys; empty means the workspace name."
  type        = string
  default     = ""
}

variable "hub_region" {
  description = "Region of the catalog primary and the NATS leafnode hub. Changing it is the regional failover (docs/operations.md)."
  type        = string
}

variable "domain" {
  description = "Public DNS zone (a Route 53 hosted zone) of the endpoints."
  type        = string
}

variable "eks" {
  description = "EKS settings of every region."
  type = object({
    version              = string
    instance_types       = list(string)
    min_nodes            = number
    max_nodes            = number
    desired_nodes        = number
    admin_principal_arns = list(string)
    public_access_cidrs  = list(string)
  })
  default = {
    version              = "1.33"
    instance_types       = ["m7i.xlarge"]
    min_nodes            = 3
    max_nodes            = 30
    desired_nodes        = 3
    admin_principal_arns = []
    public_access_cidrs  = []
  }
}

variable "catalog" {
  description = "Instance class and storage (GiB) of the catalog primary and its replicas."
  type = object({
    instance_class    = string
    allocated_storage = number
  })
  default = {
    instance_class    = "db.r6g.large"
    allocated_storage = 100
  }
}

variable "redis" {
  description = "ElastiCache node type and number of nodes per region."
  type = object({
    node_type       = string
    num_cache_nodes = number
  })
  default = {
    node_type       = "cache.r7g.large"
    num_cache_nodes = 2
  }
}

variable "nats" {
  description = "NATS Helm chart version, servers per region, JetStream storage per server."
  type = object({
    chart_version = string
    replicas      = number
    storage_size  = string
  })
  default = {
    chart_version = "1.2.6"
    replicas      = 3
    storage_size  = "50Gi"
  }
}

variable "switchyard" {
  description = "Images (registry and tag), initial workers per region, extra chart values (YAML)."
  type = object({
    image_registry  = string
    image_tag       = string
    initial_workers = number
    extra_values    = string
  })
}

variable "app_secrets_name" {
  description = "Secrets Manager secret (JSON) with operator tokens, webhook secrets, the JWT signing key and the GitHub App key; one per region."
  type        = string
  default     = "switchyard/app"
}

variable "tags" {
  description = "Tags of every AWS resource."
  type        = map(string)
  default     = { service = "switchyard" }
}
