"""`rlmec inspect` (rlmec_core.inspect): token_rewards rows coloured by reward, any other Parquet, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_report import token_reward_rows

from rlmec_core.cli import main as cli_main
from rlmec_core.errors import DataError
from rlmec_core.inspect import (
    ANSI_EDIT,
    ANSI_NEG,
    ANSI_POS,
    edited_mask,
    identify_schema,
    infer_kept_weight,
    inspect_parquet,
    marked_prediction,
    reward_level,
)
from rlmec_core.io import write_parquet
from rlmec_core.rewards import step_reward_sums
from rlmec_core.schemas import ALL_SCHEMAS, PROBLEMS, TOKEN_REWARDS

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    path = tmp_path / "token_rewards.parquet"
    write_parquet(pa.Table.from_pylist(token_reward_rows(), schema=TOKEN_REWARDS), path, TOKEN_REWARDS)
    return path


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "test.parquet"
    rows = [{"id": f"arith-test-{i:06d}", "question": f"What is {i} + {i}?" + " long" * 100,
             "reference_solution": f"{i} + {i} = {2 * i}\nThe answer is {2 * i}", "answer": str(2 * i), "task": "arith"}
            for i in range(3)]
    write_parquet(pa.Table.from_pylist(rows, schema=PROBLEMS), path, PROBLEMS)
    return path


def _step_lines(text: str) -> list[tuple[int, float, str]]:
    return [(int(m[1]), float(m[2]), m[3]) for m in re.finditer(r"^  \[(\d+)\] +([+-]\d+\.\d{3})  (.*?)(?:  <- first error step)?$",
                                                                  ANSI.sub("", text), re.M)]


def test_row_in_colour(labels: Path) -> None:
    out = inspect_parquet(labels, row=0, color=True)
    row = token_reward_rows()[0]
    assert "p0#0" in out and "incorrect" in out and row["question"] in out
    # " 9" has r = -0.1 (the clip's end): the strongest red; "7" (r = 0) stays plain
    assert f"{ANSI_NEG[2]} 9\x1b[0m" in out
    assert not any(code in out for code in ANSI_POS)
    assert f"{ANSI_EDIT} 14\x1b[0m" in out  # the rewrite's edited token
    plain = ANSI.sub("", out)
    assert "5 < 7\n7 & 2 = 9\nThe answer is 9" in plain  # colours only wrap the text
    # a correct row is green where rewarded
    out = inspect_parquet(labels, row=1, color=True)
    assert any(code in out for code in ANSI_POS) and not any(code in out for code in ANSI_NEG)


def test_row_plain_markers_and_step_sums(labels: Path) -> None:
    out = inspect_parquet(labels, row=0, color=False)
    assert "\x1b" not in out
    assert "7 & 2 = [9|r=-0.10]\nThe answer is [9|r=-0.10]" in out
    assert "7 & 2 = {+14+}\nThe answer is {+14+}" in out
    row = token_reward_rows()[0]
    steps = _step_lines(out)
    expected = step_reward_sums(row["tokens"], row["rewards"])
    assert [i for i, _, _ in steps] == list(range(len(expected))) == [0, 1, 2]
    assert [s for _, s, _ in steps] == pytest.approx(expected, abs=5e-4)
    assert [t for _, _, t in steps] == ["5 < 7", "7 & 2 = 9", "The answer is 9"]
    assert "[1]   -0.100  7 & 2 = 9  <- first error step" in out
    # whitespace around a penalised token stays outside its marker (line breaks stay put)
    out4 = inspect_parquet(labels, sample_id="p4#2", color=False)
    assert "[x <|r=-0.01]" in out4 and "[y|r=-0.10]\n" in out4
    assert "{+The answer is 14+}" in out4 and "{+z+}" in out4


def test_id_lookup_equals_row(labels: Path) -> None:
    assert inspect_parquet(labels, sample_id="p2#3", color=False).replace("(id 'p2#3') ", "") == \
        inspect_parquet(labels, row=2, color=False)
    assert inspect_parquet(labels, row=-1, color=False) == inspect_parquet(labels, row=4, color=False)
    # every token of that fully rewritten row is edited (the correct rows show the kept weight)
    assert "{+7 & 2 = 14+}\n{+The answer is 14+}" in inspect_parquet(labels, sample_id="p2#3", color=False)


def test_errors_name_the_file_and_row(labels: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"{re.escape(str(labels))}: row 99 out of range \(the file has 5 row"):
        inspect_parquet(labels, row=99)
    with pytest.raises(DataError, match=rf"{re.escape(str(labels))}: row -6 out of range"):
        inspect_parquet(labels, row=-6)
    with pytest.raises(DataError, match=rf"{re.escape(str(labels))}: id 'nope#1' not found in column 'sample_id'"):
        inspect_parquet(labels, sample_id="nope#1")
    with pytest.raises(DataError, match=r"missing\.parquet: file not found"):
        inspect_parquet(tmp_path / "missing.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        inspect_parquet(bad, row=0)
    with pytest.raises(ValueError, match="not both"):
        inspect_parquet(labels, row=0, sample_id="p0#0")


def test_summary_without_row(labels: Path) -> None:
    out = inspect_parquet(labels, color=False, max_rows_summary=3)
    assert "token_rewards file, 5 row(s)" in out
    assert re.search(r"^  grm_probs\s+list<\w+: float>$", out, re.M)
    assert "first 3 sample_id(s):\n  [0] p0#0\n  [1] p1#0\n  [2] p2#3" in out


def test_other_schemas(problems: Path, tmp_path: Path) -> None:
    out = inspect_parquet(problems)
    assert "problems file, 3 row(s)" in out
    assert re.search(r"^  question\s+string$", out, re.M)
    assert "[0] arith-test-000000" in out
    row = inspect_parquet(problems, row=1)
    assert "row 1:" in row and re.search(r"^  answer\s+'2'$", row, re.M)
    assert re.search(r"^  id\s+'arith-test-000001'$", row, re.M)
    assert re.search(r"^  question\s+'What is 1 \+ 1\? long.*\.\.\.$", row, re.M)  # long value truncated
    assert max(len(line) for line in row.splitlines()) < 260
    assert "arith-test-000002" in inspect_parquet(problems, sample_id="arith-test-000002")
    # an unknown Parquet: schema and rows all the same
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2], "label": ["a", "b"]}), other)
    out = inspect_parquet(other, row=1)
    assert "unknown schema" in out and "2 row(s)" in out and re.search(r"^  label\s+'b'$", out, re.M)
    with pytest.raises(DataError, match="no id column"):
        inspect_parquet(other, sample_id="a")


def test_identify_schema() -> None:
    for name, schema in ALL_SCHEMAS.items():
        assert identify_schema(schema) == name
    extra = TOKEN_REWARDS.append(pa.field("note", pa.string()))
    assert identify_schema(extra) == "token_rewards"
    assert identify_schema(pa.schema([("x", pa.int64())])) is None


def test_helpers() -> None:
    assert reward_level(-0.1) == 1.0 and reward_level(-0.05) == pytest.approx(0.5)
    assert reward_level(0.25) == pytest.approx(0.5) and reward_level(0.0) == 0.0
    assert reward_level(0.25, pos_clip=(0.0, 0.25)) == 1.0
    assert edited_mask([0.5, 1.0, 0.5]) == [False, True, False]
    assert edited_mask([1.0, 1.0]) == [False, False]
    assert edited_mask([1.0, 1.0], kept_weight=0.5) == [True, True]
    assert infer_kept_weight([True, False, True], [[0.5, 0.5], [1.0], [0.5]]) == 0.5
    assert infer_kept_weight([False], [[1.0]]) is None
    assert marked_prediction(["a", " b", "\n"], [0.0, -0.02, -0.1]) == "a [b|r=-0.02][\\n|r=-0.10]\n"


def test_cli_inspect(labels: Path, problems: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", str(labels), "--row", "0", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "[9|r=-0.10]" in out and "\x1b" not in out
    assert cli_main(["inspect", str(labels), "--id", "p0#0"]) == 0  # not a TTY: no colour by default
    assert "\x1b" not in capsys.readouterr().out
    assert cli_main(["inspect", str(labels), "--id", "p0#0", "--color"]) == 0
    assert ANSI_NEG[2] in capsys.readouterr().out
    assert cli_main(["inspect", str(problems)]) == 0
    assert "problems file, 3 row(s)" in capsys.readouterr().out
    assert cli_main(["inspect", str(labels), "--id", "zzz"]) == 2
    err = capsys.readouterr().err
    assert "rlmec inspect: error:" in err and "'zzz' not found" in err and str(labels) in err
    with pytest.raises(SystemExit):
        cli_main(["inspect", str(labels), "--row", "0", "--id", "p0#0"])  # exclusive options
