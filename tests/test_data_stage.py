"""Stage `data`: generated and real-format tables, checks, and atomic outputs on bad input."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from rlmec_core.config import validate_config
from rlmec_core.errors import ConfigError, DataError
from rlmec_core.schemas import PROBLEMS
from rlmec_core.stages.data import SPLITS, load_problems, run_data


def outputs(tmp_path):
    return {s: tmp_path / f"{s}.parquet" for s in SPLITS}


def test_demo_task_tables_are_deterministic(tmp_path):
    task = validate_config({"task": {"synth": {"n_train": 50, "n_validation": 10, "n_test": 20}}})["task"]
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        run_data(task, 3, outputs(d), d / "stats.json")
    for split in SPLITS:
        assert (a / f"{split}.parquet").read_bytes() == (b / f"{split}.parquet").read_bytes()
        assert pq.read_table(a / f"{split}.parquet").schema.equals(PROBLEMS)
    stats = json.loads((a / "stats.json").read_text())
    assert {k: v["problems"] for k, v in stats["splits"].items()} == {"train": 50, "validation": 10, "test": 20}


def gsm8k_task(train, test):
    return validate_config({"task": {"name": "g", "adapter": "gsm8k", "source": {"train": str(train), "test": str(test)},
                                     "validation_fraction": 0.25}})["task"]


GOOD = '{"question": "Tom has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\\n#### 5"}\n'


def test_real_format_with_carved_validation(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(GOOD * 8)
    test.write_text(GOOD * 3)
    run_data(gsm8k_task(train, test), 0, outputs(tmp_path), tmp_path / "stats.json")
    val = load_problems(tmp_path / "validation.parquet")
    assert len(val) == 2 and len(load_problems(tmp_path / "train.parquet")) == 6
    assert val[0].id == "g-validation-000000"
    assert val[0].reference_solution.splitlines()[-1] == "The answer is 5"


@pytest.mark.parametrize(
    "bad_line, where, message",
    [  # a line that is no JSON is named by its line; a record the adapter rejects by its row (both 1-based)
        ('{"question": "x", "answer": \n', "train.jsonl:3", "bad JSON"),
        ('{"answer": "#### 5"}\n', "train.jsonl: row 3", "missing field 'question'"),
        ('{"question": "  ", "answer": "#### 5"}\n', "train.jsonl: row 3", "empty question"),
    ],
)
def test_malformed_row_names_file_and_line_and_writes_nothing(tmp_path, bad_line, where, message):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(GOOD * 2 + bad_line + GOOD)
    test.write_text(GOOD)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"{re.escape(where)}: {message}"):
        run_data(gsm8k_task(train, test), 0, outputs(out), out / "stats.json")
    assert not out.exists() or not any(out.iterdir())


def test_missing_source_is_a_config_error(tmp_path):
    task = validate_config({"task": {"adapter": "svamp"}})["task"]
    with pytest.raises(ConfigError, match="task.source.train"):
        run_data(task, 0, outputs(tmp_path), tmp_path / "stats.json")


def test_attributes_of_math_rows_reach_the_problem_table_and_the_accuracy_breakdown(tmp_path):
    """MATH's level and type stay with each problem (PROBLEMS.attributes), so accuracy can be broken down."""
    import json

    from rlmec_core.stages.data import load_problems, run_data
    from rlmec_core.stages.evaluate import accuracy_by_attribute

    rows = [{"problem": f"What is ${i}+1$?", "level": f"Level {1 + i % 2}", "type": "Algebra" if i < 3 else "Geometry",
             "solution": f"It is $\\boxed{{{i + 1}}}$."} for i in range(6)]
    src = tmp_path / "math.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = {s: tmp_path / f"{s}.parquet" for s in ("train", "validation", "test")}
    task = {"name": "m", "adapter": "math", "source": {"train": str(src), "validation": str(src), "test": str(src)},
            "columns": {}, "validation_fraction": 0.05}
    run_data(task, 0, out, tmp_path / "stats.json")
    problems = load_problems(out["test"])
    assert [dict(p.attributes)["level"] for p in problems] == ["Level 1", "Level 2"] * 3
    by = accuracy_by_attribute(problems, [True, False, True, False, True, True])
    assert by["level"]["Level 1"]["correct"] == 3 and by["level"]["Level 2"]["total"] == 3
    assert by["type"]["Geometry"]["accuracy"] == pytest.approx(2 / 3) and "source_id" not in by
