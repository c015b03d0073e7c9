"""The evaluation suite (target ``eval_suite``): sets of any family read into problem tables, one policy
decoded on all of them in one generation call, one table of sets x policies."""

from __future__ import annotations

import json

import pytest

from rlmec_core.errors import ConfigError, DataError
from rlmec_core.sampling import EngineSettings
from rlmec_core.stages.data import load_problems
from rlmec_core.stages.eval_suite import (SuiteTask, build_suite_data, evaluate_suite, few_shot_template, suite_table,
                                          suite_tasks)
from rlmec_core.tasks import Problem


def test_few_shot_template_puts_worked_examples_before_the_question():
    shots = [Problem("a", "1+1?", "1 + 1 = 2\nThe answer is 2", "2", "gsm8k"),
             Problem("b", "2+2?", "2 + 2 = 4\nThe answer is 4", "4", "gsm8k")]
    t = few_shot_template("Q: {question}\nA:\n", shots)
    assert t == ("Q: 1+1?\nA:\n1 + 1 = 2\nThe answer is 2\n\nQ: 2+2?\nA:\n2 + 2 = 4\nThe answer is 4\n\n"
                 "Q: {question}\nA:\n")
    assert few_shot_template("Q: {question}", []) == "Q: {question}"


def test_suite_config_errors_name_the_entry():
    with pytest.raises(ConfigError, match="eval_suite.tasks is empty"):
        suite_tasks([])
    with pytest.raises(ConfigError, match=r"eval_suite.tasks\[1\]: missing source"):
        suite_tasks([{"name": "a", "adapter": "gsm8k", "source": "x"}, {"name": "b", "adapter": "gsm8k"}])
    with pytest.raises(ConfigError, match="more than once"):
        suite_tasks([{"name": "a", "adapter": "gsm8k", "source": "x"}] * 2)


def _gsm(tmp_path, n):
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"})
                            + "\n" for i in range(n)))
    return path


def test_suite_data_takes_the_shots_first_then_the_limit(tmp_path):
    src = _gsm(tmp_path, 10)
    task = SuiteTask("g", "gsm8k", str(src), limit=4, few_shot=3)
    assert build_suite_data(task, tmp_path / "t.parquet", tmp_path / "s.parquet") == {"problems": 4, "few_shot": 3}
    test, shots = load_problems(tmp_path / "t.parquet"), load_problems(tmp_path / "s.parquet")
    assert [p.answer for p in shots] == ["1", "2", "3"] and [p.answer for p in test] == ["4", "5", "6", "7"]
    assert test[0].id == "suite-g-000000"
    other = SuiteTask("g", "gsm8k", str(src), few_shot=2, few_shot_source=str(_gsm(tmp_path / "x", 2) if
                                                                              (tmp_path / "x").mkdir() is None else ""))
    assert build_suite_data(other, tmp_path / "t2.parquet", tmp_path / "s2.parquet") == {"problems": 10, "few_shot": 2}
    with pytest.raises(DataError, match="few_shot=5 but the few-shot source has 2 rows"):
        build_suite_data(SuiteTask("g", "gsm8k", str(src), few_shot=5, few_shot_source=other.few_shot_source),
                         tmp_path / "t3.parquet", tmp_path / "s3.parquet")
    with pytest.raises(DataError, match="no problem left"):
        build_suite_data(SuiteTask("g", "gsm8k", str(_gsm(tmp_path / "x", 2)), few_shot=2), tmp_path / "t4.parquet",
                         tmp_path / "s4.parquet")
    with pytest.raises(DataError, match=r"eval_suite.tasks\[g\].source: .*no-such.jsonl: file not found"):
        build_suite_data(SuiteTask("g", "gsm8k", str(tmp_path / "no-such.jsonl")), tmp_path / "t5.parquet",
                         tmp_path / "s5.parquet")


def test_one_policy_on_three_real_sets_in_one_call(shared_data, demo_policy, tmp_path):
    """Slices of GSM8K (2-shot), ARC and SVAMP decoded by the tiny demo policy (transformers), judged by each
    set's adapter; the table lists every set for every policy."""
    tasks = suite_tasks([
        {"name": "gsm8k", "adapter": "gsm8k", "source": str(shared_data / "gsm8k" / "test.jsonl"), "limit": 6,
         "few_shot": 2},
        {"name": "arc", "adapter": "mcqa", "source": str(shared_data / "arc" / "test.jsonl"), "limit": 5},
        {"name": "svamp", "adapter": "svamp", "source": {"path": str(shared_data / "svamp" / "SVAMP.json")}, "limit": 4},
    ])
    dirs = {}
    for t in tasks:
        dirs[t.name] = tmp_path / "data" / t.name
        build_suite_data(t, dirs[t.name] / "test.parquet", dirs[t.name] / "shots.parquet")
    out = {}
    for policy in ("sft", "again"):
        out[policy] = tmp_path / policy
        m = evaluate_suite(demo_policy, tasks, dirs, out[policy], default_template="Question: {question}\nAnswer:\n",
                           max_new_tokens=16, engine=EngineSettings(backend="hf"))
        assert {k: v["total"] for k, v in m["tasks"].items()} == {"gsm8k": 6, "arc": 5, "svamp": 4}
    preds = __import__("pyarrow.parquet", fromlist=["x"]).read_table(out["sft"] / "gsm8k" / "predictions.parquet")
    prompt = preds.column("prompt")[0].as_py()
    assert prompt.count("Question: ") == 3 and prompt.endswith("Answer:\n")  # two worked examples, then the question
    table = suite_table({p: out[p] / "metrics.json" for p in out}, tmp_path / "t.md", tmp_path / "t.json")
    assert table["sets"] == ["gsm8k", "arc", "svamp"] and table["policies"] == ["sft", "again"]
    text = (tmp_path / "t.md").read_text()
    assert "| gsm8k | gsm8k | 2 |" in text and "| arc | mcqa | 0 |" in text and text.count("/4)") == 2
    assert table["rows"][0]["sft"]["accuracy"] == table["rows"][0]["again"]["accuracy"]  # greedy: deterministic


def test_the_target_without_sets_stops_before_any_job(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for item in ("Snakefile", "workflow", "config", "profiles", "environment.yml"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    proc = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "eval_suite"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "eval_suite.tasks is empty" in proc.stdout + proc.stderr
