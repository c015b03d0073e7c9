"""GRM data, scoring and the GRM stages on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from killing import checkpoint_steps, run_and_kill
from teacher_support import make_teacher_inputs

from rlmec_core.config import validate_config
from rlmec_core.errors import DataError
from rlmec_core.grm.data import build_examples, split_problems
from rlmec_core.grm.prompts import GRMPrompts
from rlmec_core.io import read_parquet, write_parquet
from rlmec_core.sampling import EngineSettings
from rlmec_core.schemas import GRM_DATA, REWRITES
from rlmec_core.scoring import length_buckets, score_targets
from rlmec_core.stages.grm import build_grm_data, evaluate_grm, grm_rewrite, token_flags, train_grm
from rlmec_core.stages.teacher import run_teacher
from rlmec_core.tasks import get_adapter

RLMEC = str(Path(sys.executable).with_name("rlmec"))
COMPACT = {
    "error_step": "Problem: {question}\nReference:\n{reference}\nPrediction:\n{prediction}\nFirst error step:\n",
    "error_target": "[{step}]",
    "rewrite": "Problem: {question}\nReference:\n{reference}\nPrediction:\n{prediction}\nCorrect prediction:\n",
}


def grm_cfg(**overrides):
    base = {"max_length": 160, "prompts": COMPACT, "validation_fraction": 0.2,
            "train": {"epochs": 1, "lr": 3e-3, "batch_size": 16, "checkpoint_every": 5, "log_every": 1},
            "generation": {"max_new_tokens_error_step": 6, "max_new_tokens_rewrite": 48}}
    base.update(overrides)
    return validate_config({"grm": base})["grm"]


@pytest.fixture(scope="module")
def rewrites(tmp_path_factory):
    """Oracle rewrites of synthetic wrong (and some correct) predictions."""
    d = tmp_path_factory.mktemp("grm_rewrites")
    samples, problems, tok = make_teacher_inputs(d, 60, wrong_per_problem=2, correct_per_problem=1, seed=5)
    run_teacher(samples, problems, tok, d / "rewrites.parquet", d / "m.json", adapter_name="arith",
                teacher_cfg=validate_config({})["teacher"], seed=0, cache_path=d / "c.jsonl")
    return d / "rewrites.parquet", samples, problems


def test_examples_balance_split_and_targets(rewrites):
    table = read_parquet(rewrites[0], REWRITES)
    ex = build_examples(table, get_adapter("arith"), GRMPrompts.from_config(COMPACT), validation_fraction=0.25,
                        balance_correct=True, seed=0, where="x")
    assert ex.schema.equals(GRM_DATA)
    rows = ex.to_pylist()
    by_split = {s: {r["problem_id"] for r in rows if r["split"] == s} for s in ("train", "validation")}
    assert by_split["train"] and by_split["validation"] and not by_split["train"] & by_split["validation"]
    for split in ("train", "validation"):
        part = [r for r in rows if r["split"] == split]
        n_err = sum(r["kind"] == "error_step" for r in part)
        n_wrong_rw = sum(r["kind"] == "rewrite" and not r["prediction_correct"] for r in part)
        n_right_rw = sum(r["kind"] == "rewrite" and r["prediction_correct"] for r in part)
        assert n_err == n_wrong_rw and n_right_rw <= n_wrong_rw
    err = next(r for r in rows if r["kind"] == "error_step")
    assert err["target"] == f"[{err['error_step']}]" and "[0] " in err["prompt"]
    rw = next(r for r in rows if r["kind"] == "rewrite" and r["prediction_correct"])
    assert rw["target"] == rw["prediction"] and rw["prompt"].endswith("Correct prediction:\n")
    assert len({r["example_id"] for r in rows}) == len(rows)


def test_unusable_rewrites_are_a_clear_error():
    empty = pa.Table.from_pylist([], schema=REWRITES)
    with pytest.raises(DataError, match=r"rw.parquet: 0 rows .* none is usable"):
        build_examples(empty, get_adapter("arith"), GRMPrompts(), validation_fraction=0.1, balance_correct=True,
                       seed=0, where="rw.parquet")


def test_split_problems_is_seeded_and_never_empty():
    ids = [f"p{i}" for i in range(50)]
    assert split_problems(ids, 0.1, 3) == split_problems(list(reversed(ids)), 0.1, 3)
    assert len(split_problems(ids, 0.1, 3)) == 5
    assert len(split_problems(["a", "b"], 0.01, 0)) == 1
    assert split_problems(ids, 0.0, 0) == set()


def test_length_buckets_cover_everything_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 500).tolist()
    batches = length_buckets(lengths, 2048)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 2048


def test_score_targets_equals_one_sequence_at_a_time():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 40, rng.integers(1, 12)).tolist() for _ in range(20)]
    targets = [rng.integers(1, 40, rng.integers(0, 15)).tolist() for _ in range(20)]
    batched = score_targets(model, prompts, targets, pad_token_id=0, batch_tokens=64)
    for p, t, got in zip(prompts, targets, batched, strict=True):
        ids = torch.tensor([p + t])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), -1)[0]
        want = [float(logp[len(p) + j - 1, tok]) for j, tok in enumerate(t)]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_token_flags_mark_deleted_and_substituted_tokens():
    assert token_flags([1, 2, 3, 4], [1, 9, 3, 4]) == [False, True, False, False]
    assert token_flags([1, 2, 3], [1, 3]) == [False, True, False]
    assert token_flags([1, 2], [1, 2, 7]) == [False, False]


@pytest.fixture(scope="module")
def trained(rewrites, demo_policy, tmp_path_factory):
    d = tmp_path_factory.mktemp("grm")
    cfg = grm_cfg()
    build_grm_data(rewrites[0], d / "data.parquet", d / "stats.json", adapter_name="arith", grm_cfg=cfg, seed=0)
    card = train_grm(d / "data.parquet", demo_policy, d / "model", grm_cfg=cfg, seed=0, checkpoint_dir=d / "ckpt",
                     metrics_path=d / "train.jsonl")
    return d, cfg, card


def test_grm_trains_from_the_policy_and_is_evaluated(trained):
    d, cfg, card = trained
    assert (d / "model" / "model.safetensors").exists() and card["steps"] > 0 and card["tokens_per_s"] > 0
    m = evaluate_grm(d / "model", d / "data.parquet", d / "quality.json", adapter_name="arith", grm_cfg=cfg,
                     engine=EngineSettings(backend="hf"))
    for key in ("error_step_accuracy", "rewrite_exact_match", "rewrite_answer_correct", "token_flag_precision",
                "token_flag_recall", "token_flag_f1", "correct_tokens_flagged"):
        assert m[key] is not None and 0.0 <= m[key] <= 1.0, key
    assert json.loads((d / "quality.json").read_text()) == m


def test_grm_keeps_the_weights_of_the_lowest_held_out_loss(rewrites, demo_policy, tmp_path):
    """grm.validation (on by default): the log has the held-out loss at every evaluation and at the end, and
    the saved GRM is the evaluated one with the lowest: its held-out loss, measured again, is the card's best."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlmec_core.train.sft import SFTCollator, encode_sft_examples, heldout_nll

    d = tmp_path
    cfg = grm_cfg(train={"epochs": 6, "lr": 1e-2, "batch_size": 8, "checkpoint_every": 0, "log_every": 1},
                  validation={"every_steps": 2})
    build_grm_data(rewrites[0], d / "data.parquet", d / "stats.json", adapter_name="arith", grm_cfg=cfg, seed=0)
    card = train_grm(d / "data.parquet", demo_policy, d / "model", grm_cfg=cfg, seed=0, checkpoint_dir=d / "ckpt",
                     metrics_path=d / "train.jsonl")
    records = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    assert len(evals) >= 3 and evals[-1]["step"] == card["steps"]
    best = min(reversed(evals), key=lambda r: r["val_loss"])
    assert card["best_step"] == card["saved_step"] == best["step"] and card["best_metric"] == best["val_loss"]
    assert card["validation"]["metric"] == "val_loss" and card["validation"]["mode"] == "min"
    held = [r for r in pq.read_table(d / "data.parquet").to_pylist() if r["split"] == "validation"]
    tok = AutoTokenizer.from_pretrained(str(d / "model"))
    examples, _ = encode_sft_examples(tok, [r["prompt"] for r in held], [r["target"] for r in held],
                                      max_length=cfg["max_length"])
    assert card["validation"]["held_out_examples"] == len(examples) > 0
    model = AutoModelForCausalLM.from_pretrained(str(d / "model")).eval()
    total, count = heldout_nll(model, examples, SFTCollator(tok.pad_token_id))
    assert total / count == pytest.approx(card["best_metric"], rel=1e-5)


