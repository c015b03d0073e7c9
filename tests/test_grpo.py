"""The GRPO baseline through TRL's GRPOTrainer on the tiny demo policy."""

from __future__ import annotations

import json

import pytest

from rlmec_core.errors import DataError
from rlmec_core.stages.grpo import grpo_update, outcome_reward
from rlmec_core.tasks import get_adapter

pytest.importorskip("trl")
GRPO = {"lr": 1e-4, "epochs": 1, "beta": 0.0, "problems_per_step": 2, "log_every": 1}
SAMPLE = {"n": 2, "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 24}


def test_outcome_reward_uses_the_task_check():
    reward = outcome_reward(get_adapter("arith"))
    assert reward(["5 + 3 = 8\nThe answer is 8", "The answer is 9"], ["8", "8"]) == [1.0, 0.0]


def test_grpo_trains_the_policy_on_the_draw(demo_policy, demo_task, tmp_path):
    card = grpo_update(demo_task["train"], demo_policy, tmp_path / "grpo", adapter_name="arith",
                       prompt_template="Question: {question}\nAnswer:\n", draw={"first": 0, "problems": 8},
                       sample_cfg=SAMPLE, grpo_cfg=GRPO, seed=0, checkpoint_dir=tmp_path / "ckpt",
                       metrics_path=tmp_path / "grpo.jsonl")
    assert (tmp_path / "grpo" / "model.safetensors").exists()
    saved = json.loads((tmp_path / "grpo" / "rlmec_model.json").read_text())
    assert saved["problems"] == 8 and saved["num_generations"] == 2 and saved["steps"] == card["steps"] > 0
    assert saved["prompt_template"] == "Question: {question}\nAnswer:\n"
    records = [json.loads(line) for line in (tmp_path / "grpo.jsonl").read_text().splitlines()]
    assert records and all("reward" in r for r in records if "loss" in r)
    with pytest.raises(DataError, match="no problems in the range first=1000000"):
        grpo_update(demo_task["train"], demo_policy, tmp_path / "none", adapter_name="arith", prompt_template=None,
                    draw={"first": 10**6, "problems": 8}, sample_cfg=SAMPLE, grpo_cfg=GRPO, seed=0,
                    checkpoint_dir=tmp_path / "c2", metrics_path=tmp_path / "m2.jsonl")


VALIDATION = {"validation": {"enabled": True, "every_steps": 2, "every_epochs": 0.5, "at_start": True, "limit": 30,
                             "patience": None, "min_delta": 0.0, "max_new_tokens": 24, "batch_size": 64},
              "select": "best"}


def greedy_val_accuracy(model_dir, validation_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlmec_core.stages.data import load_problems
    from rlmec_core.stages.evaluate import greedy_accuracy_fn

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    return greedy_accuracy_fn(tok, load_problems(validation_path)[:30], get_adapter("arith", None),
                              max_new_tokens=24)(model)["val_accuracy"]


def test_grpo_keeps_the_best_validation_checkpoint(demo_policy, demo_task, tmp_path):
    """rl.validation applies to GRPO too: the start and every 2 steps are evaluated (in the log, after each
    step's trainer record), and the saved policy is the best evaluated one (measured again: the same figure)."""
    card = grpo_update(demo_task["train"], demo_policy, tmp_path / "grpo", adapter_name="arith", prompt_template=None,
                       draw={"first": 0, "problems": 12}, sample_cfg=SAMPLE, grpo_cfg={**GRPO, "lr": 5e-3}, seed=0,
                       checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "grpo.jsonl",
                       validation_cfg=VALIDATION, validation_path=demo_task["validation"])
    records = [json.loads(line) for line in (tmp_path / "grpo.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 4, 6] and card["steps"] == 6 and card["evaluations"] == 4
    best = max(reversed(evals), key=lambda r: r["val_accuracy"])
    assert card["best_step"] == card["saved_step"] == best["step"] and card["best_metric"] == best["val_accuracy"]
    assert evals[0]["val_accuracy"] == greedy_val_accuracy(demo_policy, demo_task["validation"])
    assert greedy_val_accuracy(tmp_path / "grpo", demo_task["validation"]) == best["val_accuracy"]
    assert card["update_check"]["name"] == "update_vs_start" and not (tmp_path / "ckpt").exists()


def test_last_complete_checkpoint_skips_and_removes_half_written_ones(tmp_path):
    from rlmec_core.stages.grpo import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "absent") is None
    for step, complete in [(2, True), (4, True), (6, False)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()  # not a step: left alone
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-4", "checkpoint-x"]
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()  # the only newer one is half-written
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-4").exists()


@pytest.mark.slow
def test_killed_grpo_resumes_from_its_last_checkpoint(demo_policy, demo_task, tmp_path):
    """SIGKILL the GRPO stage (its own process, started the way `accelerate launch` starts it) once a
    checkpoint is complete; the rerun resumes there, logs each step once and removes the checkpoints."""
    import sys

    from killing import run_and_kill

    ckpt = tmp_path / "ckpt"
    kwargs = {"problems_path": str(demo_task["train"]), "policy_dir": str(demo_policy), "out_dir": str(tmp_path / "out"),
              "adapter_name": "arith", "prompt_template": None, "draw": {"first": 0, "problems": 8},
              "sample_cfg": SAMPLE, "grpo_cfg": {**GRPO, "epochs": 6, "checkpoint_every": 2}, "seed": 0,
              "checkpoint_dir": str(ckpt), "metrics_path": str(tmp_path / "grpo.jsonl"),
              "validation_cfg": {**VALIDATION, "validation": {**VALIDATION["validation"], "every_steps": 3}},
              "validation_path": str(demo_task["validation"])}
    call = tmp_path / "call.json"
    call.write_text(json.dumps({"stage": "grpo", "kwargs": kwargs, "result": str(tmp_path / "card.json")}))
    cmd = [sys.executable, "-m", "rlmec_core.launch", str(call)]

    def saved():
        return any((p / "trainer_state.json").is_file() for p in ckpt.glob("checkpoint-*"))

    outcome = run_and_kill(cmd, tmp_path, saved, timeout_s=600, log_path=tmp_path / "first.log")
    assert outcome.killed and outcome.reason == "predicate", outcome.output[-3000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "card.json").exists()
    from rlmec_core.stages.grpo import last_complete_checkpoint

    resume = last_complete_checkpoint(ckpt)
    assert resume is not None
    step = int(resume.rsplit("-", 1)[1])
    total = 6 * 8 // GRPO["problems_per_step"]
    assert step < total
    rerun = run_and_kill(cmd, tmp_path, lambda: False, timeout_s=600, log_path=tmp_path / "second.log")
    assert not rerun.killed and rerun.returncode == 0, rerun.output[-3000:]
    assert "resuming GRPO from" in rerun.output
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["resumed_from_step"] == step and card["steps"] == total
    records = [json.loads(line) for line in (tmp_path / "grpo.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if "val_accuracy" not in r]
    assert logged == list(range(1, total + 1))  # log_every 1: each step once, the ones before the kill kept
    assert (tmp_path / "out" / "model.safetensors").exists() and not ckpt.exists()
    # the validation state survived the kill: every evaluation once, the best so far kept, the saved policy the best
    evals = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in evals] == list(range(0, total + 1, 3))
    best = max(reversed(evals), key=lambda r: r["val_accuracy"])
    assert card["best_step"] == card["saved_step"] == best["step"] and card["evaluations"] == len(evals)
    assert greedy_val_accuracy(tmp_path / "out", demo_task["validation"]) == best["val_accuracy"]
