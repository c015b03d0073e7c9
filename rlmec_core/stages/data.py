"""Stage ``data``: build the problem tables ``{train,validation,test}.parquet`` of a task.

The demo task (adapter ``arith``) is generated from ``task.synth`` with the run's seed. A real task's
splits are read from ``task.source`` through Hugging Face ``datasets`` (local JSON/JSONL/CSV/Parquet files,
``save_to_disk`` directories or hub data sets; ``rlmec_core.sources``), their columns renamed by
``task.columns``, and each row turned into a problem by the task's adapter. A missing validation source is
carved out of train (``task.validation_fraction``, seeded). Every table is checked (unique ids, non-empty
question and answer) and written atomically with the ``PROBLEMS`` schema.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from rlmec_core.errors import ConfigError, DataError
from rlmec_core.io import read_parquet, write_json_atomic, write_parquet
from rlmec_core.schemas import PROBLEMS
from rlmec_core.sources import describe_source, parse_source, read_records, source_kind
from rlmec_core.tasks import Problem, get_adapter
from rlmec_core.tasks.arith import ArithSpec, Tier, generate_problems, generate_splits

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


SPEC_KEYS = ("min_steps", "max_steps", "operand_min", "operand_max", "mul_max", "max_value", "operators")


def arith_spec(synth: Mapping[str, Any], where: str = "task.synth") -> ArithSpec:
    """The generator spec from config ``task.synth`` (split sizes and the hard tier are not part of it)."""
    kwargs: dict[str, Any] = {k: synth[k] for k in SPEC_KEYS if k in synth}
    if "operators" in kwargs:
        kwargs["operators"] = tuple(kwargs["operators"])
    try:
        return ArithSpec(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def hard_tier(synth: Mapping[str, Any]) -> Tier | None:
    """The second kind of problem of ``task.synth.hard`` (its keys override the main spec's), or None."""
    hard = synth.get("hard")
    if not hard:
        return None
    spec = arith_spec({**{k: synth[k] for k in SPEC_KEYS if k in synth}, **{k: v for k, v in hard.items() if k != "share"}},
                      "task.synth.hard")
    try:
        return Tier(share=float(hard["share"]), spec=spec)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"task.synth.hard.share: {exc}") from exc


def synthesize(n: int, seed: int, synth: Mapping[str, Any], *, split: str = "test", prefix: str = "arith") -> list[Problem]:
    """``n`` demo problems for any seed (the ``rlmec data synth`` command)."""
    return generate_problems(n, seed, arith_spec(synth), split=split, prefix=prefix)


def validate_problems(problems: list[Problem], where: str) -> None:
    """Raise ``DataError`` naming ``where`` and the row for empty fields or duplicate ids."""
    if not problems:
        raise DataError(f"{where}: no problems")
    seen: dict[str, int] = {}
    for i, p in enumerate(problems):
        for name in ("id", "question", "answer", "reference_solution"):
            if not getattr(p, name).strip():
                raise DataError(f"{where}: row {i} (id {p.id!r}) has an empty {name}")
        if p.id in seen:
            raise DataError(f"{where}: duplicate id {p.id!r} in rows {seen[p.id]} and {i}")
        seen[p.id] = i


def problems_table(problems: list[Problem]) -> pa.Table:
    return pa.Table.from_pylist([p.as_row() for p in problems], schema=PROBLEMS)


def load_problems(path: str | Path) -> list[Problem]:
    """Read a problem table written by this stage (schema-checked; no empty table, no duplicate id, no
    empty field: every stage looks problems up by id)."""
    table = read_parquet(path, PROBLEMS)  # a table written before the attributes column existed reads as null
    problems = [Problem.from_row(row) for row in table.to_pylist()]
    validate_problems(problems, str(path))
    return problems


