#!/usr/bin/env python3
"""Static checks of the Grafana dashboard and the Prometheus alerts.

* The dashboard is valid JSON with a uid, and every panel queries something.
* Every PromQL expression -- dashboard panels (with Grafana's variables substituted) and
  alerts -- parses: they are written into a rules file for `promtool check rules`.
* Every series they name is in deploy/observability/metrics.txt, the metric contract.
* Every alert has a severity, a summary, a description and a runbook_url whose file
  and anchor exist in the repository.

Usage: observability.py --repo DIR --promtool PROMTOOL
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SERIES = re.compile(r"\bswitchyard_[a-z0-9_]+\b")
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": "switchyard",
    "$region": "us-east-1",
}


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown file."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--promtool", required=True)
    args = ap.parse_args()
    obs = args.repo / "deploy" / "observability"
    errors: list[str] = []
    contract = {
        line.strip()
        for line in (obs / "metrics.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }

    exprs: list[tuple[str, str]] = []
    for path in sorted((obs / "grafana").glob("*.json")):
        try:
            dash = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            errors.append(f"{path.name}: not valid JSON: {e}")
            continue
        if not dash.get("uid") or not dash.get("title"):
            errors.append(f"{path.name}: a dashboard needs a uid and a title")
        ids = set()
        for panel in dash.get("panels", []):
            if panel.get("id") in ids:
                errors.append(f"{path.name}: panel id {panel.get('id')} is used twice")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            targets = panel.get("targets") or []
            if not targets:
                errors.append(f"{path.name}: panel {panel.get('title')!r} has no query")
            for t in targets:
                expr = t.get("expr", "")
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                if "$" in expr:
                    errors.append(f"{path.name}: panel {panel.get('title')!r} uses an unknown variable: {t.get('expr')}")
                exprs.append((f"{path.name}: {panel.get('title')}", expr))

    alerts_path = obs / "prometheus" / "alerts.yaml"
    rules = yaml.safe_load(alerts_path.read_text(encoding="utf-8"))
    runbook_anchor_cache: dict[Path, set[str]] = {}
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            exprs.append((f"alerts.yaml: {name}", rule["expr"]))
            if "alert" not in rule:
                continue
            labels, ann = rule.get("labels", {}), rule.get("annotations", {})
            if labels.get("severity") not in ("critical", "warning", "info"):
                errors.append(f"alerts.yaml: {name}: severity must be critical, warning or info")
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    errors.append(f"alerts.yaml: {name}: annotation {key} is missing")
            url = ann.get("runbook_url", "")
            file_part, _, anchor = url.partition("#")
            target = args.repo / file_part
            if not file_part or not target.is_file():
                errors.append(f"alerts.yaml: {name}: runbook {file_part!r} does not exist")
                continue
            anchors = runbook_anchor_cache.setdefault(target, github_anchors(target.read_text(encoding="utf-8")))
            if anchor not in anchors:
                errors.append(f"alerts.yaml: {name}: {file_part} has no section #{anchor}")

    for where, expr in exprs:
        for series in set(SERIES.findall(expr)):
            if series not in contract:
                errors.append(f"{where}: {series} is not in deploy/observability/metrics.txt")

    # promtool parses every expression as a recording rule.
    with tempfile.TemporaryDirectory() as tmp:
        rules_file = Path(tmp) / "expressions.yaml"
        rules_file.write_text(
            yaml.safe_dump({"groups": [{"name": "expressions", "rules": [
                {"record": f"check:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)
            ]}]}),
            encoding="utf-8",
        )
        proc = subprocess.run([args.promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
        if proc.returncode != 0:
            out = proc.stdout + proc.stderr
            for m in re.finditer(r"check:expr_(\d+)", out):
                errors.append(f"{exprs[int(m.group(1))][0]}: PromQL does not parse")
            errors.append(f"promtool rejected an expression:\n{out}")

    for e in errors:
        print(f"observability: FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"observability: {len(exprs)} expressions parse and use only contract series; every alert has its runbook")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
