"""The demo policy's bootstrap with in-training validation: the kept checkpoint and a kill mid-bootstrap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from killing import checkpoint_steps, run_and_kill
from safetensors.torch import load_file

from rlmec_core.config import load_config
from rlmec_core.stages.policy import validation_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_validation_settings_from_config():
    cfg = load_config(REPO_ROOT / "config" / "config.yaml")["policy"]["bootstrap"]["validation"]
    settings = validation_settings(cfg)
    assert settings is not None and settings.select == "best" and settings.every_epochs > 0
    assert validation_settings({**cfg, "enabled": False}) is None
    assert validation_settings(None) is None


def _bootstrap_cmd(tmp_path: Path, demo_task: dict[str, Path], out: str) -> list[str]:
    smoke = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    bootstrap = smoke["policy"]["bootstrap"]
    # evaluations every half epoch are the only checkpoints, so a kill after one leaves the best-so-far behind
    bootstrap["train"] = {**bootstrap["train"], "epochs": 3, "checkpoint_every": 0, "log_every": 1}
    bootstrap["validation"] = {"every_epochs": 0.5, "limit": 20, "max_new_tokens": 48}
    cfg_path = tmp_path / f"{out}.yaml"
    cfg_path.write_text(yaml.safe_dump({"task": smoke["task"], "policy": {"bootstrap": bootstrap}}))
    rlmec = str(Path(sys.executable).with_name("rlmec"))
    return [rlmec, "policy", "--config", str(cfg_path), "--train", str(demo_task["train"]), "--validation",
            str(demo_task["validation"]), "--out", str(tmp_path / out), "--checkpoint-dir", str(tmp_path / f"{out}.ckpt")]


@pytest.mark.slow
def test_a_bootstrap_killed_after_an_evaluation_resumes_with_its_best_so_far(demo_task, tmp_path):
    ref = subprocess.run(_bootstrap_cmd(tmp_path, demo_task, "ref"), check=True, capture_output=True, text=True)
    ref_card = json.loads(ref.stdout[ref.stdout.index("{"):])
    assert ref_card["evaluations"] == 6 and ref_card["validation"]["problems"] == 20

    cmd = _bootstrap_cmd(tmp_path, demo_task, "killed")
    ckpt = tmp_path / "killed.ckpt"
    outcome = run_and_kill(cmd, tmp_path, lambda: len(checkpoint_steps(ckpt)) >= 1, timeout_s=600,
                           log_path=tmp_path / "killed.log")
    assert outcome.killed and outcome.reason == "predicate", f"not killed mid-run: {outcome.output[-2000:]}"
    step = checkpoint_steps(ckpt)[-1]
    state = json.loads((ckpt / f"step-{step}" / "trainer_state.json").read_text())["validation"]
    assert state["evaluations"] >= 1 and (ckpt / f"best-step-{state['best_step']}" / "model.safetensors").exists()
    assert not (tmp_path / "killed").exists()

    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    card = json.loads(out.stdout[out.stdout.index("{"):])
    assert card["resumed_from_step"] == step
    for key in ("steps", "evaluations", "best_step", "best_metric", "saved_step", "stopped_early"):
        assert card[key] == ref_card[key], key
    records = [json.loads(x) for x in (tmp_path / "killed.train_metrics.jsonl").read_text().splitlines()]
    ref_records = [json.loads(x) for x in (tmp_path / "ref.train_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [r["step"] for r in ref_records]  # no step twice, none skipped
    assert [r.get("val_accuracy") for r in records] == [r.get("val_accuracy") for r in ref_records]
    a, b = load_file(str(tmp_path / "killed" / "model.safetensors")), load_file(str(tmp_path / "ref" / "model.safetensors"))
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not list(ckpt.glob("step-*")) and not list(ckpt.glob("best-step-*"))
