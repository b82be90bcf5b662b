# Switchyard itself: its namespace (restricted Pod Security), the Secret the chart reads
# (existingSecret), the ingress controller behind a TLS network load balancer, the chart,
# and the registration of this region and its shards in the catalog.

locals {
  chart_path = "${path.module}/../../../deploy/helm/switchyard"
  app        = jsondecode(data.aws_secretsmanager_secret_version.app.secret_string)
  release    = "switchyard"

  switchyard_values = {
    images = {
      registry = var.switchyard.image_registry
      tag      = var.switchyard.image_tag
    }
    secrets = {
      existingSecret = kubernetes_secret_v1.switchyard.metadata[0].name
    }
    controlPlane = {
      ingress = {
        className = "nginx"
        hosts     = [local.endpoints.api_host, var.topology.global_hosts.api, var.topology.global_hosts.hooks]
      }
      config = {
        region = { name = var.region }
        server = { public_url = local.endpoints.api_url }
        nats   = { url = "nats://nats.nats.svc.cluster.local:4222" }
      }
    }
    workers = {
      # The chart's example pool is us-east-1; a region runs only its own pool.
      pools = merge(
        { "us-east-1" = null },
        { (var.region) = { replicas = var.switchyard.initial_workers, config = {} } },
      )
      config = {
        nats = { url = "nats://nats.nats.svc.cluster.local:4222" }
      }
    }
    networkPolicy = {
      egress = {
        # The catalog primary and the shards of every region.
        postgres = {
          to    = [for name, r in var.regions : { ipBlock = { cidr = r.cidr } }]
          ports = [{ port = 5432, protocol = "TCP" }]
        }
        redis = {
          to    = [{ ipBlock = { cidr = local.cidr } }]
          ports = [{ port = 6379, protocol = "TCP" }]
        }
        # The EKS API server's endpoints live in the private subnets.
        kubeApi = {
          to    = [{ ipBlock = { cidr = local.cidr } }]
          ports = [{ port = 443, protocol = "TCP" }]
        }
      }
    }
    serviceMonitor   = { enabled = false }
    prometheusRule   = { enabled = false }
    grafanaDashboard = { enabled = false }
  }
}

data "aws_secretsmanager_secret_version" "app" {
  secret_id = var.app_secrets_name
}

resource "kubernetes_namespace_v1" "switchyard" {
  metadata {
    name = "switchyard"
    labels = {
      "pod-security.kubernetes.io/enforce" = "restricted"
      "pod-security.kubernetes.io/audit"   = "restricted"
      "pod-security.kubernetes.io/warn"    = "restricted"
    }
  }
  depends_on = [aws_eks_node_group.default]
}

# Keys follow the chart's convention `<binary>.<field path>`; lists in inline-array form.
resource "kubernetes_secret_v1" "switchyard" {
  metadata {
    name      = "switchyard-secrets"
    namespace = kubernetes_namespace_v1.switchyard.metadata[0].name
  }
  type = "Opaque"
  data = merge(
    {
      "control-plane.database.catalog_url"   = local.catalog_url
      "control-plane.redis.url"              = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
      "control-plane.auth.operator_tokens"   = jsonencode(local.app.operator_tokens)
      "control-plane.auth.jwt.signing_key"   = local.app.jwt_signing_key
      "control-plane.github.webhook_secrets" = jsonencode(local.app.webhook_secrets)
      "control-plane.github.app.private_key" = local.app.github_app_private_key
      "worker.database.catalog_url"          = local.catalog_url
      "worker.redis.url"                     = "rediss://:${random_password.redis.result}@${aws_elasticache_replication_group.this.primary_endpoint_address}:6379"
      "worker.github.app.private_key"        = local.app.github_app_private_key
    },
    { for name, dsn in local.shard_dsns : "shards.${name}.dsn" => dsn },
  )
}

