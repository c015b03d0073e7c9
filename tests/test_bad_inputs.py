"""The bad-input catalogue: each bad input gives the exact message it must show, and nothing half-written is
left behind (no output under its final name, no temporary beside it). docs/reliability.md lists these tests
together with the ones that already covered a bad input elsewhere (file::test)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlmec_core.config import validate_config
from rlmec_core.errors import DataError
from rlmec_core.io import write_parquet
from rlmec_core.sampling import EngineSettings, SampleSettings, generate, load_tokenizer
from rlmec_core.schemas import PROBLEMS, SAMPLES, TOKEN_REWARDS
from rlmec_core.stages.data import SPLITS, load_problems, run_data
from rlmec_core.stages.sample import sample_policy
from rlmec_core.tasks import get_adapter

HF = EngineSettings(backend="hf", hf_batch_size=16)
SETTINGS = SampleSettings(n=1, temperature=0.0, max_new_tokens=16, seed=0)
GOOD = '{"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\\n#### 5"}\n'


def nothing_left(directory: Path, *names: str) -> None:
    """None of ``names`` exists in ``directory``, and no temporary either."""
    for name in names:
        assert not (directory / name).exists(), f"{name} was written"
    if directory.exists():
        assert not list(directory.rglob("*.tmp")), list(directory.rglob("*.tmp"))


def gsm8k_task(train: Path, test: Path) -> dict:
    return validate_config({"task": {"name": "g", "adapter": "gsm8k",
                                     "source": {"train": str(train), "test": str(test)}}})["task"]


def run_gsm8k(tmp_path: Path, train_text: bytes | str, test_text: str = GOOD * 2):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    (train.write_bytes if isinstance(train_text, bytes) else train.write_text)(train_text)
    test.write_text(test_text)
    out = tmp_path / "out"
    return run_data(gsm8k_task(train, test), 0, {s: out / f"{s}.parquet" for s in SPLITS}, out / "stats.json"), out


def sample(model, data: Path, out: Path, **kw):
    return sample_policy(model, data, out, adapter_name="arith", prompt_template=None, settings=SETTINGS, engine=HF,
                         **kw)


# -- data files --------------------------------------------------------------------------------------------
def test_empty_source_file(tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl: no problems \(the train file is empty\)"):
        run_gsm8k(tmp_path, "")
    nothing_left(tmp_path / "out", *(f"{s}.parquet" for s in SPLITS), "stats.json")


def test_empty_problem_table(tmp_path, demo_policy):
    empty = tmp_path / "empty.parquet"
    write_parquet(PROBLEMS.empty_table(), empty, PROBLEMS)
    with pytest.raises(DataError, match=r"empty\.parquet: no problems"):
        sample(demo_policy, empty, tmp_path / "s.parquet")
    nothing_left(tmp_path, "s.parquet")


def test_duplicate_problem_ids(tmp_path, demo_task, demo_policy):
    rows = pq.read_table(demo_task["test"]).slice(0, 4).to_pylist()
    rows[3]["id"] = rows[1]["id"]
    bad = tmp_path / "dup.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=PROBLEMS), bad, PROBLEMS)
    with pytest.raises(DataError, match=rf"dup\.parquet: duplicate id '{rows[1]['id']}' in rows 1 and 3"):
        sample(demo_policy, bad, tmp_path / "s.parquet")
    nothing_left(tmp_path, "s.parquet")


def test_duplicate_sample_ids(tmp_path):
    from teacher_support import make_teacher_inputs

    from rlmec_core.stages.teacher import run_teacher

    samples, problems, tok = make_teacher_inputs(tmp_path / "in", 4, wrong_per_problem=1)
    rows = pq.read_table(samples).to_pylist()
    rows[2]["sample_id"] = rows[0]["sample_id"]
    bad = tmp_path / "dup_samples.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES), bad, SAMPLES)
    with pytest.raises(DataError, match=rf"dup_samples\.parquet: duplicate sample_id '{rows[0]['sample_id']}'"):
        run_teacher(bad, problems, tok, tmp_path / "out" / "rewrites.parquet", tmp_path / "out" / "metrics.json",
                    adapter_name="arith", teacher_cfg=validate_config({})["teacher"], seed=0,
                    cache_path=tmp_path / "out" / "cache.jsonl")
    nothing_left(tmp_path / "out", "rewrites.parquet", "metrics.json")


def test_missing_column(tmp_path, demo_task, demo_policy):
    bad = tmp_path / "no_answer.parquet"
    pq.write_table(pq.read_table(demo_task["test"]).drop_columns(["answer"]), bad)
    with pytest.raises(DataError, match=r"no_answer\.parquet: missing column\(s\) \['answer'\]"):
        sample(demo_policy, bad, tmp_path / "s.parquet")
    nothing_left(tmp_path, "s.parquet")


def test_non_utf8_bytes(tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid UTF-8"):
        run_gsm8k(tmp_path, GOOD.encode() + b'{"question": "caf\xe9?", "answer": "#### 5"}\n' + GOOD.encode())
    nothing_left(tmp_path / "out", *(f"{s}.parquet" for s in SPLITS), "stats.json")


def test_a_10_mb_line_is_read_then_skipped_as_too_long_counted(tmp_path, demo_policy, monkeypatch):
    """A 10 MB question is valid data: the data stage keeps it; the sampler skips it without tokenizing it
    (more characters than the context can hold tokens), counts it, and samples the others."""
    question = ("Tom has 12 apples and buys 7 more. " * 300_000)[:10_000_000]
    line = json.dumps({"question": question, "answer": "#### 19"}) + "\n"
    assert len(line) > 10_000_000
    stats, out = run_gsm8k(tmp_path, GOOD * 2 + line + GOOD * 2)
    assert stats["splits"]["train"]["problems"] + stats["splits"]["validation"]["problems"] == 5
    problems = [p for s in ("train", "validation") for p in load_problems(out / f"{s}.parquet")]
    assert max(len(p.question) for p in problems) == len(question)
    rows = [{**p.as_row(), "task": "arith"} for p in problems]
    data = tmp_path / "with_huge.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=PROBLEMS), data, PROBLEMS)
    calls = []
    from transformers import PreTrainedTokenizerBase

    original = PreTrainedTokenizerBase.__call__

    def spy(self, text, *args, **kwargs):
        calls.append(max((len(t) for t in text), default=0) if isinstance(text, list) else len(text))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    metrics = sample(demo_policy, data, tmp_path / "s.parquet")
    assert max(calls) < 1000  # the 10 MB prompt never reached the tokenizer
    assert metrics["prompt_too_long"] == 1 and metrics["samples"] == 5
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    huge = [r for r in table if len(r["prompt"]) > 1_000_000]
    assert len(huge) == 1 and huge[0]["finish_reason"] == "prompt_too_long" and huge[0]["token_ids"] == []


def test_prompt_longer_than_the_context_is_skipped_counted_and_reported(tmp_path, demo_task, demo_policy, caplog):
    rows = pq.read_table(demo_task["test"]).slice(0, 3).to_pylist()
    rows[1]["question"] = rows[1]["question"] + " and then" * 150  # > 192 positions, far below the char cap
    data = tmp_path / "long.parquet"
    write_parquet(pa.Table.from_pylist(rows, schema=PROBLEMS), data, PROBLEMS)
    with caplog.at_level("WARNING"):
        metrics = sample(demo_policy, data, tmp_path / "s.parquet")
    assert metrics["prompt_too_long"] == 1
    assert "1 of 3 prompts did not fit the model's context with max_new_tokens=16" in caplog.text
    reasons = pq.read_table(tmp_path / "s.parquet").column("finish_reason").to_pylist()
    assert reasons[1] == "prompt_too_long" and reasons.count("prompt_too_long") == 1


# -- Parquet artefacts -------------------------------------------------------------------------------------
def token_rewards_table(n: int, nan_row: int | None = None) -> pa.Table:
    rows = []
    for i in range(n):
        r = 0.1 if nan_row != i else math.nan
        rows.append({"sample_id": f"p{i}#0", "problem_id": f"p{i}", "question": "q", "reference_solution": "s",
                     "gold_answer": "1", "prompt": "q", "prompt_ids": [1, 2], "prediction": "y", "correct": False,
                     "error_step": 0, "rewrite": "z", "rewrite_source": "grm", "token_ids": [3, 4],
                     "tokens": ["a", "b"], "grm_probs": [0.5, 0.5], "rewards": [r, -0.1], "old_logprobs": [-1.0, -1.0],
                     "step_rewards": [0.0], "imitation_ids": [3, 5], "imitation_tokens": ["a", "c"],
                     "imitation_weights": [0.5, 1.0], "edit_distance": 1, "edit_ratio": 0.5})
    return pa.Table.from_pylist(rows, schema=TOKEN_REWARDS)


def rl(labels: Path, policy: Path, out: Path):
    from rlmec_core.stages.rl import rl_update

    return rl_update(labels, policy, out / "model", rl_cfg=validate_config({"rl": {"validation": {"enabled": False}}})["rl"],
                     seed=0,
                     checkpoint_dir=out / "ckpt", metrics_path=out / "rl.jsonl")


def test_nan_in_a_reward_column_stops_the_rl_stage(tmp_path, demo_policy):
    labels = tmp_path / "token_rewards.parquet"
    write_parquet(token_rewards_table(4, nan_row=2), labels, TOKEN_REWARDS)
    with pytest.raises(DataError, match=r"token_rewards\.parquet: row 2 \(sample 'p2#0'\) has a NaN, infinite or "
                                        r"null value in rewards, old_logprobs or imitation_weights"):
        rl(labels, demo_policy, tmp_path / "out")
    nothing_left(tmp_path / "out", "model", "rl.jsonl", "ckpt")


@pytest.mark.parametrize("what", ["truncated", "garbage"])
def test_truncated_or_corrupt_parquet(tmp_path, demo_task, demo_policy, what):
    good = Path(demo_task["test"]).read_bytes()
    bad = tmp_path / "problems.parquet"
    bad.write_bytes(good[: len(good) // 2] if what == "truncated" else b"PAR1" + b"\x00garbage" * 100)
    with pytest.raises(DataError, match=r"problems\.parquet: not a readable Parquet file"):
        sample(demo_policy, bad, tmp_path / "s.parquet")
    nothing_left(tmp_path, "s.parquet")
    labels = tmp_path / "token_rewards.parquet"
    write_parquet(token_rewards_table(3), labels, TOKEN_REWARDS)
    labels.write_bytes(labels.read_bytes()[:-20])  # the footer cut off
    with pytest.raises(DataError, match=r"token_rewards\.parquet: not a readable Parquet file"):
        rl(labels, demo_policy, tmp_path / "out")
    nothing_left(tmp_path / "out", "model", "rl.jsonl")


# -- models and tokenizers ---------------------------------------------------------------------------------
def test_model_directory_without_weights(tmp_path, demo_task, demo_policy):
    empty = tmp_path / "no_weights"
    shutil.copytree(demo_policy, empty)
    (empty / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"no_weights: no model weights \(model\.safetensors\) in this directory"):
        sample(empty, demo_task["test"], tmp_path / "s.parquet", limit=2)
    nothing_left(tmp_path, "s.parquet")
    (empty / "pytorch_model.bin").write_bytes(b"not loaded")  # a pickle is refused, not unpickled
    with pytest.raises(DataError, match=r"only pickled files \['pytorch_model\.bin'\], which are not loaded"):
        sample(empty, demo_task["test"], tmp_path / "s.parquet", limit=2)
    nothing_left(tmp_path, "s.parquet")
    # the training stages refuse the same directory before loading anything
    labels = tmp_path / "token_rewards.parquet"
    write_parquet(token_rewards_table(3), labels, TOKEN_REWARDS)
    with pytest.raises(DataError, match=r"only pickled files \['pytorch_model\.bin'\]"):
        rl(labels, empty, tmp_path / "rl")
    nothing_left(tmp_path / "rl", "model", "rl.jsonl")
    from rlmec_core.stages.grpo import grpo_update

    grpo = validate_config({})["compare"]["grpo"]
    with pytest.raises(DataError, match=r"only pickled files \['pytorch_model\.bin'\]"):
        grpo_update(demo_task["train"], empty, tmp_path / "grpo", adapter_name="arith", prompt_template=None,
                    draw={"first": 0, "problems": 4}, sample_cfg={"n": 2, "temperature": 1.0, "top_p": 1.0,
                                                                  "max_new_tokens": 8},
                    grpo_cfg=grpo, seed=0, checkpoint_dir=tmp_path / "gck", metrics_path=tmp_path / "g.jsonl")
    nothing_left(tmp_path, "grpo", "g.jsonl")


def test_tokenizer_without_a_pad_token(tmp_path, demo_task, demo_policy):
    from transformers import AutoTokenizer

    model = tmp_path / "no_pad"
    shutil.copytree(demo_policy, model)
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.pad_token = None
    tok.save_pretrained(str(model))
    assert AutoTokenizer.from_pretrained(str(model)).pad_token_id is None
    loaded = load_tokenizer(model)
    assert loaded.pad_token_id == loaded.eos_token_id  # EOS pads
    problems = load_problems(demo_task["test"])[:4]
    prompts = [get_adapter("arith").format_prompt(p.question) for p in problems]
    ref = generate(demo_policy, prompts, SETTINGS, HF)
    res = generate(model, prompts, SETTINGS, HF)
    assert [c[0].text for c in res.completions] == [c[0].text for c in ref.completions]
    tok.eos_token = None
    tok.save_pretrained(str(model))
    with pytest.raises(DataError, match=r"no_pad: tokenizer has neither a pad nor an EOS token"):
        sample(model, demo_task["test"], tmp_path / "s.parquet", limit=2)
    nothing_left(tmp_path, "s.parquet")
