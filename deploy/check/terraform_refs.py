#!/usr/bin/env python3
"""Offline checks of Terraform modules whose providers cannot be downloaded here.

`terraform validate` needs every provider's schema, so for modules that use the AWS,
Kubernetes and Helm providers this does the part of it that needs none:

* every .tf file parses as HCL (python-hcl2);
* every `var.`, `local.`, `module.`, `data.` and resource reference names something the
  module declares, and every `module.<name>.<output>` an output of that module;
* every argument of a module call is a variable of the called module, and every variable
  without a default is given;
* no variable is declared and never used.

Usage: terraform_refs.py DIR [DIR ...]   (each DIR a module; local child modules are read too)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2

RESOURCE_PREFIXES = ("aws_", "kubernetes_", "helm_", "random_", "tls_", "null_", "terraform_data")
META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}


def unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def strings(node) -> list[str]:
    """Every string in a parsed HCL tree, keys included (block labels carry references
    only in meta-arguments such as `providers`)."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k.startswith("__") and k.endswith("__"):
                continue
            out.append(k)
            out.extend(strings(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(strings(v))
    elif isinstance(node, str):
        out.append(node)
    return out


class Module:
    def __init__(self, path: Path):
        self.path = path
        self.errors: list[str] = []
        self.variables: dict[str, bool] = {}  # name -> has default
        self.locals: set[str] = set()
        self.outputs: set[str] = set()
        self.resources: set[str] = set()
        self.data: set[str] = set()
        self.modules: dict[str, dict] = {}
        self.texts: list[tuple[str, str]] = []
        for tf in sorted(path.glob("*.tf")):
            try:
                with tf.open(encoding="utf-8") as fh:
                    doc = hcl2.load(fh)
            except Exception as e:  # noqa: BLE001 - the parser raises several kinds
                self.errors.append(f"{tf}: does not parse as HCL: {str(e).splitlines()[0]}")
                continue
            self._read(tf, doc)

    def _read(self, tf: Path, doc: dict):
        for block in doc.get("variable", []):
            for name, body in block.items():
                self.variables[unquote(name)] = "default" in body
                self.texts += [(f"{tf.name}: variable {unquote(name)}", s) for s in strings({k: v for k, v in body.items() if k != "default"})]
        for block in doc.get("locals", []):
            for name, value in block.items():
                if name.startswith("__"):
                    continue
                self.locals.add(name)
                self.texts += [(f"{tf.name}: local.{name}", s) for s in strings(value)]
        for block in doc.get("output", []):
            for name, body in block.items():
                self.outputs.add(unquote(name))
                self.texts += [(f"{tf.name}: output {unquote(name)}", s) for s in strings(body)]
        for kind, target in (("resource", self.resources), ("data", self.data)):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        target.add(f"{unquote(rtype)}.{unquote(rname)}")
                        self.texts += [(f"{tf.name}: {kind} {unquote(rtype)}.{unquote(rname)}", s) for s in strings(body)]
        for block in doc.get("module", []):
            for name, body in block.items():
                self.modules[unquote(name)] = body
                self.texts += [(f"{tf.name}: module {unquote(name)}", s) for s in strings(body)]
        for kind in ("provider", "terraform", "check", "moved", "import", "removed"):
            for block in doc.get(kind, []):
                self.texts += [(f"{tf.name}: {kind}", s) for s in strings(block)]

    def child(self, name: str) -> "Module | None":
        source = unquote(str(self.modules[name].get("source", "")))
        if source.startswith("./") or source.startswith("../"):
            return Module((self.path / source).resolve())
        return None


def check(path: Path) -> list[str]:
    mod = Module(path)
    errors = list(mod.errors)
    children = {name: mod.child(name) for name in mod.modules}
    used_vars: set[str] = set()
    for where, text in mod.texts:
        for m in re.finditer(r"(?<![\w.])var\.(\w+)", text):
            used_vars.add(m.group(1))
            if m.group(1) not in mod.variables:
                errors.append(f"{path}: {where}: var.{m.group(1)} is not declared")
        for m in re.finditer(r"(?<![\w.])local\.(\w+)", text):
            if m.group(1) not in mod.locals:
                errors.append(f"{path}: {where}: local.{m.group(1)} is not declared")
        for m in re.finditer(r"(?<![\w.])module\.(\w+)(?:\.(\w+))?", text):
            name, output = m.group(1), m.group(2)
            if name not in mod.modules:
                errors.append(f"{path}: {where}: module.{name} is not declared")
            elif output and children.get(name) is not None and output not in children[name].outputs:
                errors.append(f"{path}: {where}: module.{name} has no output {output}")
        for m in re.finditer(r"(?<![\w.])data\.(\w+)\.(\w+)", text):
            if f"{m.group(1)}.{m.group(2)}" not in mod.data:
                errors.append(f"{path}: {where}: data.{m.group(1)}.{m.group(2)} is not declared")
        for m in re.finditer(r"(?<![\w.])((?:%s)\w*)\.(\w+)" % "|".join(RESOURCE_PREFIXES), text):
            ref = f"{m.group(1)}.{m.group(2)}"
            # `aws.hub` style provider references are not resources.
            if m.group(1) in ("aws",):
                continue
            if ref not in mod.resources:
                errors.append(f"{path}: {where}: resource {ref} is not declared")
    for name in sorted(set(mod.variables) - used_vars):
        errors.append(f"{path}: variable {name} is declared but never used")
    for name, body in mod.modules.items():
        child = children[name]
        if child is None:
            continue
        errors += [e for e in child.errors if e not in errors]
        args = {k for k in body if not k.startswith("__")} - META_ARGS
        for a in sorted(args - set(child.variables)):
            errors.append(f"{path}: module {name}: {child.path.name} has no variable {a}")
        for v, has_default in sorted(child.variables.items()):
            if not has_default and v not in args:
                errors.append(f"{path}: module {name}: required variable {v} of {child.path.name} is not set")
    return errors


def main(argv: list[str]) -> int:
    errors: list[str] = []
    for d in argv:
        errors += check(Path(d))
    for e in errors:
        print(f"terraform-refs: FAIL {e}", file=sys.stderr)
    if not errors:
        print(f"terraform-refs: {len(argv)} modules parse; every reference and module argument resolves")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