def test_grm_quality_skips_and_counts_held_out_examples_longer_than_its_context(trained, tmp_path):
    """A held-out example that does not fit the GRM's context is skipped and counted, not scored as a miss:
    every other figure equals the evaluation without it."""
    d, cfg, _ = trained
    table = pq.read_table(d / "data.parquet")
    rows = table.to_pylist()
    base = next(r for r in rows if r["split"] == "validation" and r["kind"] == "rewrite" and not r["prediction_correct"])
    long_row = {**base, "example_id": f"{base['example_id']}-long", "problem_id": f"{base['problem_id']}-long",
                "prompt": base["prompt"] + " 1 +" * 2000}
    write_parquet(pa.Table.from_pylist([*rows, long_row], schema=table.schema), tmp_path / "data.parquet", GRM_DATA)
    engine = EngineSettings(backend="hf")
    ref = evaluate_grm(d / "model", d / "data.parquet", tmp_path / "ref.json", adapter_name="arith", grm_cfg=cfg,
                       engine=engine)
    got = evaluate_grm(d / "model", tmp_path / "data.parquet", tmp_path / "got.json", adapter_name="arith",
                       grm_cfg=cfg, engine=engine)
    assert got["skipped_too_long"] == ref["skipped_too_long"] + 1
    assert ref["validation_wrong"] > 0 and ref["token_flag_recall"] is not None
    for key in ("validation_wrong", "validation_correct", "error_step_accuracy", "rewrite_exact_match",
                "token_flag_precision", "token_flag_recall", "correct_tokens_flagged"):
        assert got[key] == ref[key], key


