#!/usr/bin/env python3
"""Switchyard's own policies on the rendered chart, beyond the Kubernetes schema and
checkov: what the chart promises (deploy/helm/switchyard/values.yaml) holds in every
profile.

* every workload container: restricted security context (non-root, read-only root,
  no privilege escalation, all capabilities dropped, RuntimeDefault seccomp), memory
  limit and requests, /tmp on an emptyDir;
* every long-running container: liveness on /healthz and readiness on /readyz;
* worker Deployments have no HorizontalPodAutoscaler (the autoscaler owns them);
* the autoscaler's Role allows only get/patch/update of the worker Deployments' scale
  (and get of those Deployments), by name;
* a default-deny NetworkPolicy selects every pod of the release;
* every namespaced object names its namespace; secrets reach containers only from Secrets.

Usage: k8s_policies.py RENDERED.yaml [...]
"""

from __future__ import annotations

import sys

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass", "PriorityClass"}


def pod_spec(doc):
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def check(path: str) -> list[str]:
    errors: list[str] = []
    docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
    where = lambda d: f"{path}: {d['kind']}/{d['metadata']['name']}"  # noqa: E731
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    workers = {n for n, d in deployments.items() if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"}
    if not workers:
        errors.append(f"{path}: no worker Deployment")
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED and not d["metadata"].get("namespace"):
            errors.append(f"{where(d)}: no namespace")
        spec = pod_spec(d)
        if spec is None:
            continue
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            errors.append(f"{where(d)}: pod securityContext must set runAsNonRoot and seccompProfile RuntimeDefault")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            cw = f"{where(d)} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{cw}: allowPrivilegeEscalation false and readOnlyRootFilesystem true are required")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{cw}: capabilities must drop ALL")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("memory") or not res.get("requests", {}).get("cpu") or not res.get("limits", {}).get("memory"):
                errors.append(f"{cw}: cpu and memory requests and a memory limit are required")
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                errors.append(f"{cw}: /tmp must be an emptyDir (the root filesystem is read-only)")
            for e in c.get("env", []):
                if e["name"].startswith("SWITCHYARD_") and e["name"].endswith(("URL", "TOKENS", "SECRETS", "KEY")) and "value" in e:
                    errors.append(f"{cw}: {e['name']} is a secret but set as a literal")
            if d["kind"] == "Deployment":
                probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
                if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                    errors.append(f"{cw}: liveness must probe /healthz and readiness /readyz (got {probes})")
    for d in docs:
        if d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] in workers:
            errors.append(f"{where(d)}: worker pools must not have an HPA (the autoscaler owns their replicas)")
        if d["kind"] == "Role":
            for rule in d.get("rules", []):
                resources = set(rule.get("resources", []))
                verbs = set(rule.get("verbs", []))
                names = set(rule.get("resourceNames", []))
                allowed = ({"deployments/scale"}, {"get", "patch", "update"}) if "deployments/scale" in resources else ({"deployments"}, {"get"})
                if rule.get("apiGroups") != ["apps"] or resources != allowed[0] or not verbs <= allowed[1]:
                    errors.append(f"{where(d)}: rule {rule} allows more than the worker Deployments' scale")
                if not names or not names <= workers:
                    errors.append(f"{where(d)}: rule must name only worker Deployments (got {sorted(names)})")
    deny = [d for d in docs if d["kind"] == "NetworkPolicy" and not d["spec"].get("ingress") and not d["spec"].get("egress")
            and set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}]
    if any(d["kind"] == "NetworkPolicy" for d in docs) and not deny:
        errors.append(f"{path}: NetworkPolicies without a default-deny policy")
    return errors


def main(paths: list[str]) -> int:
    errors = [e for p in paths for e in check(p)]
    for e in errors:
        print(f"k8s-policies: FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"k8s-policies: {len(paths)} renders hold the chart's security, probe, RBAC and network policies")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
