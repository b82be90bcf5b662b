# Private connectivity between the regions' VPCs: an AWS Cloud WAN core network with an
# edge in every region and one segment, so every VPC reaches every other (a control plane
# reads the shards of any region; the spokes reach the catalog primary and the NATS hub).
# Peering would need a provider per region pair, which a stack that deploys one region
# cannot have; the core network is one global resource, created by the hub's stack, and
# each region attaches its own VPC.

data "aws_networkmanager_core_network_policy_document" "this" {
  count = local.is_hub ? 1 : 0

  core_network_configuration {
    vpn_ecmp_support = false
    asn_ranges       = ["64512-64555"]

    dynamic "edge_locations" {
      for_each = var.topology.region_names
      content {
        location = edge_locations.value
      }
    }
  }

  segments {
    name                          = "switchyard"
    description                   = "Every Switchyard region"
    require_attachment_acceptance = false
  }

  attachment_policies {
    rule_number     = 100
    condition_logic = "or"

    conditions {
      type     = "tag-value"
      operator = "equals"
      key      = "segment"
      value    = "switchyard"
    }

    action {
      association_method = "constant"
      segment            = "switchyard"
    }
  }
}

resource "aws_networkmanager_global_network" "this" {
  count       = local.is_hub ? 1 : 0
  description = "Switchyard"
  tags        = local.tags
}

resource "aws_networkmanager_core_network" "this" {
  count             = local.is_hub ? 1 : 0
  global_network_id = aws_networkmanager_global_network.this[0].id
  description       = "Switchyard regions"
  tags              = local.tags
}

resource "aws_networkmanager_core_network_policy_attachment" "this" {
  count           = local.is_hub ? 1 : 0
  core_network_id = aws_networkmanager_core_network.this[0].id
  policy_document = data.aws_networkmanager_core_network_policy_document.this[0].json
}

# Where the other regions' stacks find the core network.
resource "aws_ssm_parameter" "core_network" {
  # checkov:skip=CKV2_AWS_34: the value is the core network's ARN, not a secret
  count = local.is_hub ? 1 : 0
  name  = "/switchyard/core-network-arn"
  type  = "String"
  value = aws_networkmanager_core_network.this[0].arn
  tags  = local.tags
}

data "aws_ssm_parameter" "core_network" {
  count    = local.is_hub ? 0 : 1
  provider = aws.hub
  name     = "/switchyard/core-network-arn"
}

locals {
  core_network_arn = local.is_hub ? aws_networkmanager_core_network.this[0].arn : data.aws_ssm_parameter.core_network[0].value
  core_network_id  = element(split("/", local.core_network_arn), length(split("/", local.core_network_arn)) - 1)
  other_cidrs      = { for name, r in var.regions : name => r.cidr if name != var.region }
}

resource "aws_networkmanager_vpc_attachment" "this" {
  core_network_id = local.core_network_id
  vpc_arn         = aws_vpc.this.arn
  subnet_arns     = aws_subnet.private[*].arn
  tags            = merge(local.tags, { segment = "switchyard" })
  depends_on      = [aws_networkmanager_core_network_policy_attachment.this]
}

resource "aws_route" "to_other_regions" {
  for_each = { for pair in setproduct(range(3), keys(local.other_cidrs)) : "${pair[0]}-${pair[1]}" => pair }

  route_table_id         = aws_route_table.private[each.value[0]].id
  destination_cidr_block = local.other_cidrs[each.value[1]]
  core_network_arn       = local.core_network_arn
  depends_on             = [aws_networkmanager_vpc_attachment.this]
}
