"""Target ``eval_suite``: greedy accuracy of several policies on a list of evaluation sets, one table.

The paper reports its policies on GSM8K, MATH, SVAMP, MMLU (STEM), ECQA, QASC, OpenBookQA and ARC. Config
``eval_suite.tasks`` lists such sets, each with its adapter and source (any form of ``task.source``), an
optional prompt template and a number of few-shot examples. Three steps, one Snakemake rule each:

1. ``build_suite_data``: read one set into ``data/suite/<name>/test.parquet`` (the evaluated problems) and
   ``shots.parquet`` (the few-shot examples: the first ``few_shot`` rows of ``few_shot_source``, or of the
   set itself, which are then not evaluated), both ``PROBLEMS`` tables;
2. ``evaluate_suite``: one policy on every set, in **one** generation call (one engine load for the whole
   suite), judged by each set's adapter; per set a ``SAMPLES`` table of predictions and metrics with a
   Wilson interval (and the breakdown by ``attributes``: MATH level and type, MMLU subject);
3. ``suite_table``: the table of every set and policy, Markdown and JSON.

A few-shot prompt is the examples, each the set's prompt filled with the example's question followed by its
reference solution, separated by a blank line, then the prompt of the question; with ``task.chat_template``
the whole text is the one user message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlmec_core.errors import ConfigError, DataError
from rlmec_core.io import read_json, read_parquet, write_json_atomic, write_parquet, write_text_atomic
from rlmec_core.sampling import EngineSettings, SampleSettings, generate, tokens_per_second
from rlmec_core.schemas import PROBLEMS, SAMPLES
from rlmec_core.sources import Source, read_records
from rlmec_core.stages.data import load_problems, problems_table, validate_problems
from rlmec_core.stages.evaluate import prediction_metrics
from rlmec_core.stages.sample import samples_table
from rlmec_core.tasks import Problem, TaskAdapter, get_adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteTask:
    """One entry of config ``eval_suite.tasks`` (see ``config/schema.yaml``, ``$defs.suite_task``)."""

    name: str
    adapter: str
    source: Source
    columns: Mapping[str, str] = field(default_factory=dict)
    limit: int | None = None
    prompt_template: str | None = None
    few_shot: int = 0
    few_shot_source: Source | None = None

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], index: int) -> SuiteTask:
        """A suite task from its config entry (defaults as in the schema); ``ConfigError`` naming
        ``eval_suite.tasks[index]`` for a missing or unknown key."""
        where = f"eval_suite.tasks[{index}]"
        missing = [k for k in ("name", "adapter", "source") if not entry.get(k)]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        unknown = set(entry) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        task = cls(**{k: v for k, v in entry.items() if v is not None or k in ("limit", "prompt_template")})
        if task.few_shot < 0:
            raise ConfigError(f"{where}.few_shot: must be >= 0, got {task.few_shot}")
        return task


def suite_tasks(entries: Sequence[Mapping[str, Any]]) -> list[SuiteTask]:
    """Every ``eval_suite.tasks`` entry; ``ConfigError`` for an empty list or a repeated name."""
    if not entries:
        raise ConfigError("eval_suite.tasks is empty: list the evaluation sets (name, adapter, source) to run the "
                          "eval_suite target (docs/eval_suite.md)")
    tasks = [SuiteTask.from_config(e, i) for i, e in enumerate(entries)]
    names = [t.name for t in tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"eval_suite.tasks: the name(s) {dup} appear more than once")
    return tasks


def few_shot_template(template: str, shots: Sequence[Problem]) -> str:
    """``template`` with the worked examples ``shots`` before it: for each example the template filled with
    its question followed by its reference solution, then a blank line. No shots: ``template`` itself."""
    examples = "".join(template.replace("{question}", s.question) + s.reference_solution + "\n\n" for s in shots)
    return examples + template


def build_suite_data(task: SuiteTask, test_path: str | Path, shots_path: str | Path, *,
                     cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Read ``task``'s set (and few-shot source) into two ``PROBLEMS`` tables; returns counts.

    Ids are ``suite-<name>-<row:06d>`` (``...-shot-...`` for the examples). Raises ``DataError`` when the
    set has no problem left to evaluate or fewer rows than ``few_shot`` examples.
    """
    key = f"eval_suite.tasks[{task.name}]"
    adapter = get_adapter(task.adapter)

    def read(source: Source, what: str) -> list[Problem]:
        if task.adapter == "arith":  # a problem table the data stage wrote
            return load_problems(source if isinstance(source, str) else source["path"])
        records = read_records(source, key=f"{key}.{what}", columns=task.columns, default_split="test",
                               cache_dir=cache_dir)
        return adapter.problems_from_records(records, split="test")

    problems = read(task.source, "source")
    if task.few_shot_source is not None:
        shots = read(task.few_shot_source, "few_shot_source")[: task.few_shot]
    else:
        shots, problems = problems[: task.few_shot], problems[task.few_shot:]
    if len(shots) < task.few_shot:
        raise DataError(f"{key}: few_shot={task.few_shot} but the few-shot source has {len(shots)} rows")
    problems = problems[: task.limit]
    if not problems:
        raise DataError(f"{key}: no problem left to evaluate (after {task.few_shot} few-shot examples)")
    rename = [replace(p, id=f"suite-{task.name}-{i:06d}") for i, p in enumerate(problems)]
    shot_rows = [replace(p, id=f"suite-{task.name}-shot-{i:06d}") for i, p in enumerate(shots)]
    validate_problems(rename, str(test_path))
    write_parquet(problems_table(rename), test_path, PROBLEMS)
    write_parquet(problems_table(shot_rows), shots_path, PROBLEMS)
    log.info("%s: %d problems, %d few-shot examples -> %s", task.name, len(rename), len(shot_rows), test_path)
    return {"problems": len(rename), "few_shot": len(shot_rows)}


