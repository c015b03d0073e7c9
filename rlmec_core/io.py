"""File I/O shared by every stage: atomic writes, schema-checked Parquet, line-numbered JSON(L) reading.

Outputs are always written to a temporary sibling first and renamed into place, so an interrupted job
never leaves a half-written artefact under its final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlmec_core.errors import DataError

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    Works for files and directories alike (whatever the block creates at the yielded path).
    On error the temporary is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"atomic write of {final}: nothing was written")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporaries that an earlier writer of ``path`` left when it was killed (SIGKILL skips the
    clean-up of ``atomic_path``); returns what was removed. Only names ``atomic_path`` makes for this very
    ``path`` (``.<name>.<8 random characters>.tmp``) are touched."""
    final = Path(path)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.tmp")
    stale = [p for p in final.parent.iterdir() if pattern.fullmatch(p.name)]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_parquet(table: pa.Table, path: PathLike, schema: pa.Schema) -> None:
    """Check ``table`` against ``schema`` (cast where lossless) and write it atomically as Parquet."""
    table = conform(table, schema, where=str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: PathLike, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet file; when ``schema`` is given, check that every schema column is present.

    Raises:
        DataError: the file is missing, not Parquet (truncated or corrupt), or lacks a column.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from exc
    if schema is not None:
        table = conform(table, schema, where=str(p))
    return table


def conform(table: pa.Table, schema: pa.Schema, *, where: str) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, in order, cast to its types.

    Extra columns are dropped; an absent column whose field is marked optional (metadata ``optional``, a
    column added to a schema later, e.g. ``PROBLEMS.attributes``) is filled with nulls. Raises ``DataError``
    naming ``where`` and the column when any other column is missing or cannot be cast safely, or when a
    non-nullable column holds nulls.
    """
    for f in schema:
        if f.name not in table.column_names and (f.metadata or {}).get(b"optional") == b"true":
            table = table.append_column(f.name, pa.nulls(table.num_rows, f.type))
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; expected {schema.names}")
    columns = []
    for field in schema:
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"{where}: column {field.name!r} has type {col.type}, expected {field.type} ({exc})"
                ) from exc
        if not field.nullable and col.null_count:
            raise DataError(f"{where}: column {field.name!r} has {col.null_count} null value(s)")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a JSON Lines file.

    Raises:
        DataError: naming the file and the 1-based line for bad UTF-8, bad JSON or a non-object line.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{p}:{lineno}: not valid UTF-8 ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: bad JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_json(path: PathLike) -> Any:
    """Read a whole JSON file, with errors that name the file, line and column."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        return json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not valid UTF-8 ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}:{exc.lineno}: bad JSON ({exc.msg} at column {exc.colno})") from exc
