# Public names. `api.<region>` reaches this region's control plane; the global `api`
# name routes each client to the nearest healthy region (latency), `hooks` spreads
# GitHub's webhooks over the healthy regions by traffic weight. Intake accepts a
# webhook in any region, so weighted routing is safe there.

data "aws_lb" "ingress" {
  tags = {
    "kubernetes.io/service-name"                         = "ingress-nginx/ingress-nginx-controller"
    "kubernetes.io/cluster/${aws_eks_cluster.this.name}" = "owned"
  }
  depends_on = [helm_release.ingress_nginx]
}

resource "aws_route53_health_check" "api" {
  fqdn              = local.endpoints.api_host
  port              = 443
  type              = "HTTPS"
  resource_path     = "/readyz"
  enable_sni        = true
  failure_threshold = 3
  request_interval  = 30
  measure_latency   = true
  tags              = merge(local.tags, { Name = "switchyard-${var.region}-api" })
}

resource "aws_route53_record" "api_region" {
  zone_id = var.zone_id
  name    = local.endpoints.api_host
  type    = "A"
  alias {
    name                   = data.aws_lb.ingress.dns_name
    zone_id                = data.aws_lb.ingress.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "api_global" {
  zone_id         = var.zone_id
  name            = var.topology.global_hosts.api
  type            = "A"
  set_identifier  = var.region
  health_check_id = aws_route53_health_check.api.id
  latency_routing_policy {
    region = var.region
  }
  alias {
    name                   = data.aws_lb.ingress.dns_name
    zone_id                = data.aws_lb.ingress.zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "hooks" {
  zone_id         = var.zone_id
  name            = var.topology.global_hosts.hooks
  type            = "A"
  set_identifier  = var.region
  health_check_id = aws_route53_health_check.api.id
  weighted_routing_policy {
    weight = var.topology.traffic_weights[var.region]
  }
  alias {
    name                   = data.aws_lb.ingress.dns_name
    zone_id                = data.aws_lb.ingress.zone_id
    evaluate_target_health = true
  }
}

# The hub's leafnode listener (an internal load balancer: private addresses).
resource "aws_route53_record" "leaf" {
  count   = length(kubernetes_service_v1.leafnodes) > 0 ? 1 : 0
  zone_id = var.zone_id
  name    = local.endpoints.leaf_host
  type    = "CNAME"
  ttl     = 60
  records = [kubernetes_service_v1.leafnodes[0].status[0].load_balancer[0].ingress[0].hostname]
}