def test_grm_rewrites_fresh_samples_with_the_teacher_schema(trained, rewrites, tmp_path):
    d, cfg, _ = trained
    _, samples, problems = rewrites
    m = grm_rewrite(d / "model", samples, problems, tmp_path / "rw.parquet", tmp_path / "rw.json", adapter_name="arith",
                    grm_cfg=cfg, engine=EngineSettings(backend="hf"))
    table = pq.read_table(tmp_path / "rw.parquet")
    assert table.schema.equals(REWRITES)
    rows = table.to_pylist()
    assert {r["teacher_backend"] for r in rows if not r["prediction_correct"]} == {"grm"}
    assert sum(m["statuses"].values()) == m["wrong"]


def test_lora_training_merges_into_a_plain_model(rewrites, demo_policy, tmp_path):
    cfg = grm_cfg(lora={"enabled": True, "r": 4, "alpha": 8}, train={"epochs": 0.2, "lr": 1e-2, "batch_size": 16,
                                                                   "checkpoint_every": 0})
    build_grm_data(rewrites[0], tmp_path / "data.parquet", tmp_path / "s.json", adapter_name="arith", grm_cfg=cfg,
                   seed=0)
    card = train_grm(tmp_path / "data.parquet", demo_policy, tmp_path / "model", grm_cfg=cfg, seed=0,
                     checkpoint_dir=tmp_path / "ckpt", metrics_path=tmp_path / "m.jsonl")
    assert card["lora"]["r"] == 4
    from safetensors.torch import load_file

    names = load_file(str(tmp_path / "model" / "model.safetensors")).keys()
    assert not any("lora" in n for n in names)


