//! The Kubernetes actuator: the region's pool is one or more worker Deployments, resized
//! through their `scale` subresource (`GET`/`PATCH
//! /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`), the same endpoint `kubectl
//! scale` and the HPA use. The RBAC it needs is `get`/`patch` on `deployments/scale` of
//! those Deployments and nothing else (the Helm chart's Role).
//!
//! The desired count is split evenly across the Deployments (the first ones get the
//! remainder); a Deployment already at its share is not patched. `spec.replicas` counts the
//! pods that are still starting, which is what the policy calls the pool.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};

use super::ActuatorError;
use crate::config::KubernetesConfig;

/// Resizes worker Deployments through the Kubernetes API.
#[derive(Clone)]
pub struct KubernetesActuator {
    api: Api<Deployment>,
    deployments: Vec<String>,
    params: PatchParams,
    /// `spec.replicas` of each Deployment as last read or set.
    known: BTreeMap<String, u32>,
}

impl std::fmt::Debug for KubernetesActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesActuator")
            .field("deployments", &self.deployments)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl KubernetesActuator {
    /// A client for the configured API: `api_url` without credentials when set, otherwise
    /// the in-cluster service account or the kubeconfig.
    pub async fn connect(cfg: &KubernetesConfig) -> Result<Self, ActuatorError> {
        let mut config = if cfg.api_url.is_empty() {
            kube::Config::infer()
                .await
                .map_err(|e| ActuatorError::KubeConfig(e.to_string()))?
        } else {
            let url = cfg
                .api_url
                .parse()
                .map_err(|e| ActuatorError::KubeConfig(format!("api_url: {e}")))?;
            kube::Config::new(url)
        };
        config.connect_timeout = Some(cfg.timeout);
        config.read_timeout = Some(cfg.timeout);
        config.write_timeout = Some(cfg.timeout);
        if !cfg.namespace.is_empty() {
            config.default_namespace.clone_from(&cfg.namespace);
        }
        let namespace = config.default_namespace.clone();
        let client =
            kube::Client::try_from(config).map_err(|e| ActuatorError::KubeConfig(e.to_string()))?;
        tracing::info!(%namespace, deployments = ?cfg.deployments, "Kubernetes actuator ready");
        Ok(Self {
            api: Api::namespaced(client, &namespace),
            deployments: cfg.deployments.clone(),
            params: PatchParams {
                field_manager: Some(cfg.field_manager.clone()),
                ..PatchParams::default()
            },
            known: BTreeMap::new(),
        })
    }

    /// The sum of the Deployments' `spec.replicas`.
    pub async fn current(&mut self) -> Result<u32, ActuatorError> {
        let mut total = 0u32;
        for name in &self.deployments {
            let scale =
                self.api
                    .get_scale(name)
                    .await
                    .map_err(|source| ActuatorError::Kubernetes {
                        deployment: name.clone(),
                        source,
                    })?;
            let replicas = scale
                .spec
                .and_then(|s| s.replicas)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(0);
            self.known.insert(name.clone(), replicas);
            total = total.saturating_add(replicas);
        }
        Ok(total)
    }

    /// Patches each Deployment whose replica count differs from its share of `desired`.
    pub async fn scale(&mut self, desired: u32) -> Result<(), ActuatorError> {
        for (name, share) in self
            .deployments
            .iter()
            .zip(shares(desired, self.deployments.len()))
        {
            if self.known.get(name) == Some(&share) {
                continue;
            }
            let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": share } }));
            self.api
                .patch_scale(name, &self.params, &patch)
                .await
                .map_err(|source| ActuatorError::Kubernetes {
                    deployment: name.clone(),
                    source,
                })?;
            tracing::info!(deployment = %name, from = ?self.known.get(name), to = share, "scaled the worker Deployment");
            self.known.insert(name.clone(), share);
        }
        Ok(())
    }
}

/// `total` split into `parts` counts that differ by at most one, the larger ones first.
pub fn shares(total: u32, parts: usize) -> Vec<u32> {
    let Ok(n) = u32::try_from(parts) else {
        return Vec::new();
    };
    if n == 0 {
        return Vec::new();
    }
    (0..n)
        .map(|i| total / n + u32::from(i < total % n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn the_desired_count_is_split_evenly_with_the_remainder_first() {
        assert_eq!(shares(5, 2), [3, 2]);
        assert_eq!(shares(7, 3), [3, 2, 2]);
        assert_eq!(shares(1, 3), [1, 0, 0]);
        assert_eq!(shares(4, 1), [4]);
        assert!(shares(4, 0).is_empty());
    }
}
