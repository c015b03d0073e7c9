"""Config validation: schema errors name the key; defaults come from the schema; docs stay in sync."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlmec_core.config import default_config, load_config, load_schema, schema_markdown, validate_config
from rlmec_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "smoke.yaml"):
        cfg = load_config(REPO_ROOT / "config" / name)
        assert cfg["engine"]["gpu_memory_utilization"] <= 0.2  # vLLM on CPU reserves this share of RAM


def _layered(base: dict, over: dict) -> dict:
    """``over`` layered on ``base`` as Snakemake layers config files (nested mappings merged key by key)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _layered(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def test_demo_overlays_are_valid_and_say_what_they_change():
    """The overlays a user layers on the demo (README): rounds.yaml, and select_last.yaml, which turns off
    in-training validation everywhere (every update saves its last weights: how the comparison was measured)."""
    demo = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    rounds = validate_config(_layered(demo, yaml.safe_load((REPO_ROOT / "config" / "rounds.yaml").read_text())))
    assert rounds["rounds"] == 3
    last = validate_config(_layered(demo, yaml.safe_load((REPO_ROOT / "config" / "select_last.yaml").read_text())))
    assert not last["rl"]["validation"]["enabled"] and not last["grm"]["validation"]["enabled"]
    assert last["rl"]["validation"]["max_new_tokens"] == demo["rl"]["validation"]["max_new_tokens"]  # merged
    on = validate_config(demo)
    assert on["rl"]["validation"]["enabled"] and on["rl"]["select"] == "best" and on["grm"]["validation"]["enabled"]


def test_defaults_fill_nested_blocks():
    cfg = default_config()
    assert cfg["task"]["synth"]["n_train"] > 0
    assert cfg["policy"]["bootstrap"]["train"]["lr"] > 0
    assert cfg["engine"]["backend"] == "auto"
    partial = validate_config({"policy": {"bootstrap": {"train": {"lr": 0.5}}}})
    assert partial["policy"]["bootstrap"]["train"]["lr"] == 0.5
    assert partial["policy"]["bootstrap"]["train"]["epochs"] == 1


@pytest.mark.parametrize(
    "config, key, problem",
    [
        ({"tsak": {}}, "<top level>", "'tsak' was unexpected"),
        ({"task": {"synth": {"n_trian": 5}}}, "task.synth", "'n_trian' was unexpected"),
        ({"seed": "zero"}, "seed", "not of type 'integer'"),
        ({"engine": {"backend": "tensorrt"}}, "engine.backend", "is not one of"),
        ({"policy": {"bootstrap": {"train": {"lr": -1}}}}, "policy.bootstrap.train.lr", "less than or equal"),
        ({"task": {"prompt_template": "no placeholder"}}, "task.prompt_template", "does not match"),
        ({"compare": {"methods": ["sft", "ppo"]}}, "compare.methods.1", "is not one of"),
        ({"compare": {"lr": {"dpo": 0}}}, "compare.lr.dpo", "less than or equal"),
        ({"compare": {"lr": {"ppo": 1e-4}}}, "compare.lr", "'ppo' was unexpected"),
        ({"compare": {"sweep": {"lrs": []}}}, "compare.sweep.lrs", "should be non-empty"),
        ({"compare": {"seeds": [0, 0]}}, "compare.seeds", "non-unique"),
        ({"compare": {"grpo": {"checkpoint_every": -1}}}, "compare.grpo.checkpoint_every", "less than the minimum"),
    ],
)
def test_bad_config_names_the_key(config, key, problem):
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert f"{key}: " in str(info.value)
    assert problem in str(info.value)


def test_every_key_is_documented_and_docs_are_current():
    schema = load_schema()

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"config key {path}{key} has no description in config/schema.yaml"
            walk(sub, f"{path}{key}.")

    walk(schema, "")
    for name, sub in schema["$defs"].items():
        walk(sub, f"$defs.{name}.")
    docs = (REPO_ROOT / "docs" / "config.md").read_text()
    assert docs == schema_markdown(schema), "docs/config.md is stale: run `python scripts/gen_docs.py`"


def test_every_artifact_column_is_documented_and_docs_are_current():
    from rlmec_core.schemas import ALL_SCHEMAS, artifacts_markdown, field_doc

    for name, schema in ALL_SCHEMAS.items():
        for field in schema:
            assert field_doc(field), f"column {field.name!r} of schema {name!r} has no doc"
    docs = (REPO_ROOT / "docs" / "artifacts.md").read_text()
    assert docs == artifacts_markdown(), "docs/artifacts.md is stale: run `python scripts/gen_docs.py`"


@pytest.mark.slow
def test_snakemake_rejects_a_bad_config_before_running_anything(tmp_path):
    for item in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    cfg = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    cfg["evaluate"]["max_new_tokns"] = 10
    cfg["seed"] = "zero"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [SNAKEMAKE, "--cores", "1", "--configfile", "bad.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "max_new_tokns" in out or "'zero' is not of type" in out
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()
