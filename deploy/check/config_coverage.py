#!/usr/bin/env python3
"""Every configuration field of every binary must be settable from the Helm chart's values.

The fields are read from the sources themselves, so the check grows with them:

* every key path of each binary's committed defaults file (`<crate>/config/defaults.toml`),
* every field of the binary's `Config` struct and the structs it nests (`src/config.rs`
  and the shared `protocol` crate), which adds optional fields that have no default
  (e.g. `auth.jwt.signing_key`, `telemetry.otlp_endpoint`) and tells which fields are
  secret (serialized through one of the `redact*` helpers).

Then, per binary:

1. the chart lists each secret field under `secrets.fields.<binary>` and no other;
2. values.yaml mirrors every non-secret key of the defaults file, and names no key the
   binary does not know (the binaries refuse unknown keys at start);
3. the chart is rendered with a distinct sentinel value for every field (a secret through
   `secrets.values`, the rest through the binary's `config` block, plus a new entry in
   every map such as `plans`), and the configuration each container would load -- its
   TOML file, then its SWITCHYARD_* environment, as the binaries layer them -- must hold
   every sentinel, with the same TOML type (an integer must not arrive as a float);
4. every values profile given with --profile renders config files that parse as TOML and
   hold only known keys, so a typo in a profile fails here rather than at start-up.

Usage: config_coverage.py --repo DIR --chart DIR --helm HELM [--profile FILE ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BINARIES = {
    # binary: (crate dir, env prefix, values key of its config block)
    "control-plane": ("control-plane", "SWITCHYARD_CP_", "controlPlane"),
    "worker": ("worker", "SWITCHYARD_WORKER_", "workers"),
    "autoscaler": ("autoscaler", "SWITCHYARD_AUTOSCALER_", "autoscaler"),
}

# Fields the chart derives instead of reading from the `config` block, and how the check
# sets them: the worker's region is the key of its pool.
DERIVED = {("worker", "worker.region")}

INT_TYPES = {"u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize"}
FLOAT_TYPES = {"f32", "f64"}


# ---------------------------------------------------------------------------------------
# Reading the Rust configuration structs
# ---------------------------------------------------------------------------------------


@dataclass
class RustField:
    name: str
    ty: str
    secret: bool
    flatten: bool


@dataclass
class Leaf:
    """A configuration field: its Rust type (when known) and its default (when any)."""

    ty: str | None = None
    default: object = None
    has_default: bool = False
    secret: bool = False


@dataclass
class Schema:
    leaves: dict[str, Leaf] = field(default_factory=dict)
    maps: set[str] = field(default_factory=set)  # paths of free-keyed tables (plans, ...)
    source_read: bool = False


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def read_structs(files: list[Path]) -> dict[str, list[RustField]]:
    """`struct Name { pub field: Type, ... }` blocks, with the serde attributes that matter."""
    structs: dict[str, list[RustField]] = {}
    for path in files:
        src = _strip_comments(path.read_text(encoding="utf-8"))
        for m in re.finditer(r"\bstruct\s+(\w+)\s*(?:<[^>{]*>)?\s*\{", src):
            name, start = m.group(1), m.end()
            depth, i = 1, start
            while i < len(src) and depth:
                depth += {"{": 1, "}": -1}.get(src[i], 0)
                i += 1
            body = src[start : i - 1]
            fields: list[RustField] = []
            attrs: list[str] = []
            # Split the body at top-level commas that end a field.
            for chunk in _fields(body):
                chunk = chunk.strip()
                while chunk.startswith("#["):
                    end = _attr_end(chunk)
                    attrs.append(chunk[:end])
                    chunk = chunk[end:].strip()
                fm = re.match(r"(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:\s*(.+)$", chunk, flags=re.S)
                if not fm:
                    attrs = []
                    continue
                attr_text = " ".join(attrs)
                attrs = []
                if re.search(r"serde\([^)]*\bskip\b", attr_text):
                    continue
                rename = re.search(r'serde\([^)]*\brename\s*=\s*"([^"]+)"', attr_text)
                fields.append(
                    RustField(
                        name=rename.group(1) if rename else fm.group(1),
                        ty=re.sub(r"\s+", "", fm.group(2)),
                        secret=bool(re.search(r'serialize_with\s*=\s*"[\w:]*redact', attr_text)),
                        flatten=bool(re.search(r"serde\([^)]*\bflatten\b", attr_text)),
                    )
                )
            # The binary's own crate is read last, so its definitions win a name clash.
            structs[name] = fields
    return structs


def _attr_end(text: str) -> int:
    depth = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _fields(body: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in body:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return out


def _generic(ty: str, outer: str) -> str | None:
    m = re.fullmatch(rf"(?:[\w:]*::)?{outer}<(.+)>", ty)
    return m.group(1) if m else None


def _base(ty: str) -> str:
    return ty.split("::")[-1]


def walk_structs(structs, name: str, prefix: str, defaults: dict, schema: Schema, seen=()):
    if name in seen:
        return
    for f in structs.get(name, []):
        path = f"{prefix}.{f.name}" if prefix else f.name
        sub_defaults = defaults.get(f.name, {}) if isinstance(defaults, dict) else {}
        if f.flatten:
            walk_structs(structs, _base(f.ty), prefix, defaults, schema, seen + (name,))
            continue
        ty = f.ty
        opt = _generic(ty, "Option")
        if opt:
            ty = opt
        map_of = _generic(ty, "BTreeMap") or _generic(ty, "HashMap") or _generic(ty, "IndexMap")
        if map_of:
            value_ty = map_of.split(",", 1)[1]
            schema.maps.add(path)
            for key, entry in (sub_defaults or {}).items():
                _walk_type(structs, value_ty, f"{path}.{key}", entry, schema, seen + (name,), f.secret)
            continue
        _walk_type(structs, ty, path, sub_defaults, schema, seen + (name,), f.secret)


def _walk_type(structs, ty, path, defaults, schema, seen, secret):
    base = _base(ty)
    if base in structs and not _generic(ty, "Vec"):
        walk_structs(structs, base, path, defaults if isinstance(defaults, dict) else {}, schema, seen)
        return
    if isinstance(defaults, dict) and defaults and base not in structs:
        # An enum or another type that the defaults file spells as a table (e.g. an
        # executor `{type = "command", ...}`): its keys are the fields.
        for key, value in _flatten(defaults, path).items():
            schema.leaves.setdefault(key, Leaf())
        return
    leaf = schema.leaves.setdefault(path, Leaf())
    leaf.ty = ty
    leaf.secret = leaf.secret or secret


def _flatten(table: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def load_schema(repo: Path, crate: str) -> Schema | None:
    defaults_path = repo / crate / "config" / "defaults.toml"
    if not defaults_path.exists():
        return None
    defaults = tomllib.loads(defaults_path.read_text(encoding="utf-8"))
    schema = Schema()
    files = sorted((repo / "protocol" / "src").rglob("*.rs")) + sorted((repo / crate / "src").rglob("*.rs"))
    structs = read_structs(files)
    if "Config" in structs:
        walk_structs(structs, "Config", "", defaults, schema)
        schema.source_read = True
    for path, value in _flatten(defaults).items():
        leaf = schema.leaves.setdefault(path, Leaf())
        leaf.default, leaf.has_default = value, True
    # A path that is a table in the defaults (e.g. `plans.free`) is not itself a leaf.
    for path in list(schema.leaves):
        if any(other.startswith(path + ".") for other in schema.leaves):
            del schema.leaves[path]
    return schema


# ---------------------------------------------------------------------------------------
# Sentinels and nested dicts
# ---------------------------------------------------------------------------------------


class Sentinels:
    def __init__(self, structs_hint: dict | None = None):
        self.n = 0

    def make(self, leaf: Leaf, path: str):
        self.n += 1
        n = self.n
        ty = leaf.ty or ""
        base = _base(_generic(ty, "Option") or ty)
        vec = _generic(base, "Vec") or _generic(ty, "Vec")
        if vec is not None or isinstance(leaf.default, list):
            inner = _base(vec) if vec else None
            if inner in ("VerifyKey",) or (leaf.default and isinstance(leaf.default[0], dict)):
                return [{"kid": f"sentinel-{n}", "public_key": f"sentinel-key-{n}"}]
            if inner in INT_TYPES:
                return [7000 + n]
            return [f"sentinel-{n}"]
        if base in INT_TYPES or (isinstance(leaf.default, int) and not isinstance(leaf.default, bool)):
            return 7000 + n
        if base in FLOAT_TYPES or isinstance(leaf.default, float):
            return n + 0.25
        if base == "bool" or isinstance(leaf.default, bool):
            return not leaf.default if isinstance(leaf.default, bool) else True
        if base == "SocketAddr" or path.endswith("listen"):
            return f"0.0.0.0:{20000 + n}"
        if base == "Duration" or _looks_like_duration(leaf.default):
            return f"{7000 + n}ms"
        if path.endswith("_root") or base == "PathBuf":
            return f"/sentinel/{n}"
        return f"sentinel-{n}"


def _looks_like_duration(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"\d+(ms|s|m|h|d)", value) is not None


def set_path(tree: dict, path: str, value):
    keys = path.split(".")
    for key in keys[:-1]:
        nxt = tree.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            tree[key] = nxt
        tree = nxt
    tree[keys[-1]] = value


def get_path(tree, path: str):
    for key in path.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return KeyError
        tree = tree[key]
    return tree


def leaf_paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in (tree or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out |= leaf_paths(value, path)
        else:
            out.add(path)
    return out


# ---------------------------------------------------------------------------------------
# Rendering and reading back what a container would load
# ---------------------------------------------------------------------------------------


def helm_template(helm: str, chart: Path, values_files: list[Path]) -> list[dict]:
    cmd = [helm, "template", "coverage", str(chart), "--namespace", "switchyard"]
    for f in values_files:
        cmd += ["-f", str(f)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"helm template failed:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def figment_env_value(text: str):
    """The binaries parse an environment value as an inline array when it is one."""
    stripped = text.strip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return text


def effective_config(docs: list[dict], deployment: str, container: str, binary: str) -> dict:
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    dep = by_kind.get(("Deployment", deployment))
    if dep is None:
        raise SystemExit(f"{binary}: the chart renders no Deployment {deployment}")
    spec = dep["spec"]["template"]["spec"]
    ctr = next(c for c in spec["containers"] if c["name"] == container)
    prefix = BINARIES[binary][1]
    env = {e["name"]: e for e in ctr.get("env", [])}
    config_file = env.get(prefix + "CONFIG", {}).get("value")
    if not config_file:
        raise SystemExit(f"{binary}: {deployment} does not set {prefix}CONFIG")
    mount_dir, file_name = config_file.rsplit("/", 1)
    mount = next((m for m in ctr["volumeMounts"] if m["mountPath"] == mount_dir), None)
    if mount is None:
        raise SystemExit(f"{binary}: nothing is mounted at {mount_dir}")
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = by_kind[("ConfigMap", volume["configMap"]["name"])]
    try:
        cfg = tomllib.loads(cm["data"][file_name])
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"{binary}: {cm['metadata']['name']}/{file_name} is not valid TOML: {e}")
    for name, e in env.items():
        if not name.startswith(prefix) or name == prefix + "CONFIG":
            continue
        path = ".".join(part.lower() for part in name[len(prefix) :].split("__"))
        if "value" in e:
            value = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            secret = by_kind.get(("Secret", ref["name"]))
            if secret is None:
                raise SystemExit(f"{binary}: env {name} reads Secret {ref['name']}, which the chart does not render")
            value = secret["stringData"][ref["key"]]
        set_path(cfg, path, figment_env_value(value))
    return cfg


def same(expected, actual) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int) and not isinstance(actual, int):
        return False  # an integer field written as a float is refused by the binary
    if isinstance(expected, float):
        return isinstance(actual, (int, float)) and float(actual) == expected
    return expected == actual


# ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--chart", type=Path, required=True)
    ap.add_argument("--helm", required=True)
    ap.add_argument("--profile", type=Path, action="append", default=[])
    args = ap.parse_args()

    values = yaml.safe_load((args.chart / "values.yaml").read_text(encoding="utf-8"))
    errors: list[str] = []
    schemas: dict[str, Schema] = {}
    for binary, (crate, _prefix, key) in BINARIES.items():
        schema = load_schema(args.repo, crate)
        if schema is None:
            print(f"config-coverage: {binary}: no {crate}/config/defaults.toml yet, nothing to cover")
            continue
        if not schema.source_read:
            print(f"config-coverage: {binary}: no `struct Config` found in {crate}/src; using the defaults file alone")
        schemas[binary] = schema

    overrides: dict = {"secrets": {"values": {}}, "workers": {"pools": {}}}
    expected: dict[str, dict[str, object]] = {}
    sentinels = Sentinels()
    for binary, schema in schemas.items():
        crate, _prefix, key = BINARIES[binary]
        secret_paths = {p for p, leaf in schema.leaves.items() if leaf.secret}
        listed = set(values["secrets"]["fields"].get(binary) or [])
        known = set(schema.leaves)
        for p in sorted(secret_paths - listed):
            errors.append(f"{binary}: {p} is secret in {crate}/src (redacted) but secrets.fields.{binary} in values.yaml does not list it")
        for p in sorted(listed - known):
            errors.append(f"{binary}: secrets.fields.{binary} lists {p}, which is not a field of {crate}'s configuration")

        mirror = values[key].get("config") or {}
        mirror_paths = leaf_paths(mirror)
        for p, leaf in sorted(schema.leaves.items()):
            if leaf.has_default and p not in listed and (binary, p) not in DERIVED and p not in mirror_paths:
                if not any(p.startswith(m + ".") for m in mirror_paths if get_path(mirror, m) in ({}, [])):
                    errors.append(f"{binary}: values.yaml {key}.config lacks {p} (default {leaf.default!r} in {crate}/config/defaults.toml)")
        for p in sorted(mirror_paths):
            value = get_path(mirror, p)
            if p not in known and not (value in ({}, None) and any(k.startswith(p + ".") or k == p for k in known)):
                if not any(p.startswith(m + ".") for m in schema.maps):
                    errors.append(f"{binary}: values.yaml {key}.config.{p} is not a field of {crate}'s configuration")
            if p in listed and value is not None:
                errors.append(f"{binary}: values.yaml {key}.config.{p} is a secret field; it belongs in secrets")

        # Sentinels: every field, and one new entry in every map.
        want: dict[str, object] = {}
        config_override: dict = {}
        leaves = dict(schema.leaves)
        for m in sorted(schema.maps):
            entries = sorted({p[len(m) + 1 :].split(".", 1)[0] for p in leaves if p.startswith(m + ".")})
            if entries:
                for p, leaf in list(leaves.items()):
                    if p.startswith(f"{m}.{entries[0]}."):
                        leaves[f"{m}.sentinel-entry{p[len(m) + 1 + len(entries[0]):]}"] = leaf
        for p, leaf in sorted(leaves.items()):
            value = sentinels.make(leaf, p)
            want[p] = value
            if (binary, p) in DERIVED:
                continue
            if p in listed:
                overrides["secrets"]["values"][f"{binary}.{p}"] = value
            else:
                set_path(config_override, p, value)
        if binary == "worker":
            region = "zz-sentinel-9"
            want["worker.region"] = region
            overrides["workers"]["pools"] = {name: None for name in (values["workers"]["pools"] or {})}
            overrides["workers"]["pools"][region] = {"replicas": 1}
        overrides.setdefault(key, {})["config"] = config_override
        if binary == "autoscaler":
            overrides[key]["enabled"] = True
        expected[binary] = want

    # Secrets of a binary without a defaults file still need a value for the render.
    for binary, fields in values["secrets"]["fields"].items():
        for p in fields or []:
            overrides["secrets"]["values"].setdefault(f"{binary}.{p}", f"sentinel-{binary}-{p}")

    with tempfile.TemporaryDirectory() as tmp:
        override_file = Path(tmp) / "sentinels.yaml"
        override_file.write_text(yaml.safe_dump(overrides, sort_keys=True), encoding="utf-8")
        docs = helm_template(args.helm, args.chart, [override_file])
    fullname = "coverage-switchyard"
    targets = {
        "control-plane": (f"{fullname}-control-plane", "control-plane"),
        "worker": (f"{fullname}-worker-zz-sentinel-9", "worker"),
        "autoscaler": (f"{fullname}-autoscaler", "autoscaler"),
    }
    for binary, want in expected.items():
        deployment, container = targets[binary]
        cfg = effective_config(docs, deployment, container, binary)
        missing = 0
        for p, value in sorted(want.items()):
            got = get_path(cfg, p)
            if got is KeyError or not same(value, got):
                missing += 1
                where = "secrets.values" if p in (values["secrets"]["fields"].get(binary) or []) else f"{BINARIES[binary][2]}.config"
                errors.append(f"{binary}: {p} set to {value!r} through {where} reaches the container as {('nothing' if got is KeyError else repr(got))}")
        known = set(want) | set(schemas[binary].leaves)
        for p in sorted(leaf_paths(cfg) - known):
            if not any(p.startswith(m + ".") for m in schemas[binary].maps):
                errors.append(f"{binary}: the chart renders {p}, which is not a field of the binary's configuration")
        print(f"config-coverage: {binary}: {len(want) - missing}/{len(want)} fields reach the container "
              f"({sum(1 for p in want if p in (values['secrets']['fields'].get(binary) or []))} from the Secret)")

    # Profiles: rendered config files parse and name only known fields.
    for profile in args.profile:
        docs = helm_template(args.helm, args.chart, [profile])
        for doc in docs:
            if doc["kind"] != "ConfigMap":
                continue
            for name, text in (doc.get("data") or {}).items():
                binary = name.removesuffix(".toml")
                if binary not in BINARIES or not name.endswith(".toml"):
                    continue
                try:
                    cfg = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    errors.append(f"{profile.name}: {doc['metadata']['name']}/{name} is not valid TOML: {e}")
                    continue
                schema = schemas.get(binary)
                if schema is None:
                    continue
                for p in sorted(leaf_paths(cfg)):
                    if p not in schema.leaves and not any(p.startswith(m + ".") for m in schema.maps):
                        errors.append(f"{profile.name}: {doc['metadata']['name']}/{name}: {p} is not a field of the {binary} configuration")
        print(f"config-coverage: profile {profile.name}: config files parse and hold only known fields")

    for e in errors:
        print(f"config-coverage: FAIL {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
