"""Data-parallel training on CPU: the RL and GRM training stages under ``torchrun --nproc_per_node 2`` (gloo,
through ``python -m rlmec_core.launch``, the entry point ``accelerate launch`` runs) give the same per-step loss
and the same updated weights as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from teacher_support import make_teacher_inputs
from transformers import AutoTokenizer

from rlmec_core.config import validate_config
from rlmec_core.io import read_parquet, write_parquet
from rlmec_core.launch import ENTRYPOINTS, free_port, is_launched, launch_command, run_training
from rlmec_core.models.tiny import TinyArch, build_tiny_llama, train_tokenizer
from rlmec_core.sampling import EngineSettings
from rlmec_core.schemas import SAMPLES, TOKEN_REWARDS
from rlmec_core.stages.grm import build_grm_data
from rlmec_core.stages.label import label_samples
from rlmec_core.stages.policy import write_model_dir
from rlmec_core.stages.teacher import run_teacher

pytestmark = pytest.mark.slow

COMPACT = {"rewrite": "{question}\n{reference}\n{prediction}\n=\n", "error_step": "{question}\n{reference}\n{prediction}\n?\n",
           "error_target": "[{step}]"}
GLOBAL_BATCH = 8
TRAIN = {"epochs": 1, "lr": 3e-3, "warmup_ratio": 0.0, "schedule": "constant_with_warmup", "checkpoint_every": 0,
         "log_every": 1, "max_grad_norm": 1.0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """An untrained tiny policy (training needs no skill to be compared), labels (the policy standing in for
    the GRM) and GRM SFT data, each trimmed to a multiple of the global batch so that every process gets full
    batches (accelerate pads an uneven last batch by repeating examples, which one process would not do)."""
    d = tmp_path_factory.mktemp("dist")
    samples_path, problems_path, _ = make_teacher_inputs(d, 40, wrong_per_problem=2, correct_per_problem=1,
                                                                seed=5)
    texts = [r["prompt"] + r["completion"] for r in read_parquet(samples_path, SAMPLES).to_pylist()]
    tokenizer = train_tokenizer(texts, 384, model_max_length=384)
    demo_policy = d / "policy"
    write_model_dir(demo_policy, build_tiny_llama(tokenizer, TinyArch(max_position_embeddings=384), seed=0),
                    tokenizer, {"stage": "test", "prompt_template": "Question: {question}\nAnswer:\n"})
    tok = AutoTokenizer.from_pretrained(str(demo_policy))
    rows = read_parquet(samples_path, SAMPLES).to_pylist()
    for r in rows:
        r["token_ids"] = tok(r["completion"], add_special_tokens=False)["input_ids"]
        r["num_tokens"] = len(r["token_ids"])
    import pyarrow as pa

    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), samples_path, SAMPLES)
    cfg = validate_config({"grm": {"prompts": COMPACT, "validation_fraction": 0.1, "max_length": 384}})
    run_teacher(samples_path, problems_path, demo_policy, d / "rewrites.parquet", d / "t.json", adapter_name="arith",
                teacher_cfg=cfg["teacher"], seed=0, cache_path=d / "cache.jsonl")
    label_samples(demo_policy, demo_policy, samples_path, d / "rewrites.parquet", d / "labels_all.parquet",
                  d / "label.json", adapter_name="arith", grm_cfg=cfg["grm"], label_cfg=cfg["label"],
                  engine=EngineSettings(backend="hf"))
    labels = pq.read_table(d / "labels_all.parquet")
    n = 4 * GLOBAL_BATCH  # four optimizer steps
    assert labels.num_rows >= n, labels.num_rows
    write_parquet(labels.slice(0, n), d / "labels.parquet", TOKEN_REWARDS)
    build_grm_data(d / "rewrites.parquet", d / "grm_all.parquet", d / "grm_stats.json", adapter_name="arith",
                   grm_cfg=cfg["grm"], seed=0)
    grm = pq.read_table(d / "grm_all.parquet")
    train_rows = [i for i, s in enumerate(grm.column("split").to_pylist()) if s == "train"]
    keep = train_rows[: 4 * GLOBAL_BATCH]
    assert len(keep) == 4 * GLOBAL_BATCH
    pq.write_table(grm.take(keep), d / "grm.parquet")
    return {"dir": d, "policy": demo_policy, "labels": d / "labels.parquet", "grm_data": d / "grm.parquet", "cfg": cfg}


def _kwargs(stage: str, inputs: dict, out: Path, batch_size: int) -> dict:
    train = {**TRAIN, "batch_size": batch_size}
    common = {"seed": 0, "checkpoint_dir": str(out / "ckpt"), "metrics_path": str(out / "log.jsonl")}
    if stage == "rl":
        rl = {**inputs["cfg"]["rl"], "train": {**inputs["cfg"]["rl"]["train"], **train},
              "validation": {"enabled": False}}  # the loop's validation is tested on its own
        return {"labels_path": str(inputs["labels"]), "policy_dir": str(inputs["policy"]), "out_dir": str(out / "model"),
                "rl_cfg": rl, **common}
    grm = {**inputs["cfg"]["grm"], "train": {**inputs["cfg"]["grm"]["train"], **train}}
    return {"data_path": str(inputs["grm_data"]), "init_model": str(inputs["policy"]), "out_dir": str(out / "model"),
            "grm_cfg": grm, **common}


def _torchrun(stage: str, kwargs: dict, work: Path, nproc: int) -> None:
    call = work / "call.json"
    call.write_text(json.dumps({"stage": stage, "kwargs": kwargs, "result": str(work / "result.json")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_port", str(free_port()), "-m", "rlmec_core.launch", str(call)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("stage", ["rl", "grm_train"])
def test_two_processes_train_like_one_with_the_same_global_batch(inputs, tmp_path, stage):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    run_training(stage, _kwargs(stage, inputs, one, GLOBAL_BATCH))  # one process, in this one
    _torchrun(stage, _kwargs(stage, inputs, two, GLOBAL_BATCH // 2), two, nproc=2)
    log1, log2 = _log(one / "log.jsonl"), _log(two / "log.jsonl")
    assert [r["step"] for r in log1] == [r["step"] for r in log2] and len(log1) >= 2
    for a, b in zip(log1, log2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6), (a["step"], a["loss"], b["loss"])
        assert b["examples_seen"] == a["examples_seen"]
    w1, w2 = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    start = load_file(Path(inputs["policy"]) / "model.safetensors")
    moved = max(float((w1[k] - start[k]).abs().max()) for k in w1 if k in start)
    assert moved > 1e-3  # training changed the weights, so equal weights mean equal updates
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=2e-5, rtol=1e-4, msg=k)
    assert json.loads((two / "result.json").read_text())["steps"] == log1[-1]["step"]  # rank 0 returned the card


def test_the_launch_command_and_in_process_fallback(tmp_path):
    assert not is_launched(None) and not is_launched({"num_processes": 1})
    assert is_launched({"num_processes": 2}) and is_launched({"accelerate_config": "x.yaml"})
    cmd = launch_command(tmp_path / "call.json", {"num_processes": 4, "main_process_port": 29511,
                                                 "extra_args": ["--num_machines", "1"]}, python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("--main_process_port") + 1] == "29511"
    assert cmd[-3:] == ["-m", "rlmec_core.launch", str(tmp_path / "call.json")] and "--num_machines" in cmd
    cfg = tmp_path / "zero3.yaml"
    cfg.write_text("distributed_type: DEEPSPEED\n")
    cmd = launch_command("c.json", {"num_processes": 8, "accelerate_config": str(cfg)})
    assert cmd[cmd.index("--config_file") + 1] == str(cfg) and "--multi_gpu" not in cmd
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        launch_command("c.json", {"num_processes": 2, "accelerate_config": str(tmp_path / "missing.yaml")})
    with pytest.raises(ValueError, match="unknown training stage 'os:system'"):
        run_training("os:system", {})
    with pytest.raises(TypeError, match="cannot pass"):
        run_training("rl", {"x": object()}, {"num_processes": 2})
    assert set(ENTRYPOINTS) == {"policy_bootstrap", "grm_train", "rl", "sft_gold", "rft", "grpo"}


def test_accelerate_launch_runs_a_training_stage_on_two_cpu_processes(inputs, tmp_path):
    """The real `accelerate launch` path of run_training (what a rule does with launch.num_processes: 2)."""
    kwargs = _kwargs("rl", inputs, tmp_path, GLOBAL_BATCH // 2)
    env_before = dict(os.environ)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        card = run_training("rl", kwargs, {"num_processes": 2})
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert card["steps"] == len(_log(tmp_path / "log.jsonl")) and (tmp_path / "model" / "model.safetensors").exists()
