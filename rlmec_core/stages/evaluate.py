"""Stage ``evaluate``: greedy-decode a split with a policy, judge every answer, and write per-problem
predictions (``SAMPLES`` schema) plus a metrics JSON with accuracy and its confidence interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from rlmec_core.io import write_json_atomic, write_parquet
from rlmec_core.metrics import Accuracy, accuracy
from rlmec_core.sampling import PROMPT_TOO_LONG, EngineSettings, SampleSettings, generate_with_model, tokens_per_second
from rlmec_core.schemas import SAMPLES
from rlmec_core.stages.data import load_problems
from rlmec_core.stages.sample import draw_samples
from rlmec_core.tasks import Problem, TaskAdapter, get_adapter
from rlmec_core.tracking import log_once

log = logging.getLogger(__name__)


def evaluate_policy(
    model_path: str | Path,
    data_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
    *,
    adapter_name: str,
    prompt_template: str | None,
    max_new_tokens: int,
    engine: EngineSettings,
    seed: int = 0,
    confidence: float = 0.95,
    limit: int | None = None,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model_path`` on the problems of ``data_path``; returns the metrics written."""
    t0 = time.monotonic()
    adapter = get_adapter(adapter_name, prompt_template, chat_template)
    problems = load_problems(data_path)[:limit]
    settings = SampleSettings(n=1, temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    table, result = draw_samples(model_path, problems, adapter, settings, engine)
    write_parquet(table, predictions_path, SAMPLES)
    acc, judged = prediction_metrics(problems, table, confidence)
    if judged["prompt_too_long"]:
        log.warning("%d of %d prompts did not fit the model's context with max_new_tokens=%d: counted wrong",
                    judged["prompt_too_long"], table.num_rows, max_new_tokens)
    metrics = {
        **judged,
        "model": str(model_path),
        "data": str(data_path),
        "adapter": adapter_name,
        "backend": result.backend,
        "max_new_tokens": max_new_tokens,
        "generate_seconds": result.generate_seconds,
        "engine_load_seconds": result.load_seconds,
        "tokens_per_s": tokens_per_second(result),
        "wall_seconds": time.monotonic() - t0,
    }
    write_json_atomic(metrics_path, metrics)
    log_once(None, metrics)  # the accuracy to the stage's trackers, when config tracking names any
    log.info("accuracy on %s: %s", data_path, acc)
    return metrics


def prediction_metrics(problems: Sequence[Problem], table: pa.Table,
                       confidence: float = 0.95) -> tuple[Accuracy, dict[str, Any]]:
    """What a table of greedy predictions (``SAMPLES``, one row per problem, in ``problems``' order) says:
    the accuracy with its interval, and the metrics dict ``{accuracy fields, no_answer, truncated,
    prompt_too_long, mean_tokens, by_attribute (when the problems carry attributes)}`` that the ``evaluate``
    stage and the evaluation suite write."""
    correct = table.column("correct").to_pylist()
    reasons = table.column("finish_reason").to_pylist()
    acc = accuracy(correct, confidence)
    metrics: dict[str, Any] = {
        **acc.as_dict(),
        "no_answer": table.column("pred_answer").null_count,
        "truncated": sum(r == "length" for r in reasons),
        "prompt_too_long": sum(r == PROMPT_TOO_LONG for r in reasons),
        "mean_tokens": sum(table.column("num_tokens").to_pylist()) / max(table.num_rows, 1),
    }
    by_attr = accuracy_by_attribute(problems, correct, confidence)
    if by_attr:
        metrics["by_attribute"] = by_attr
    return acc, metrics


def accuracy_by_attribute(problems: Sequence[Problem], correct: Sequence[bool],
                          confidence: float = 0.95) -> dict[str, dict[str, dict[str, Any]]]:
    """Accuracy per value of every attribute the problems carry (``Problem.attributes``: MATH's ``level``
    and ``type``, MMLU's ``subject``): ``{key: {value: accuracy dict}}``, values sorted; a problem without
    the key is left out of that key's groups. Identifiers (``source_id``) are not grouped. ``{}`` when no
    problem has attributes."""
    groups: dict[str, dict[str, list[bool]]] = {}
    for p, ok in zip(problems, correct, strict=True):
        for key, value in p.attributes:
            if key != "source_id":
                groups.setdefault(key, {}).setdefault(value, []).append(bool(ok))
    return {key: {v: accuracy(vals[v], confidence).as_dict() for v in sorted(vals)} for key, vals in sorted(groups.items())}


def greedy_accuracy_fn(tokenizer, problems: Sequence[Problem], adapter: TaskAdapter, *, max_new_tokens: int,
                       batch_size: int = 128, prefix: str = "val") -> Callable[[Any], dict[str, float]]:
    """An ``evaluate_fn`` for the training loop: greedy accuracy of the model being trained on ``problems``.

    Decodes with transformers ``generate`` on the model as it is (no reload, no vLLM engine: a few seconds
    for a few hundred problems with the demo's model) and judges with the adapter, exactly as the
    ``evaluate`` stage does; a prompt too long for the context counts as wrong. Returns
    ``{f"{prefix}_accuracy", f"{prefix}_correct", f"{prefix}_total"}``.
    """
    if not problems:
        raise ValueError("in-training validation needs at least one problem")
    prompt_ids = adapter.encode_prompts(tokenizer, [adapter.format_prompt(p.question) for p in problems])
    settings = SampleSettings(n=1, temperature=0.0, max_new_tokens=max_new_tokens)

    def evaluate(model) -> dict[str, float]:
        completions, _ = generate_with_model(model, tokenizer, prompt_ids, settings, batch_size=batch_size,
                                             progress=False)
        correct = sum(adapter.is_correct(c[0].text, p.answer) for p, c in zip(problems, completions, strict=True))
        return {f"{prefix}_accuracy": correct / len(problems), f"{prefix}_correct": float(correct),
                f"{prefix}_total": float(len(problems))}

    return evaluate