def draw_problems(problems: list[Problem], first: int, count: int | None, where: str | Path, *,
                  exact: bool = False) -> list[Problem]:
    """The problems ``first .. first + count`` of a split (all from ``first`` on when ``count`` is None), as a
    config ``sample.draws.<draw>`` names them; raises ``DataError`` naming ``where`` when the range is empty,
    or (``exact``: a later round's fresh draw) when the split ends before ``first + count``."""
    chosen = problems[first: None if count is None else first + count]
    if not chosen:
        raise DataError(f"{where}: no problems in the range first={first}, problems={count} "
                        f"(the split has {len(problems)})")
    if exact and count is not None and len(chosen) < count:
        raise DataError(f"{where}: the draw first={first}, problems={count} needs {first + count} problems but the "
                        f"split has {len(problems)}; every round samples fresh problems: lower `rounds` or "
                        "sample.draws.rl.problems, or use a larger split")
    return chosen


def build_splits(task: Mapping[str, Any], seed: int, *, cache_dir: str | Path | None = None) -> dict[str, list[Problem]]:
    """The three splits for config ``task`` (see the module docstring); ``cache_dir`` is where
    ``datasets`` caches what it reads (``rlmec_core.sources.read_records``)."""
    adapter_name = task["adapter"]
    name = task["name"]
    if adapter_name == "arith":
        synth = task["synth"]
        spec = arith_spec(synth)
        sizes = {"test": synth["n_test"], "validation": synth["n_validation"], "train": synth["n_train"]}
        try:
            return generate_splits(sizes, seed, spec, prefix=name, tier=hard_tier(synth))
        except ValueError as exc:
            raise ConfigError(f"task.synth: {exc}") from exc

    adapter = get_adapter(adapter_name)
    source = task.get("source") or {}
    columns = task.get("columns") or {}
    splits: dict[str, list[Problem]] = {}
    for split in SPLITS:
        spec = source.get(split)
        if spec:
            key = f"task.source.{split}"
            records = read_records(spec, key=key, columns=columns, default_split=split, cache_dir=cache_dir)
            splits[split] = adapter.problems_from_records(records, split=split)
            if not splits[split]:
                what = "file" if source_kind(parse_source(spec, key)) == "file" else "data set"
                raise DataError(f"{key}: {describe_source(spec)}: no problems (the {split} {what} is empty)")
    for split in ("train", "test"):
        if split not in splits:
            raise ConfigError(f"task.source.{split}: a {adapter_name} task needs a {split} source")
    if "validation" not in splits:
        frac = task["validation_fraction"]
        train = list(splits["train"])
        random.Random(seed).shuffle(train)
        n_val = max(1, int(round(frac * len(train))))
        if n_val >= len(train):
            raise ConfigError(f"task.validation_fraction={frac} leaves no training problems ({len(train)} rows)")
        splits["validation"], splits["train"] = train[:n_val], train[n_val:]
        log.info("carved %d validation problems out of %d training problems", n_val, len(train))
    # Ids name the task and split (adapters number rows per file), so tables of two tasks never collide.
    return {
        split: [replace(p, id=f"{name}-{split}-{i:06d}") for i, p in enumerate(problems)]
        for split, problems in splits.items()
    }


def run_data(task: Mapping[str, Any], seed: int, outputs: Mapping[str, str | Path], stats_path: str | Path) -> dict[str, Any]:
    """Build, check and write the splits; return (and write) per-split statistics."""
    splits = build_splits(task, seed)
    stats: dict[str, Any] = {"task": task["name"], "adapter": task["adapter"], "seed": seed, "splits": {}}
    adapter = get_adapter(task["adapter"])
    for split in SPLITS:  # every split is checked before any is written: a bad one leaves no other behind
        validate_problems(splits[split], f"{task['name']}/{split}")
    for split in SPLITS:
        problems = splits[split]
        write_parquet(problems_table(problems), outputs[split], PROBLEMS)
        n_steps = [len(adapter.split_steps(p.reference_solution)) for p in problems]
        stats["splits"][split] = {
            "problems": len(problems),
            "mean_solution_steps": sum(n_steps) / len(n_steps),
            "path": str(outputs[split]),
        }
        log.info("%s: %d problems -> %s", split, len(problems), outputs[split])
    write_json_atomic(stats_path, stats)
    return stats