resource "aws_acm_certificate" "api" {
  domain_name               = local.endpoints.api_host
  subject_alternative_names = [var.topology.global_hosts.api, var.topology.global_hosts.hooks]
  validation_method         = "DNS"
  tags                      = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "api_validation" {
  for_each = {
    for o in aws_acm_certificate.api.domain_validation_options : o.domain_name => o
  }
  zone_id = var.zone_id
  name    = each.value.resource_record_name
  type    = each.value.resource_record_type
  records = [each.value.resource_record_value]
  ttl     = 300
  # Every region's certificate names the global hosts, whose validation records are the
  # same in every region's stack.
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "api" {
  certificate_arn         = aws_acm_certificate.api.arn
  validation_record_fqdns = [for r in aws_route53_record.api_validation : r.fqdn]
}

resource "helm_release" "ingress_nginx" {
  name             = "ingress-nginx"
  namespace        = "ingress-nginx"
  create_namespace = true
  repository       = "https://kubernetes.github.io/ingress-nginx"
  chart            = "ingress-nginx"
  version          = "4.11.3"
  atomic           = true
  wait             = true
  values = [yamlencode({
    controller = {
      replicaCount = 3
      service = {
        externalTrafficPolicy = "Local"
        annotations = {
          "service.beta.kubernetes.io/aws-load-balancer-type"                   = "nlb"
          "service.beta.kubernetes.io/aws-load-balancer-ssl-cert"               = aws_acm_certificate_validation.api.certificate_arn
          "service.beta.kubernetes.io/aws-load-balancer-ssl-ports"              = "https"
          "service.beta.kubernetes.io/aws-load-balancer-backend-protocol"       = "tcp"
          "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy" = "ELBSecurityPolicy-TLS13-1-2-2021-06"
        }
        # TLS ends at the load balancer; both listeners reach the controller's HTTP port.
        targetPorts = { http = "http", https = "http" }
      }
      config = {
        "proxy-body-size" = "26m"
        "ssl-redirect"    = "false"
      }
      metrics = { enabled = true }
    }
  })]
  depends_on = [aws_eks_addon.vpc_cni, aws_eks_node_group.default]
}

resource "helm_release" "switchyard" {
  name      = local.release
  namespace = kubernetes_namespace_v1.switchyard.metadata[0].name
  chart     = local.chart_path
  # Its pre-upgrade hook migrates the catalog and every shard before pods change.
  timeout = 900
  atomic  = true
  wait    = true
  values  = compact([yamlencode(local.switchyard_values), var.switchyard.extra_values])
  depends_on = [
    helm_release.nats,
    helm_release.ingress_nginx,
    aws_networkmanager_vpc_attachment.this,
  ]
}

# Registers this region and its shards in the catalog and opens each shard's id range,
# then migrates (every command is idempotent). It runs again whenever the set of shards
# changes, since its name carries their hash.
resource "kubernetes_job_v1" "register" {
  metadata {
    name      = "switchyard-register-${substr(sha256(jsonencode(local.my_shards)), 0, 10)}"
    namespace = kubernetes_namespace_v1.switchyard.metadata[0].name
  }
  spec {
    backoff_limit              = 2
    ttl_seconds_after_finished = 86400
    template {
      metadata {
        labels = {
          # Selected by the chart's migrate NetworkPolicy (DNS and PostgreSQL only).
          "app.kubernetes.io/name"      = "switchyard"
          "app.kubernetes.io/instance"  = local.release
          "app.kubernetes.io/component" = "migrate"
        }
      }
      spec {
        restart_policy                  = "Never"
        automount_service_account_token = false
        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        init_container {
          name  = "region"
          image = "${var.switchyard.image_registry}/switchyard/control-plane:${var.switchyard.image_tag}"
          args  = ["regions", "add", "--name", var.region, "--api-url", local.endpoints.api_url]
          env {
            name = "SWITCHYARD_CP_DATABASE__CATALOG_URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.switchyard.metadata[0].name
                key  = "control-plane.database.catalog_url"
              }
            }
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }

        dynamic "init_container" {
          for_each = local.my_shards
          content {
            name  = "shard-${init_container.value.index}"
            image = "${var.switchyard.image_registry}/switchyard/control-plane:${var.switchyard.image_tag}"
            args  = ["shards", "add", "--name", init_container.key, "--region", var.region]
            env {
              name = "SWITCHYARD_CP_DATABASE__CATALOG_URL"
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.switchyard.metadata[0].name
                  key  = "control-plane.database.catalog_url"
                }
              }
            }
            # `shards add` reads the DSN from the environment, so it never shows in a
            # process list or the pod spec.
            env {
              name = "SWITCHYARD_SHARD_DSN"
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.switchyard.metadata[0].name
                  key  = "shards.${init_container.key}.dsn"
                }
              }
            }
            security_context {
              allow_privilege_escalation = false
              read_only_root_filesystem  = true
              capabilities {
                drop = ["ALL"]
              }
            }
          }
        }

        dynamic "init_container" {
          for_each = local.my_shards
          content {
            name  = "range-${init_container.value.index}"
            image = "${var.switchyard.image_registry}/switchyard/control-plane:${var.switchyard.image_tag}"
            args  = ["shards", "add-range", "--shard", init_container.key, "--start", tostring(init_container.value.id_start), "--end", tostring(init_container.value.id_end)]
            env {
              name = "SWITCHYARD_CP_DATABASE__CATALOG_URL"
              value_from {
                secret_key_ref {
                  name = kubernetes_secret_v1.switchyard.metadata[0].name
                  key  = "control-plane.database.catalog_url"
                }
              }
            }
            security_context {
              allow_privilege_escalation = false
              read_only_root_filesystem  = true
              capabilities {
                drop = ["ALL"]
              }
            }
          }
        }

        container {
          name  = "migrate"
          image = "${var.switchyard.image_registry}/switchyard/control-plane:${var.switchyard.image_tag}"
          args  = ["migrate"]
          env {
            name = "SWITCHYARD_CP_DATABASE__CATALOG_URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.switchyard.metadata[0].name
                key  = "control-plane.database.catalog_url"
              }
            }
          }
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }
  wait_for_completion = true
  timeouts {
    create = "15m"
  }
  depends_on = [helm_release.switchyard, aws_db_instance.shard]
}
