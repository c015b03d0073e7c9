"""The QA task family (adapter mcqa) through the whole default pipeline on ECQA-format data.

A real Snakemake run in a temporary directory on the first rows of ``../shared/data/ecqa`` with the tiny
bootstrap policy (``tests/configs/ecqa_smoke.yaml``); the teacher is the ``openai`` backend talking to
a real HTTP server on 127.0.0.1 (``tests/fake_llm_server.py``) that answers the two-step protocol from
the reference solution in the prompt (``tests/qa_teacher_responder.py``). The tiny model need not learn
anything: every stage must run and write valid Parquet. Skipped when ``../shared/data`` is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_llm_server import FakeLLMServer
from qa_teacher_responder import continuation, first_wrong_step, qa_responder

from rlmec_core.io import read_parquet
from rlmec_core.schemas import GRM_DATA, PROBLEMS, REWRITES, SAMPLES, TOKEN_REWARDS
from rlmec_core.tasks.mcqa import MCQATask
from rlmec_core.teacher.protocol import (
    Prompts,
    complete_messages,
    error_step_messages,
    parse_continuation,
    parse_error_step,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIG = REPO_ROOT / "tests" / "configs" / "ecqa_smoke.yaml"
N_TRAIN, N_VAL, N_TEST = 150, 8, 24
RUN = "ecqa_smoke"
KEY_ENV = "RLMEC_QA_SMOKE_TEACHER_KEY"  # teacher.api_key_env of the config; set only in the subprocess


# -- the responder speaks the teacher's protocol -------------------------------------------------------
REFERENCE = ["Bloody mess is covered or stained with blood.",
             "A person might see a bloody mess at the scene of a brutal killing.",
             "The answer is bloody mess"]
QUESTION = "What might a person see at the scene of a brutal killing?\nOptions:\nbloody mess\npleasure\ncake"


@pytest.mark.parametrize("prediction, step", [
    (["Bloody mess is covered or stained with blood.", "People like cake.", "The answer is cake"], 1),
    (["Cake is sweet.", "The answer is cake"], 0),
    (["Bloody mess is covered or stained with blood."], 1),  # right so far, but no answer: one past the end
    (["Blood everywhere.", "The answer is Bloody mess."], -1),
])
def test_qa_responder_answers_the_teachers_protocol(prediction, step):
    prompts = Prompts()
    reply = qa_responder(error_step_messages(prompts, QUESTION, REFERENCE, prediction), {})
    assert parse_error_step(reply, len(prediction)) == step == first_wrong_step(REFERENCE, prediction)
    if step < 0:
        return
    kept = prediction[:step]
    reply = qa_responder(complete_messages(prompts, QUESTION, REFERENCE, prediction, kept), {})
    rewrite = "\n".join([*kept, *parse_continuation(reply, kept)])
    assert MCQATask().is_correct(rewrite, "bloody mess")
    assert rewrite.splitlines()[-1] == "The answer is bloody mess"


def test_qa_continuation_of_an_answer_only_reference():
    assert continuation(["The answer is sunlight"], 0) == ["The answer is sunlight"]
    assert continuation(["The answer is sunlight"], 3) == ["The answer is sunlight"]
    assert continuation(REFERENCE, 1) == REFERENCE[1:]


def test_the_qa_smoke_config_is_valid_and_fits_ecqa_in_the_tiny_context():
    from rlmec_core.config import load_config

    cfg = load_config(CONFIG)
    assert cfg["task"]["adapter"] == "mcqa" and cfg["policy"]["model"] is None
    assert cfg["teacher"]["backend"] == "openai" and cfg["teacher"]["api_key_env"] == KEY_ENV
    assert cfg["policy"]["bootstrap"]["max_length"] >= 512 and cfg["grm"]["max_length"] >= 512


# -- the pipeline end to end ---------------------------------------------------------------------------
def _rows(path: Path, start: int, stop: int) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for i, line in zip(range(stop), fh) if i >= start]


def _long_row(rows: list[dict], words: int) -> dict:
    """An ECQA-format row whose question stem and solution each run to about ``words`` words (the stems and
    solution steps of ``rows`` joined), with the options and answer of ``rows[0]``."""
    stems = " ".join(r["problem"].split("\nOptions:")[0] for r in rows).split()
    steps = [line for r in rows for line in r["solution"].splitlines() if not line.startswith("The answer is")]
    solution = []
    while sum(len(s.split()) for s in solution) < words:
        solution.append(steps[len(solution) % len(steps)])
    options = rows[0]["problem"].split("\nOptions:")[1]
    return {"problem": " ".join(stems[:words]) + "\nOptions:" + options,
            "solution": "\n".join([*solution, f"The answer is {rows[0]['answer']}"]), "answer": rows[0]["answer"]}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, shared_data):
    ecqa = shared_data / "ecqa"
    if not (ecqa / "train.head2000.jsonl").exists() or not (ecqa / "test.jsonl").exists():
        pytest.skip(f"ECQA files not found under {ecqa}")
    work = tmp_path_factory.mktemp("qa_smoke")
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = REPO_ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    shutil.copy(CONFIG, work / "ecqa_smoke.yaml")
    # The first rows of ECQA, with rows longer than the tiny models' context (policy.bootstrap.max_length and
    # grm.max_length, 512 tokens) at known places: each stage must skip and count them, never crash. A medium
    # row fits the policy's prompt but not the GRM's (question + reference + prediction); a huge one fits
    # nothing. Positions: the teacher draw is train[0:40], the rl draw train[40:70] (the config's draws).
    train = _rows(ecqa / "train.head2000.jsonl", 0, N_TRAIN - 3)
    extra = _rows(ecqa / "train.head2000.jsonl", 200, 260)
    medium, huge = _long_row(extra[:30], 150), _long_row(extra[30:], 450)
    train[0:0] = [medium, huge]
    train.insert(40, medium)
    _write_jsonl(work / "ecqa_src" / "train.jsonl", train)
    _write_jsonl(work / "ecqa_src" / "validation.jsonl", _rows(ecqa / "train.head2000.jsonl", N_TRAIN, N_TRAIN + N_VAL))
    _write_jsonl(work / "ecqa_src" / "test.jsonl", [huge, *_rows(ecqa / "test.jsonl", 0, N_TEST - 1)])
    env = {**os.environ, KEY_ENV: "sk-qa-smoke-not-a-real-key"}
    with FakeLLMServer(qa_responder) as server:
        (work / "teacher_url.yaml").write_text(yaml.safe_dump({"teacher": {"base_url": server.base_url}}))
        proc = subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "ecqa_smoke.yaml",
                               "teacher_url.yaml"], cwd=work, capture_output=True, text=True, env=env)
        counts = server.counts
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return work, proc, counts


@pytest.mark.slow
def test_qa_pipeline_runs_every_stage_and_writes_valid_parquet(qa_run):
    work, proc, served = qa_run
    results = work / "results" / RUN
    for rule in ("data", "policy_bootstrap", "evaluate/sft_test", "sample/sft_teacher", "teacher", "grm_data",
                 "grm_train", "grm_eval", "grm_rewrite", "sample/sft_rl", "label", "rl", "evaluate/rlmec_test",
                 "report"):
        assert (results / "logs" / f"{rule}.log").stat().st_size > 0, rule
        assert (results / "benchmarks" / f"{rule}.tsv").exists(), rule

    problems = {split: read_parquet(work / "data" / RUN / f"{split}.parquet", PROBLEMS)
                for split in ("train", "validation", "test")}
    assert problems["test"].num_rows == N_TEST
    assert (problems["train"].num_rows, problems["validation"].num_rows) == (N_TRAIN, N_VAL)
    assert set(problems["train"].column("task").to_pylist()) == {"mcqa"}

    artefacts = {
        "samples/sft/teacher.parquet": SAMPLES,
        "samples/sft/rl.parquet": SAMPLES,
        "teacher/rewrites.parquet": REWRITES,
        "grm/data.parquet": GRM_DATA,
        "grm/rewrites.parquet": REWRITES,
        "label/token_rewards.parquet": TOKEN_REWARDS,
        "eval/sft/test/predictions.parquet": SAMPLES,
        "eval/rlmec/test/predictions.parquet": SAMPLES,
    }
    tables = {}
    for rel, schema in artefacts.items():
        tables[rel] = read_parquet(results / rel, schema)
        assert tables[rel].num_rows > 0, rel

    # the teacher went over HTTP to the fake server, and its rewrites answer the question
    teacher = json.loads((results / "teacher" / "metrics.json").read_text())
    rewrites = tables["teacher/rewrites.parquet"].to_pylist()
    assert teacher["teacher_backend"] == "openai" and teacher["sent_to_teacher"] > 0
    assert teacher["requests_sent"] == served["requests"] > 0
    sent = [r for r in rewrites if not r["prediction_correct"]]
    assert all(r["teacher_backend"] == "openai" for r in sent)
    assert teacher["statuses"]["ok"] >= 0.9 * len(sent)
    assert all(r["rewrite_correct"] for r in sent if r["status"] == "ok")
    assert {"error_step", "rewrite"} == set(tables["grm/data.parquet"].column("kind").to_pylist())

    # labels are in the policy's vocabulary and line up with their texts
    from transformers import AutoTokenizer

    policy = results / "policy" / "sft"
    tok = AutoTokenizer.from_pretrained(str(policy))
    card = json.loads((policy / "rlmec_model.json").read_text())
    assert card["vocab_size"] == len(tok) and card["adapter"] == "mcqa"
    labels = tables["label/token_rewards.parquet"].to_pylist()
    label_metrics = json.loads((results / "label" / "metrics.json").read_text())
    assert label_metrics["labelled"] == len(labels)
    for row in labels:
        ids = row["prompt_ids"] + row["token_ids"] + row["imitation_ids"]
        assert all(0 <= t < len(tok) for t in ids), row["sample_id"]
        assert row["prompt_ids"] == tok(row["prompt"])["input_ids"]
        assert tok.decode(row["token_ids"], skip_special_tokens=True) == row["prediction"]
        assert tok.decode(row["imitation_ids"], skip_special_tokens=True) == row["rewrite"]
        n = len(row["token_ids"])
        assert len(row["tokens"]) == len(row["grm_probs"]) == len(row["rewards"]) == len(row["old_logprobs"]) == n
        assert len(row["imitation_weights"]) == len(row["imitation_ids"])

    for policy_name in ("sft", "rlmec"):
        metrics = json.loads((results / "eval" / policy_name / "test" / "metrics.json").read_text())
        assert metrics["total"] == N_TEST == tables[f"eval/{policy_name}/test/predictions.parquet"].num_rows
        assert metrics["prompt_too_long"] == 1  # the huge row: skipped, counted (wrong)

    # rows longer than a context were skipped and counted wherever they met one
    assert card["skipped_too_long"] == 3  # the medium row twice and the huge one
    reasons = tables["samples/sft/teacher.parquet"].column("finish_reason").to_pylist()
    assert reasons.count("prompt_too_long") == 2  # the huge row's sample.n samples
    assert label_metrics["too_long"] >= 1  # the medium row's rewrite (its reference) does not fit after its prompt
    grm_rewrites = json.loads((results / "grm" / "rewrites_metrics.json").read_text())
    assert grm_rewrites["prompt_too_long"] >= 1  # the medium row of the rl draw: the GRM's prompt does not fit
    skipped = [r for r in tables["grm/rewrites.parquet"].to_pylist() if r["status"] == "filtered"]
    assert skipped and all("context" in r["detail"] for r in skipped)
    assert (results / "policy" / "rlmec" / "model.safetensors").exists()
    assert "RLMEC" in (results / "report.html").read_text()
    assert "greedy accuracy" in proc.stdout + proc.stderr
