"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("RLMEC_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$RLMEC_SHARED_DATA``): real public data sets; tests skip when absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set RLMEC_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def demo_task(tmp_path_factory) -> dict[str, Path]:
    """A small generated arith task: {split: parquet path}."""
    from rlmec_core.config import load_config
    from rlmec_core.stages.data import SPLITS, run_data

    cfg = load_config(REPO_ROOT / "config" / "smoke.yaml")
    out = tmp_path_factory.mktemp("demo_task")
    paths = {s: out / f"{s}.parquet" for s in SPLITS}
    task = dict(cfg["task"])
    task["synth"] = {**task["synth"], "n_test": 120}
    run_data(task, cfg["seed"], paths, out / "stats.json")
    return paths


@pytest.fixture(scope="session")
def demo_policy(tmp_path_factory, demo_task) -> Path:
    """A tiny policy bootstrapped on ``demo_task`` with the smoke config (about 20 s on 2 cores)."""
    from rlmec_core.config import load_config
    from rlmec_core.stages.policy import bootstrap_policy

    cfg = load_config(REPO_ROOT / "config" / "smoke.yaml")
    out = tmp_path_factory.mktemp("demo_policy")
    bootstrap_policy(
        demo_task["train"],
        out / "sft",
        adapter_name="arith",
        prompt_template=cfg["task"]["prompt_template"],
        bootstrap=cfg["policy"]["bootstrap"],
        seed=0,
        checkpoint_dir=out / "ckpt",
        metrics_path=out / "train.jsonl",
        validation_path=demo_task["validation"],
    )
    return out / "sft"
