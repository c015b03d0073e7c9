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
    with pytest.raises(DataError, match="selects no problem"):
        grpo_update(demo_task["train"], demo_policy, tmp_path / "none", adapter_name="arith", prompt_template=None,
                    draw={"first": 10**6, "problems": 8}, sample_cfg=SAMPLE, grpo_cfg=GRPO, seed=0,
                    checkpoint_dir=tmp_path / "c2", metrics_path=tmp_path / "m2.jsonl")
