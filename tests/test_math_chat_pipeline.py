"""MATH-format problems and a chat-template policy through the whole default pipeline (issue 16).

A real Snakemake run in a temporary directory: problems written as MATH rows (``{"problem", "solution",
"level", "type"}``, LaTeX prose, ``\\boxed{}`` answer), adapter ``math`` (answers judged by math-verify,
steps = sentences), ``task.chat_template: true`` (the bootstrapped tiny tokenizer carries a chat template,
as an instruct model's does), and the ``openai`` teacher backend against a fake server on 127.0.0.1 that
answers from the reference (``tests/math_teacher_responder.py``). Checks that every stage ran, that the
policy's prompt ids are the chat-rendered ones everywhere, and that rewrites keep the prediction's text.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_llm_server import FakeLLMServer
from math_teacher_responder import first_wrong_step, math_responder

from rlmec_core.io import read_parquet
from rlmec_core.schemas import PROBLEMS, REWRITES, SAMPLES, TOKEN_REWARDS
from rlmec_core.tasks.arith import ArithSpec, generate_problems

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = REPO_ROOT / "tests" / "configs" / "math_chat_smoke.yaml"
RUN = "math_chat_smoke"
KEY_ENV = "RLMEC_MATH_SMOKE_TEACHER_KEY"
pytestmark = pytest.mark.slow


def math_rows(n: int, seed: int) -> list[dict]:
    """Arithmetic problems written as MATH rows: each step a sentence with inline math, a boxed answer."""
    rng = random.Random(seed)
    rows = []
    for p in generate_problems(n, seed, ArithSpec(min_steps=1, max_steps=2), split="train"):
        eqs = p.reference_solution.splitlines()[:-1]
        words = ["First", "Then", "Next"]
        sentences = [f"{words[i]}, ${e}$." for i, e in enumerate(eqs)]
        sentences.append(f"So the answer is $\\boxed{{{p.answer}}}$.")
        rows.append({"problem": p.question, "solution": " ".join(sentences), "level": f"Level {rng.randint(1, 5)}",
                     "type": "Prealgebra"})
    return rows


def test_the_responder_reads_sentence_steps():
    ref = ["First, $3 + 4 = 7$.", "So the answer is $\\boxed{7}$."]
    assert first_wrong_step(ref, ["First, $3 + 4 = 8$.", "So the answer is $\\boxed{8}$."]) == 0
    assert first_wrong_step(ref, ["First, $3 + 4 = 7$.", "So it is $\\boxed{7}$."]) == -1
    assert first_wrong_step(ref, ["First, $3 + 4 = 7$."]) == 1


@pytest.fixture(scope="module")
def math_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("math_chat")
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    shutil.copy(CONFIG, work / "math_chat_smoke.yaml")
    rows = math_rows(260, 0)
    for name, part in (("train", rows[:200]), ("validation", rows[200:220]), ("test", rows[220:])):
        path = work / "math_src" / f"{name}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    env = {**os.environ, KEY_ENV: "sk-math-smoke-not-a-real-key"}
    with FakeLLMServer(math_responder) as server:
        (work / "teacher_url.yaml").write_text(yaml.safe_dump({"teacher": {"base_url": server.base_url}}))
        proc = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "math_chat_smoke.yaml",
                               "teacher_url.yaml"], cwd=work, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return work


def test_math_chat_pipeline_runs_every_stage(math_run):
    work = math_run
    results = work / "results" / RUN
    for rule in ("data", "policy_bootstrap", "evaluate/sft_test", "sample/sft_teacher", "teacher", "grm_train",
                 "grm_rewrite", "label", "rl", "sft_gold", "evaluate/rlmec_test", "report"):
        assert (results / "logs" / f"{rule}.log").stat().st_size > 0, rule
    test = read_parquet(work / "data" / RUN / "test.parquet", PROBLEMS).to_pylist()
    assert {r["task"] for r in test} == {"math"} and all(dict(r["attributes"])["type"] == "Prealgebra" for r in test)
    metrics = json.loads((results / "eval" / "rlmec" / "test" / "metrics.json").read_text())
    assert sum(g["total"] for g in metrics["by_attribute"]["level"].values()) == len(test) == metrics["total"]
    page = (results / "report.html").read_text()
    assert "Accuracy on test by level" in page and "Accuracy on test by type" in page  # the report breaks it down


def test_prompt_ids_are_the_chat_rendered_ones_in_every_stage(math_run):
    from rlmec_core.prompting import encode_prompts
    from rlmec_core.sampling import load_tokenizer

    work = math_run
    results = work / "results" / RUN
    tok = load_tokenizer(results / "policy" / "sft")
    assert tok.chat_template  # the bootstrap gave the tiny tokenizer its template
    labels = read_parquet(results / "label" / "token_rewards.parquet", TOKEN_REWARDS).to_pylist()
    assert labels
    for r in labels:
        assert r["prompt_ids"] == encode_prompts(tok, [r["prompt"]], chat_template=True)[0]
        assert tok.decode(r["prompt_ids"], skip_special_tokens=True).startswith("<|user|>\nQuestion: ")
    samples = read_parquet(results / "samples" / "sft" / "rl.parquet", SAMPLES).to_pylist()
    preds = read_parquet(results / "eval" / "sft" / "test" / "predictions.parquet", SAMPLES).to_pylist()
    assert {r["prompt"] for r in labels} <= {r["prompt"] for r in samples} | {
        r["prompt"] for r in read_parquet(results / "samples" / "sft" / "teacher.parquet", SAMPLES).to_pylist()}
    assert all(p["prompt"].startswith("Question: ") for p in preds)  # the user turn; the template wraps it
    card = json.loads((results / "policy" / "rlmec" / "rlmec_model.json").read_text())
    assert card["chat_template"] is True


def test_teacher_rewrites_keep_the_predictions_sentences(math_run):
    from rlmec_core.tasks import get_adapter

    adapter = get_adapter("math")
    rows = read_parquet(math_run / "results" / RUN / "teacher" / "rewrites.parquet", REWRITES).to_pylist()
    ok = [r for r in rows if not r["prediction_correct"] and r["status"] == "ok"]
    assert ok, {r["status"] for r in rows}
    for r in ok:
        assert r["rewrite"].startswith(adapter.kept_prefix(r["prediction"], r["error_step"]))
        assert adapter.judge(r["rewrite"], r["gold_answer"]).correct
