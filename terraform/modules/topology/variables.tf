variable "regions" {
  description = <<-EOT
    Every region Switchyard runs in, keyed by AWS region name:
      cidr           - the region's VPC CIDR (a /16 to /20, not overlapping another region's)
      traffic_weight - percent of webhook traffic the global endpoint sends here (all sum to 100)
      id_block       - the region's fixed block of org ids; never reuse or change one, since
                       it places every shard's id range (0, 1, 2, ... one per region)
      shards         - count of shard databases, their instance class and storage (GiB)
  EOT
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
    condition     = length(var.regions) > 0
    error_message = "At least one region is needed."
  }
  validation {
    condition     = alltrue([for name in keys(var.regions) : can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", name))])
    error_message = "Region keys must be AWS region names such as us-east-1."
  }
  validation {
    condition     = sum([for r in values(var.regions) : r.traffic_weight]) == 100
    error_message = "The regions' traffic_weight values must sum to 100."
  }
  validation {
    condition     = alltrue([for r in values(var.regions) : r.traffic_weight >= 0 && r.traffic_weight <= 100 && floor(r.traffic_weight) == r.traffic_weight])
    error_message = "Each traffic_weight is a whole percent from 0 to 100."
  }
  validation {
    condition     = alltrue([for r in values(var.regions) : can(cidrnetmask(r.cidr)) && tonumber(split("/", r.cidr)[1]) >= 16 && tonumber(split("/", r.cidr)[1]) <= 20])
    error_message = "Each cidr must be an IPv4 CIDR block from /16 to /20."
  }
  validation {
    condition     = length(distinct([for r in values(var.regions) : cidrhost(r.cidr, 0)])) == length(var.regions)
    error_message = "Two regions share a VPC CIDR; VPC peering needs distinct, non-overlapping blocks."
  }
  validation {
    condition     = length(distinct([for r in values(var.regions) : r.id_block])) == length(var.regions)
    error_message = "Each region needs its own id_block."
  }
  validation {
    condition     = alltrue([for r in values(var.regions) : r.id_block >= 0 && floor(r.id_block) == r.id_block])
    error_message = "id_block is a non-negative whole number."
  }
  validation {
    condition     = alltrue([for r in values(var.regions) : r.shards.count >= 1 && r.shards.count <= 64 && floor(r.shards.count) == r.shards.count])
    error_message = "Each region has 1 to 64 shards."
  }
}

variable "hub_region" {
  description = "The region holding the catalog primary and the NATS leafnode hub; every other region peers with it."
  type        = string

  validation {
    condition     = contains(keys(var.regions), var.hub_region)
    error_message = "hub_region must be one of the regions."
  }
}

variable "domain" {
  description = "DNS zone of the public endpoints, e.g. switchyard.example."
  type        = string
}

variable "first_org_id" {
  description = "The first org id handed out; ids below it are never used."
  type        = number
  default     = 1000000000
}

variable "ids_per_shard" {
  description = "Size of each shard's initial org-id range."
  type        = number
  default     = 1000000000

  validation {
    condition     = var.ids_per_shard >= 1000 && floor(var.ids_per_shard) == var.ids_per_shard
    error_message = "ids_per_shard is a whole number of at least 1000."
  }
}

variable "max_shards_per_region" {
  description = "Shards reserved per region id block; ranges of a region never reach into the next block."
  type        = number
  default     = 64
}
