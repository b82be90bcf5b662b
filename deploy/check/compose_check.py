#!/usr/bin/env python3
"""Checks of deploy/docker/compose.yaml after Compose resolved it (`config` output):
every built image's Dockerfile and every mounted file exist; every Switchyard container
runs hardened (read-only root, no capabilities, no privilege escalation, non-root user);
every server a Switchyard service waits for has a healthcheck; published ports bind to
127.0.0.1 only. Compose itself has already checked the syntax and the references.

Usage: compose_check.py RESOLVED.yaml COMPOSE_DIR
"""

import sys
from pathlib import Path

import yaml


def main(resolved: str, compose_dir: str) -> int:
    cfg = yaml.safe_load(open(resolved, encoding="utf-8"))
    base = Path(compose_dir)
    errors = []
    services = cfg["services"]
    for name, s in services.items():
        build = s.get("build")
        if build:
            dockerfile = Path(build["context"]) / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                errors.append(f"{name}: Dockerfile {dockerfile} does not exist")
        for v in s.get("volumes", []):
            src = v.get("source") if isinstance(v, dict) else str(v).split(":")[0]
            vtype = v.get("type") if isinstance(v, dict) else ("bind" if src.startswith((".", "/")) else "volume")
            if vtype == "bind" and not (base / src).exists() and not Path(src).exists():
                errors.append(f"{name}: mounted file {src} does not exist")
        if str(s.get("image", "")).startswith("switchyard/"):
            if not s.get("read_only") or s.get("cap_drop") != ["ALL"] or "no-new-privileges:true" not in s.get("security_opt", []):
                errors.append(f"{name}: Switchyard containers run read-only, with cap_drop [ALL] and no-new-privileges")
            if str(s.get("user", "")).split(":")[0] in ("", "0", "root"):
                errors.append(f"{name}: Switchyard containers run as the unprivileged user")
        for dep, cond in (s.get("depends_on") or {}).items():
            if dep not in services:
                errors.append(f"{name}: depends on unknown service {dep}")
            elif cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                errors.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for p in s.get("ports", []):
            host_ip = p.get("host_ip") if isinstance(p, dict) else str(p).split(":")[0]
            if host_ip != "127.0.0.1":
                errors.append(f"{name}: port {p} must bind to 127.0.0.1 (a laptop stack is not for the network)")
    for e in errors:
        print(f"compose: FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"compose: {len(services)} services resolve; Dockerfiles and mounts exist; Switchyard containers are hardened")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
