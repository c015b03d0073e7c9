"""Stage ``sample``: draw solutions from a policy for a problem table and judge them.

One row per (problem, sample index) in ``rlmec_core.schemas.SAMPLES``. The same function serves RL
sampling (n samples, temperature, top-p) and evaluation (n = 1, greedy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from rlmec_core.io import write_parquet
from rlmec_core.sampling import (
    PROMPT_TOO_LONG,
    EngineSettings,
    GenerationResult,
    SampleSettings,
    generate,
    tokens_per_second,
)
from rlmec_core.schemas import SAMPLES
from rlmec_core.stages.data import draw_problems, load_problems
from rlmec_core.tasks import Problem, TaskAdapter, get_adapter

log = logging.getLogger(__name__)


def samples_table(
    problems: Sequence[Problem],
    prompts: Sequence[str],
    result: GenerationResult,
    adapter: TaskAdapter,
    settings: SampleSettings,
) -> pa.Table:
    """Rows of ``SAMPLES`` for every completion in ``result`` (judged by ``adapter``)."""
    if len(result.completions) != len(problems):
        raise ValueError(f"{len(result.completions)} completion lists for {len(problems)} problems")
    rows: list[dict[str, Any]] = []
    for i, (problem, prompt, comps) in enumerate(zip(problems, prompts, result.completions, strict=True)):
        for k, comp in enumerate(comps):
            verdict = adapter.judge(comp.text, problem.answer)
            rows.append(
                {
                    "sample_id": f"{problem.id}#{k}",
                    "problem_id": problem.id,
                    "sample_index": k,
                    "prompt": prompt,
                    "completion": comp.text,
                    "token_ids": comp.token_ids,
                    "num_tokens": len(comp.token_ids),
                    "finish_reason": comp.finish_reason,
                    "pred_answer": verdict.pred_answer,
                    "gold_answer": problem.answer,
                    "correct": verdict.correct,
                    "backend": result.backend,
                    "temperature": settings.temperature,
                    "top_p": settings.top_p,
                    "seed": settings.seed + i,
                }
            )
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def draw_samples(
    model_path: str | Path,
    problems: Sequence[Problem],
    adapter: TaskAdapter,
    settings: SampleSettings,
    engine: EngineSettings,
) -> tuple[pa.Table, GenerationResult]:
    """Generate and judge; returns the ``SAMPLES`` table and the raw generation result (for timings)."""
    prompts = [adapter.format_prompt(p.question) for p in problems]
    result = generate(model_path, prompts, settings, engine, chat_template=adapter.chat_template)
    log.info(
        "%s: %d prompts x %d samples, %d tokens in %.1f s (%.0f tokens/s; engine load %.1f s)",
        result.backend, len(prompts), settings.n, result.generated_tokens, result.generate_seconds,
        tokens_per_second(result), result.load_seconds,
    )
    return samples_table(problems, prompts, result, adapter, settings), result


def sample_policy(
    model_path: str | Path,
    data_path: str | Path,
    out_path: str | Path,
    *,
    adapter_name: str,
    prompt_template: str | None,
    settings: SampleSettings,
    engine: EngineSettings,
    first: int = 0,
    limit: int | None = None,
    chat_template: bool = False,
    exact: bool = False,
) -> dict[str, Any]:
    """Sample ``settings.n`` solutions for each of the problems ``first .. first + limit`` of
    ``data_path`` (all from ``first`` on when ``limit`` is None) and write them to ``out_path``; ``exact``:
    the split must hold the whole range (a later round's fresh draw)."""
    adapter = get_adapter(adapter_name, prompt_template, chat_template)
    problems = draw_problems(load_problems(data_path), first, limit, data_path, exact=exact)
    table, result = draw_samples(model_path, problems, adapter, settings, engine)
    write_parquet(table, out_path, SAMPLES)
    correct = table.column("correct").to_pylist()
    if result.skipped:
        log.warning("%d of %d prompts did not fit the model's context with max_new_tokens=%d: their %d rows have "
                    "finish_reason %r and no tokens", result.skipped, len(problems), settings.max_new_tokens,
                    result.skipped * settings.n, PROMPT_TOO_LONG)
    return {
        "samples": table.num_rows,
        "problems": len(problems),
        "prompt_too_long": result.skipped,
        "sample_accuracy": sum(correct) / max(len(correct), 1),
        "backend": result.backend,
        "tokens_per_s": tokens_per_second(result),
    }
