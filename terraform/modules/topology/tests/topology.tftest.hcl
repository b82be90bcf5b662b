# `terraform test` of the topology module: no provider, no network.

variables {
  domain     = "switchyard.example"
  hub_region = "us-east-1"
  regions = {
    "us-east-1" = {
      cidr           = "10.10.0.0/16"
      traffic_weight = 40
      id_block       = 0
      shards         = { count = 2, instance_class = "db.r6g.large", allocated_storage = 200 }
    }
    "us-west-2" = {
      cidr           = "10.20.0.0/16"
      traffic_weight = 30
      id_block       = 1
      shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
    }
    "eu-west-1" = {
      cidr           = "10.30.0.0/16"
      traffic_weight = 30
      id_block       = 2
      shards         = { count = 2, instance_class = "db.r6g.xlarge", allocated_storage = 500 }
    }
  }
}

run "three_regions" {
  command = plan

  assert {
    condition     = output.region_names == tolist(["eu-west-1", "us-east-1", "us-west-2"])
    error_message = "The regions are listed sorted."
  }
  assert {
    condition     = output.traffic_weights == { "us-east-1" = 40, "us-west-2" = 30, "eu-west-1" = 30 }
    error_message = "Weights pass through unchanged."
  }
  assert {
    condition     = length(output.shards) == 5
    error_message = "Two + one + two shards."
  }
  assert {
    condition     = output.shards_by_region["us-east-1"] == tolist(["us-east-1-0", "us-east-1-1"])
    error_message = "Shards are named <region>-<index>."
  }
  assert {
    condition     = output.shards["us-east-1-0"].id_start == 1000000000 && output.shards["us-east-1-0"].id_end == 2000000000
    error_message = "The first shard of block 0 starts at first_org_id."
  }
  assert {
    condition     = output.shards["us-east-1-1"].id_start == output.shards["us-east-1-0"].id_end
    error_message = "A region's shards take consecutive ranges."
  }
  assert {
    condition     = output.shards["us-west-2-0"].id_start == 1000000000 + 64 * 1000000000
    error_message = "A region's ranges start at its id block: first_org_id + id_block * max_shards_per_region * ids_per_shard."
  }
  assert {
    condition     = output.shards["eu-west-1-1"].number == 129 && output.shards["eu-west-1-1"].db_name == "switchyard_shard_eu_west_1_1"
    error_message = "Global shard numbers follow the id blocks; database names are SQL identifiers."
  }
  # No two ranges overlap.
  assert {
    condition = alltrue([
      for a, sa in output.shards : alltrue([
        for b, sb in output.shards : a == b || sa.id_end <= sb.id_start || sb.id_end <= sa.id_start
      ])
    ])
    error_message = "Shard id ranges overlap."
  }
  # Every id fits a signed 64-bit integer (org ids are i64).
  assert {
    condition     = alltrue([for s in values(output.shards) : s.id_end <= 9223372036854775807])
    error_message = "An id range exceeds i64."
  }
  assert {
    condition     = output.catalog.primary_region == "us-east-1" && jsonencode(output.catalog.replica_regions) == jsonencode(["eu-west-1", "us-west-2"])
    error_message = "The catalog primary is in the hub; every other region has a replica."
  }
  # The leafnode graph is a star around the hub: n - 1 links, none from the hub, no cycle.
  assert {
    condition     = length(output.leafnode_links) == 2 && length(output.leafnode_remotes["us-east-1"]) == 0
    error_message = "The hub solicits no leafnode connection."
  }
  assert {
    condition     = alltrue([for r, remotes in output.leafnode_remotes : r == "us-east-1" || remotes == tolist(["us-east-1"])])
    error_message = "Every spoke solicits exactly the hub."
  }
  assert {
    condition     = output.peerings == { "eu-west-1" = "us-east-1", "us-west-2" = "us-east-1" }
    error_message = "Every spoke VPC peers with the hub VPC."
  }
  assert {
    condition     = output.endpoints["eu-west-1"].api_url == "https://api.eu-west-1.switchyard.example" && output.global_hosts.hooks == "hooks.switchyard.example"
    error_message = "Endpoint names derive from the region and the domain."
  }
}

# Adding a region later moves no existing shard's range.
run "adding_a_region_keeps_existing_ranges" {
  command = plan

  variables {
    regions = {
      "us-east-1" = {
        cidr           = "10.10.0.0/16"
        traffic_weight = 30
        id_block       = 0
        shards         = { count = 3, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
      "ap-south-1" = {
        cidr           = "10.40.0.0/16"
        traffic_weight = 10
        id_block       = 3
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 100 }
      }
      "us-west-2" = {
        cidr           = "10.20.0.0/16"
        traffic_weight = 30
        id_block       = 1
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
      "eu-west-1" = {
        cidr           = "10.30.0.0/16"
        traffic_weight = 30
        id_block       = 2
        shards         = { count = 2, instance_class = "db.r6g.xlarge", allocated_storage = 500 }
      }
    }
  }

  assert {
    condition     = output.shards["us-east-1-0"].id_start == 1000000000 && output.shards["us-west-2-0"].id_start == 65000000000 && output.shards["eu-west-1-1"].id_start == 130000000000
    error_message = "Existing shards keep their ranges when a region and a shard are added."
  }
  assert {
    condition     = output.shards["us-east-1-2"].id_start == 3000000000
    error_message = "A new shard of an existing region takes the next range of its block."
  }
  assert {
    condition     = output.leafnode_remotes["ap-south-1"] == tolist(["us-east-1"])
    error_message = "A new region joins the star."
  }
}

run "a_single_region" {
  command = plan

  variables {
    regions = {
      "eu-central-1" = {
        cidr           = "10.50.0.0/16"
        traffic_weight = 100
        id_block       = 0
        shards         = { count = 1, instance_class = "db.t4g.medium", allocated_storage = 20 }
      }
    }
    hub_region = "eu-central-1"
  }

  assert {
    condition     = length(output.leafnode_links) == 0 && length(output.catalog.replica_regions) == 0 && length(output.peerings) == 0
    error_message = "One region has no leafnode, no replica, no peering."
  }
}

run "weights_must_sum_to_100" {
  command = plan

  variables {
    regions = {
      "us-east-1" = {
        cidr           = "10.10.0.0/16"
        traffic_weight = 50
        id_block       = 0
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
      "eu-west-1" = {
        cidr           = "10.30.0.0/16"
        traffic_weight = 40
        id_block       = 1
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
    }
  }

  expect_failures = [var.regions]
}

run "id_blocks_must_be_distinct" {
  command = plan

  variables {
    regions = {
      "us-east-1" = {
        cidr           = "10.10.0.0/16"
        traffic_weight = 50
        id_block       = 0
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
      "eu-west-1" = {
        cidr           = "10.30.0.0/16"
        traffic_weight = 50
        id_block       = 0
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
    }
  }

  expect_failures = [var.regions]
}

run "cidrs_must_be_distinct" {
  command = plan

  variables {
    regions = {
      "us-east-1" = {
        cidr           = "10.10.0.0/16"
        traffic_weight = 50
        id_block       = 0
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
      "eu-west-1" = {
        cidr           = "10.10.0.0/16"
        traffic_weight = 50
        id_block       = 1
        shards         = { count = 1, instance_class = "db.r6g.large", allocated_storage = 200 }
      }
    }
  }

  expect_failures = [var.regions]
}

run "hub_must_be_a_region" {
  command = plan

  variables {
    hub_region = "ap-northeast-1"
  }

  expect_failures = [var.hub_region]
}