@pytest.mark.slow
def test_killed_grm_training_resumes_from_its_last_checkpoint(rewrites, demo_policy, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    # Long enough (in steps) that the kill lands mid-run however fast the machine is.
    cfg_path.write_text(yaml.safe_dump({"grm": {**grm_cfg(max_length=192, train={
        "epochs": 30, "lr": 1e-3, "batch_size": 4, "checkpoint_every": 10, "log_every": 1})}}))
    subprocess.run([RLMEC, "grm", "data", "--rewrites", str(rewrites[0]), "--out", str(tmp_path), "--config",
                    str(cfg_path)], check=True, capture_output=True)
    cmd = [RLMEC, "grm", "train", "--data", str(tmp_path / "data.parquet"), "--init", str(demo_policy), "--out",
           str(tmp_path / "model"), "--config", str(cfg_path), "--checkpoint-dir", str(tmp_path / "ckpt")]
    outcome = run_and_kill(cmd, tmp_path, lambda: bool(checkpoint_steps(tmp_path / "ckpt")), timeout_s=300,
                           log_path=tmp_path / "killed.log")
    assert outcome.killed and outcome.reason == "predicate", f"not killed mid-run: {outcome.output[-2000:]}"
    steps = checkpoint_steps(tmp_path / "ckpt")
    assert steps, "no checkpoint was written before the kill"
    assert not (tmp_path / "model").exists()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    card = json.loads(out.stdout[out.stdout.index("{"):])
    assert card["resumed_from_step"] == steps[-1]
    logged = [json.loads(line)["step"] for line in (tmp_path / "model.train_metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, card["steps"] + 1))  # no step logged twice, none skipped
    assert not list((tmp_path / "ckpt").glob("step-*"))  # checkpoints go once the model is saved


def test_grm_prompts_longer_than_its_context_are_skipped_and_counted_not_parse_errors(monkeypatch):
    """A (QA) problem whose GRM prompt does not fit the context gets ``prompt_too_long`` completions from the
    sampler; the two-step rewrite marks it (status ``filtered``, a detail saying why), never a parse error."""
    import rlmec_core.stages.grm as grm_stage
    from rlmec_core.sampling import PROMPT_TOO_LONG, Completion, GenerationResult
    from rlmec_core.stages.teacher import Item
    from rlmec_core.tasks import Problem

    def fake_generate(model_dir, prompts, settings, engine):  # the first prompt fits, the second does not
        out = [[Completion("[0]" if settings.max_new_tokens == 6 else "The answer is a", [5], "stop")]
               if "fits" in p else [Completion("", [], PROMPT_TOO_LONG)] for p in prompts]
        return GenerationResult(out, "fake", 0.0, 0.0, skipped=sum(c[0].finish_reason == PROMPT_TOO_LONG for c in out))

    monkeypatch.setattr(grm_stage, "generate", fake_generate)
    cases = [("fits?\nOptions:\na\nb", "The answer is a", "The answer is b"),
             ("too long\nOptions:\na\nb", "The answer is a", "The answer is b")]
    adapter = get_adapter("mcqa")
    res = grm_stage.grm_two_step("unused", cases, adapter, GRMPrompts.from_config(COMPACT),
                                 EngineSettings(backend="hf"), grm_cfg()["generation"])
    assert [r.too_long for r in res] == [False, True]
    assert res[0].rewrite == "The answer is a" and res[1].rewrite is None
    rows = [grm_stage._grm_row(Item(Problem(f"p{i}", q, ref, "a", "mcqa"), pred, False, [f"s{i}"]), r, adapter,
                               grm_stage._GRMSource("grm"))
            for i, ((q, ref, pred), r) in enumerate(zip(cases, res, strict=True))]
    assert [r["status"] for r in rows] == ["ok", "filtered"]
    assert "context" in rows[1]["detail"] and rows[1]["rewrite"] is None
