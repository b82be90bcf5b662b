# NATS with JetStream: a three-server cluster per region, its own JetStream domain named
# after the region. Regions are joined by leafnode connections in a star around the hub
# (leafnode graphs must be acyclic; see docs/operations.md): the hub listens on an
# internal load balancer reached over the core network, every other region solicits it.

resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name = "gp3-encrypted"
  }
  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Retain"
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type      = "gp3"
    encrypted = "true"
    kmsKeyId  = aws_kms_key.this.arn
  }
  depends_on = [aws_eks_addon.ebs_csi]
}

resource "kubernetes_namespace_v1" "nats" {
  metadata {
    name = "nats"
    labels = {
      "pod-security.kubernetes.io/enforce" = "baseline"
    }
  }
  depends_on = [aws_eks_node_group.default]
}

# The leafnode password: made by the hub, replicated to every region by Secrets Manager.
resource "random_password" "leafnode" {
  count   = local.is_hub ? 1 : 0
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "leafnode" {
  # checkov:skip=CKV2_AWS_57: the leafnode password is rotated with a NATS rolling restart in every region (docs/operations.md), not by a Lambda
  count       = local.is_hub ? 1 : 0
  name        = "switchyard/nats-leafnode-password"
  description = "Password of the NATS leafnode connections to the hub"
  kms_key_id  = aws_kms_key.this.arn
  dynamic "replica" {
    for_each = toset(var.topology.catalog.replica_regions)
    content {
      region = replica.key
    }
  }
  tags = local.tags
}

resource "aws_secretsmanager_secret_version" "leafnode" {
  count         = local.is_hub ? 1 : 0
  secret_id     = aws_secretsmanager_secret.leafnode[0].id
  secret_string = random_password.leafnode[0].result
}

data "aws_secretsmanager_secret_version" "leafnode" {
  count     = local.is_hub ? 0 : 1
  secret_id = "switchyard/nats-leafnode-password"
}

locals {
  leafnode_password = local.is_hub ? random_password.leafnode[0].result : data.aws_secretsmanager_secret_version.leafnode[0].secret_string
  leafnode_remotes = [
    for hub in var.topology.leafnode_remotes[var.region] :
    { url = "nats-leaf://switchyard:${local.leafnode_password}@${var.topology.endpoints[hub].leaf_host}:7422" }
  ]
  nats_values = {
    config = {
      cluster = {
        enabled  = true
        replicas = var.nats.replicas
      }
      jetstream = {
        enabled = true
        fileStore = {
          pvc = {
            size             = var.nats.storage_size
            storageClassName = kubernetes_storage_class_v1.gp3.metadata[0].name
          }
        }
        merge = { domain = var.region }
      }
      leafnodes = {
        enabled = true
        port    = 7422
        merge = local.is_hub ? {
          authorization = { user = "switchyard", password = local.leafnode_password }
        } : { remotes = local.leafnode_remotes }
      }
    }
    podTemplate = {
      topologySpreadConstraints = {
        "topology.kubernetes.io/zone" = { maxSkew = 1, whenUnsatisfiable = "DoNotSchedule" }
      }
    }
  }
}

resource "helm_release" "nats" {
  name       = "nats"
  namespace  = kubernetes_namespace_v1.nats.metadata[0].name
  repository = "https://nats-io.github.io/k8s/helm/charts/"
  chart      = "nats"
  version    = var.nats.chart_version
  # The leafnode password is part of the values.
  values = [yamlencode(local.nats_values)]
  atomic = true
  wait   = true
}

# The hub's leafnode listener, on an internal network load balancer that the other
# regions reach over the core network.
resource "kubernetes_service_v1" "leafnodes" {
  count = local.is_hub && length(local.spoke_cidrs) > 0 ? 1 : 0
  metadata {
    name      = "nats-leafnodes"
    namespace = kubernetes_namespace_v1.nats.metadata[0].name
    annotations = {
      "service.beta.kubernetes.io/aws-load-balancer-type"     = "nlb"
      "service.beta.kubernetes.io/aws-load-balancer-internal" = "true"
    }
  }
  spec {
    type                        = "LoadBalancer"
    load_balancer_source_ranges = local.spoke_cidrs
    selector = {
      "app.kubernetes.io/name"      = "nats"
      "app.kubernetes.io/instance"  = "nats"
      "app.kubernetes.io/component" = "nats"
    }
    port {
      name        = "leafnodes"
      port        = 7422
      target_port = 7422
      protocol    = "TCP"
    }
  }
  depends_on = [helm_release.nats]
}