def evaluate_suite(
    model_path: str | Path,
    tasks: Sequence[SuiteTask],
    data_dirs: Mapping[str, str | Path],
    out_dir: str | Path,
    *,
    default_template: str,
    max_new_tokens: int,
    engine: EngineSettings,
    seed: int = 0,
    confidence: float = 0.95,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Greedy-decode every set of ``tasks`` with one policy in one generation call and judge each with its
    adapter. ``data_dirs[name]`` holds the set's ``test.parquet`` and ``shots.parquet``. Writes
    ``out_dir/<name>/predictions.parquet`` (``SAMPLES``) and ``out_dir/metrics.json`` (``{name: metrics}``);
    returns the metrics."""
    t0 = time.monotonic()
    plan: list[tuple[SuiteTask, TaskAdapter, list[Problem], list[str]]] = []
    for task in tasks:
        d = Path(data_dirs[task.name])
        problems = load_problems(d / "test.parquet")
        shots = _load_shots(d / "shots.parquet")
        template = few_shot_template(task.prompt_template or default_template, shots)
        adapter = get_adapter(task.adapter, template, chat_template)
        plan.append((task, adapter, problems, [adapter.format_prompt(p.question) for p in problems]))
    prompts = [x for _, _, _, ps in plan for x in ps]
    settings = SampleSettings(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    result = generate(model_path, prompts, settings, engine, chat_template=chat_template)
    log.info("%s: %d prompts of %d sets, %d tokens in %.1f s (%.0f tokens/s; engine load %.1f s)", result.backend,
             len(prompts), len(plan), result.generated_tokens, result.generate_seconds, tokens_per_second(result),
             result.load_seconds)
    out, metrics, start = Path(out_dir), {}, 0
    for task, adapter, problems, task_prompts in plan:
        part = type(result)(result.completions[start: start + len(problems)], result.backend, result.load_seconds,
                            result.generate_seconds)
        start += len(problems)
        table = samples_table(problems, task_prompts, part, adapter, settings)
        write_parquet(table, out / task.name / "predictions.parquet", SAMPLES)
        acc, judged = prediction_metrics(problems, table, confidence)  # as the evaluate stage writes them
        metrics[task.name] = {**judged, "adapter": task.adapter, "few_shot": task.few_shot}
        log.info("%s: %s", task.name, acc)
    summary = {"model": str(model_path), "backend": result.backend, "max_new_tokens": max_new_tokens,
               "chat_template": chat_template, "wall_seconds": time.monotonic() - t0, "tasks": metrics,
               "order": [t.name for t in tasks]}  # the JSON's keys are sorted; the table keeps the config's order
    write_json_atomic(out / "metrics.json", summary)
    return summary


def _load_shots(path: Path) -> list[Problem]:
    """The few-shot examples of a set (a ``PROBLEMS`` table that may be empty, unlike ``load_problems``)."""
    if not path.exists():
        raise DataError(f"{path}: few-shot table missing (rerun the suite_data rule)")
    return [Problem.from_row(r) for r in read_parquet(path, PROBLEMS).to_pylist()]


def suite_table(metrics_paths: Mapping[str, str | Path], md_path: str | Path, json_path: str | Path) -> dict[str, Any]:
    """One table of every set (rows) and policy (columns) from ``evaluate_suite``'s metrics files
    (``{policy: path}``, in column order): accuracy with its interval and the number of problems."""
    runs = {policy: read_json(p) for policy, p in metrics_paths.items()}
    if not runs:
        raise ConfigError("eval_suite.policies is empty")
    names = next(iter(runs.values()))["order"]
    for policy, r in runs.items():
        if r["order"] != names:
            raise DataError(f"{metrics_paths[policy]}: sets {r['order']} differ from {names}")
    policies = list(runs)
    lines = ["# Evaluation suite", "",
             "Greedy accuracy with its 95% Wilson interval (correct / problems) of each policy on each evaluation set "
             "(config `eval_suite`).", "",
             "| set | adapter | shots | " + " | ".join(f"`{p}`" for p in policies) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in policies) + " |"]
    rows = []
    for name in names:
        first = runs[policies[0]]["tasks"][name]
        cells = []
        for p in policies:
            m = runs[p]["tasks"][name]
            cells.append(f"{100 * m['accuracy']:.1f}% [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}] "
                         f"({m['correct']}/{m['total']})")
        lines.append(f"| {name} | {first['adapter']} | {first['few_shot']} | " + " | ".join(cells) + " |")
        rows.append({"set": name, "adapter": first["adapter"], "few_shot": first["few_shot"],
                     **{p: runs[p]["tasks"][name] for p in policies}})
    table = {"policies": policies, "sets": names, "rows": rows, "order": names}
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    write_json_atomic(json_path, table)
    return table
