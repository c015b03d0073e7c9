"""Run configuration: loading and validating ``config/*.yaml`` outside Snakemake (the ``rlmec`` command
line, tests), and turning config blocks into the library's settings objects.

Inside the workflow the Snakefile validates with ``snakemake.utils.validate`` against the same
``config/schema.yaml``; ``validate_config`` here applies the same rules (unknown keys rejected, defaults
filled in from the schema) so that both entry points see identical settings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rlmec_core.errors import ConfigError
from rlmec_core.sampling import EngineSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config schema not found at {p} (run from a clone of the repository)")
    return yaml.safe_load(p.read_text(encoding="utf-8"))


def _error_path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A validated deep copy of ``config`` with the schema's defaults filled in.

    Raises:
        ConfigError: naming the offending key (dotted path) and the problem.
    """
    from jsonschema import Draft202012Validator, validators

    schema = dict(schema) if schema is not None else load_schema()
    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    validator_cls = validators.extend(base, {"properties": set_defaults})
    data = copy.deepcopy(dict(config))
    errors = sorted(validator_cls(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {_error_path(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    return data


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (see ``validate_config``)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc


def default_config() -> dict[str, Any]:
    """The schema's defaults alone (what an empty config file means)."""
    return validate_config({})


def engine_settings(engine: Mapping[str, Any]) -> EngineSettings:
    """``EngineSettings`` from a validated ``engine`` block."""
    return EngineSettings(**dict(engine))


def _rows(schema: Mapping[str, Any], defs: Mapping[str, Any], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:
            ref = defs[sub["$ref"].rsplit("/", 1)[-1]]
            sub = {**ref, **{k: v for k, v in sub.items() if k != "$ref"}}
        path = f"{prefix}{key}"
        types = sub.get("type", "")
        type_s = " or ".join(types) if isinstance(types, list) else str(types)
        if "enum" in sub:
            type_s += ": " + " / ".join(f"`{v}`" for v in sub["enum"])
        if sub.get("type") == "array" and "enum" in sub.get("items", {}):
            type_s += " of " + " / ".join(f"`{v}`" for v in sub["items"]["enum"])
        default = "" if sub.get("type") == "object" else f"`{json.dumps(sub.get('default'))}`"
        desc = " ".join(str(sub.get("description", "")).split())
        rows.append((path, type_s, default, desc))
        if sub.get("type") == "object" or "properties" in sub:  # nullable objects too
            rows.extend(_rows(sub, defs, path + "."))
        items = sub.get("items", {})
        if "$ref" in items:
            items = defs[items["$ref"].rsplit("/", 1)[-1]]
        if "properties" in items:  # an array of objects: its entries' keys as key[].sub
            rows.extend(_rows(items, defs, path + "[]."))
    return rows


def schema_markdown(schema: Mapping[str, Any] | None = None) -> str:
    """A Markdown reference of every config key (docs/config.md is this text)."""
    schema = schema if schema is not None else load_schema()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from config/schema.yaml by `python scripts/gen_docs.py`; do not edit by hand. -->",
        "",
        " ".join(str(schema.get("description", "")).split()),
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for path, type_s, default, desc in _rows(schema, schema.get("$defs", {}), ""):
        lines.append(f"| `{path}` | {type_s} | {default} | {desc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
