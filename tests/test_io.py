"""Atomic writes, schema-checked Parquet, and line-numbered JSON errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rlmec_core.errors import DataError
from rlmec_core.io import atomic_path, iter_jsonl, read_json, read_parquet, write_json_atomic, write_parquet
from rlmec_core.schemas import PROBLEMS

ROW = {"id": "a", "question": "q", "reference_solution": "s", "answer": "1", "task": "arith"}


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_a_directory(tmp_path):
    target = tmp_path / "model"
    for content in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "w.txt").write_text(content)
    assert (target / "w.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_parquet_roundtrip_and_cast(tmp_path):
    path = tmp_path / "p.parquet"
    write_parquet(pa.Table.from_pylist([ROW]), path, PROBLEMS)
    table = read_parquet(path, PROBLEMS)
    assert table.schema.equals(PROBLEMS)
    assert table.to_pylist() == [{**ROW, "attributes": None}]  # an optional column a table lacks reads as null


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "p.parquet"
    row = dict(ROW)
    del row["answer"]
    pa.parquet.write_table(pa.Table.from_pylist([row]), path)
    with pytest.raises(DataError, match=r"p\.parquet.*missing column.*answer"):
        read_parquet(path, PROBLEMS)


def test_null_in_required_column_is_named(tmp_path):
    path = tmp_path / "p.parquet"
    with pytest.raises(DataError, match="'question' has 1 null"):
        write_parquet(pa.Table.from_pylist([{**ROW, "question": None}]), path, PROBLEMS)
    assert not path.exists()


def test_corrupt_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "p.parquet"
    write_parquet(pa.Table.from_pylist([ROW] * 50), path, PROBLEMS)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"p\.parquet: not a readable Parquet file"):
        read_parquet(path, PROBLEMS)


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    rows = []
    with pytest.raises(DataError, match=r"d\.jsonl:4: bad JSON"):
        for lineno, obj in iter_jsonl(path):
            rows.append((lineno, obj))
    assert rows == [(1, {"a": 1}), (3, {"a": 2})]


def test_jsonl_rejects_non_utf8_and_non_objects(tmp_path):
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(bad))
    lst = tmp_path / "l.jsonl"
    lst.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"l\.jsonl:1: expected a JSON object"):
        list(iter_jsonl(lst))


def test_read_json_names_line(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('[\n {"a": 1},\n {"a": }\n]')
    with pytest.raises(DataError, match=r"x\.json:3: bad JSON"):
        read_json(path)
    write_json_atomic(path, {"b": 2})
    assert read_json(path) == {"b": 2}
