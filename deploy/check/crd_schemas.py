#!/usr/bin/env python3
"""Schemas of the Prometheus Operator objects the chart renders (ServiceMonitor,
PrometheusRule), which kubernetes-validate has no schema for. Only the fields the chart
uses are allowed, with the Operator's types, so a typo in a template fails here.

Usage: crd_schemas.py RENDERED.yaml [...]
"""

import sys

import jsonschema
import yaml

DURATION = {"type": "string", "pattern": r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$"}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {}, "kind": {}, "metadata": METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                    },
                    "endpoints": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "additionalProperties": False, "required": ["port"],
                            "properties": {
                                "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                "interval": DURATION, "scrapeTimeout": DURATION, "scheme": {"enum": ["http", "https"]},
                            },
                        },
                    },
                },
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {}, "kind": {}, "metadata": METADATA,
            "spec": {
                "type": "object", "required": ["groups"], "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"}, "interval": DURATION,
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object", "required": ["expr"], "additionalProperties": False,
                                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                        "properties": {
                                            "alert": {"type": "string"}, "record": {"type": "string"},
                                            "expr": {"type": "string"}, "for": DURATION,
                                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def main(paths):
    errors, seen = [], 0
    for path in paths:
        for doc in yaml.safe_load_all(open(path, encoding="utf-8")):
            if not doc:
                continue
            schema = SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
            if doc.get("apiVersion", "").startswith("monitoring.coreos.com/") and schema is None:
                errors.append(f"{path}: {doc['kind']} has no schema here; add one to crd_schemas.py")
                continue
            if schema is None:
                continue
            seen += 1
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
                errors.append(f"{path}: {doc['kind']}/{doc['metadata'].get('name')}: {'/'.join(map(str, e.path))}: {e.message}")
    for e in errors:
        print(f"crd-schemas: FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"crd-schemas: {seen} Prometheus Operator objects match their schemas")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
