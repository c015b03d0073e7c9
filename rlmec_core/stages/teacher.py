"""Stage ``teacher`` (RLMEC.md stage 2): minimal-edit rewrites of the policy's wrong solutions.

Input: the policy's samples (``SAMPLES``) and the problems they answer (``PROBLEMS``). Output:
``rewrites.parquet`` (``REWRITES``), one row per distinct prediction of a problem:

- a correct prediction passes through (``error_step = -1``, ``rewrite = prediction``, no request);
- an incorrect one goes through the two-step protocol (``rlmec_core.teacher.protocol``) with the
  configured backend; the rewrite's answer is checked by the task adapter, its token edit distance to
  the prediction measured with the policy's tokenizer, and rows above ``max_edit_ratio`` are filtered.

Identical predictions of a problem are sent once. With ``teacher.max_predictions`` only a seeded subset
of the incorrect predictions is sent (API budget). Every reply is cached on disk as it arrives, so a
rerun after a crash or a kill sends only what was not answered yet and writes the same rows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from rlmec_core.edits import align
from rlmec_core.errors import DataError
from rlmec_core.io import read_parquet, write_json_atomic, write_parquet
from rlmec_core.sampling import PROMPT_TOO_LONG, load_tokenizer
from rlmec_core.schemas import REWRITES, SAMPLES
from rlmec_core.stages.data import load_problems
from rlmec_core.tasks import Problem, TaskAdapter, get_adapter
from rlmec_core.teacher.backends import CallSpec, Teacher, make_teacher
from rlmec_core.teacher.protocol import Prompts, complete_messages, error_step_messages, parse_continuation, parse_error_step
from rlmec_core.teacher.runner import ResponseCache, RetryPolicy, TeacherClient

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One distinct prediction of one problem."""

    problem: Problem
    prediction: str
    correct: bool
    sample_ids: list[str] = field(default_factory=list)


def distinct_predictions(samples: pa.Table, problems: Mapping[str, Problem], where: str) -> list[Item]:
    """Group samples by (problem, exact prediction text), in order of first appearance."""
    items: dict[tuple[str, str], Item] = {}
    seen: set[str] = set()
    for row in samples.select(["sample_id", "problem_id", "completion", "correct", "finish_reason"]).to_pylist():
        if row["sample_id"] in seen:
            raise DataError(f"{where}: duplicate sample_id {row['sample_id']!r}")
        seen.add(row["sample_id"])
        if row["finish_reason"] == PROMPT_TOO_LONG:
            continue
        problem = problems.get(row["problem_id"])
        if problem is None:
            raise ValueError(f"{where}: sample {row['sample_id']} refers to unknown problem {row['problem_id']!r}")
        key = (row["problem_id"], row["completion"])
        if key not in items:
            items[key] = Item(problem, row["completion"], bool(row["correct"]))
        items[key].sample_ids.append(row["sample_id"])
    return list(items.values())


def rewrite_row(item: Item, teacher: Teacher | None, **values: Any) -> dict[str, Any]:
    """A ``REWRITES`` row for ``item`` (``teacher`` None: a correct prediction passed through)."""
    row = {
        "sample_id": item.sample_ids[0],
        "sample_ids": item.sample_ids,
        "problem_id": item.problem.id,
        "question": item.problem.question,
        "reference_solution": item.problem.reference_solution,
        "gold_answer": item.problem.answer,
        "prediction": item.prediction,
        "prediction_correct": item.correct,
        "error_step": None,
        "rewrite": None,
        "rewrite_correct": None,
        "edit_distance": None,
        "edit_ratio": None,
        "teacher_backend": teacher.backend if teacher else "passthrough",
        "teacher_model": teacher.model if teacher else "",
        "error_step_reply": None,
        "rewrite_reply": None,
        "status": "ok",
        "detail": None,
        "attempts": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }
    row.update(values)
    return row


async def rewrite_item(
    item: Item,
    client: TeacherClient,
    adapter: TaskAdapter,
    prompts: Prompts,
    gen: Mapping[str, Any],
) -> dict[str, Any]:
    """The two-step protocol for one incorrect prediction; returns its row (edit distance not yet set)."""
    problem = item.problem
    pred_steps = adapter.split_steps(item.prediction)
    ref_steps = adapter.split_steps(problem.reference_solution)
    context = {"question": problem.question, "reference": ref_steps, "prediction": pred_steps}
    usage = {"attempts": 0, "prompt_tokens": 0, "completion_tokens": 0}

    def account(outcome) -> None:
        usage["attempts"] += outcome.attempts
        if outcome.reply is not None:
            usage["prompt_tokens"] += outcome.reply.prompt_tokens
            usage["completion_tokens"] += outcome.reply.completion_tokens

    teacher = client.teacher
    step_reply = None
    if pred_steps:
        first = await client.call(
            CallSpec("error_step", error_step_messages(prompts, problem.question, ref_steps, pred_steps),
                     gen["max_tokens_error_step"], gen["temperature"], context)
        )
        account(first)
        if first.reply is None:
            return rewrite_row(item, teacher, status="api_error", detail=f"first-error request: {first.error}", **usage)
        step_reply = first.reply.text
        k = parse_error_step(step_reply, len(pred_steps))
        if k is None:
            truncated = " (reply truncated)" if first.reply.finish_reason == "length" else ""
            return rewrite_row(item, teacher, status="parse_error", error_step_reply=step_reply,
                        detail=f"no valid step label in the first-error reply{truncated}", **usage)
        if k < 0:
            return rewrite_row(item, teacher, status="parse_error", error_step_reply=step_reply,
                        detail="the teacher judged an incorrect prediction correct", **usage)
    else:
        k = 0  # an empty prediction is wrong from its first step: nothing to ask
    kept = pred_steps[:k]
    second = await client.call(
        CallSpec("complete", complete_messages(prompts, problem.question, ref_steps, pred_steps, kept),
                 gen["max_tokens_complete"], gen["temperature"], {**context, "kept": kept})
    )
    account(second)
    if second.reply is None:
        return rewrite_row(item, teacher, status="api_error", error_step=k, error_step_reply=step_reply,
                    detail=f"completion request: {second.error}", **usage)
    continuation = parse_continuation(second.reply.text, kept)
    if not continuation:
        return rewrite_row(item, teacher, status="parse_error", error_step=k, error_step_reply=step_reply,
                    rewrite_reply=second.reply.text, detail="empty continuation", **usage)
    rewrite = adapter.join_rewrite(item.prediction, k, continuation)  # the kept text stays byte-identical
    verdict = adapter.judge(rewrite, problem.answer)
    status, detail = "ok", None
    if not verdict.correct:
        status = "wrong_answer"
        detail = f"rewrite answers {verdict.pred_answer!r}, gold is {problem.answer!r}"
        if second.reply.finish_reason == "length":
            detail += " (reply truncated)"
    return rewrite_row(item, teacher, status=status, detail=detail, error_step=k, rewrite=rewrite,
                rewrite_correct=verdict.correct, error_step_reply=step_reply, rewrite_reply=second.reply.text, **usage)


async def _run_all(items: Sequence[Item], client: TeacherClient, adapter: TaskAdapter, prompts: Prompts,
                   gen: Mapping[str, Any]) -> list[dict[str, Any]]:
    bar = tqdm(total=len(items), desc=f"teacher[{client.teacher.backend}]", mininterval=2.0, dynamic_ncols=True)
    counts: dict[str, int] = {}

    async def one(item: Item) -> dict[str, Any]:
        row = await rewrite_item(item, client, adapter, prompts, gen)
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        s = client.stats
        bar.set_postfix(counts, sent=s.requests_sent, cached=s.cache_hits, retries=s.retries,
                        tokens=s.prompt_tokens + s.completion_tokens, refresh=False)
        bar.update(1)
        return row

    try:
        return list(await asyncio.gather(*(one(item) for item in items)))
    finally:
        bar.close()
        await client.teacher.aclose()


def measure_edits(rows: list[dict[str, Any]], tokenizer, adapter: TaskAdapter, max_edit_ratio: float | None) -> None:
    """Fill ``edit_distance``/``edit_ratio`` (token level) and filter rows above ``max_edit_ratio``."""
    texts = sorted({t for r in rows if r["rewrite"] is not None for t in (r["prediction"], r["rewrite"])})
    ids = dict(zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True)) if texts else {}
    for r in rows:
        if r["rewrite"] is None:
            continue
        a = align(ids[r["prediction"]], ids[r["rewrite"]])
        r["edit_distance"], r["edit_ratio"] = a.distance, a.edit_ratio
        if r["status"] == "ok" and max_edit_ratio is not None and a.edit_ratio > max_edit_ratio:
            r["status"] = "filtered"
            r["detail"] = f"edit ratio {a.edit_ratio:.3f} > teacher.max_edit_ratio {max_edit_ratio}"


def replace_rest_ratio(rows: list[dict[str, Any]], tokenizer, adapter: TaskAdapter) -> float | None:
    """Mean token edit ratio of the crude rewrite (kept steps + the reference from the error step on)
    over the ``ok`` rewrites of incorrect predictions: the yardstick of minimality."""
    pairs = []
    for r in rows:
        if r["status"] != "ok" or r["prediction_correct"]:
            continue
        k = r["error_step"]
        crude = adapter.join_rewrite(r["prediction"], k, adapter.split_steps(r["reference_solution"])[k:])
        pairs.append((r["prediction"], crude))
    if not pairs:
        return None
    enc = tokenizer([t for pair in pairs for t in pair], add_special_tokens=False)["input_ids"]
    ratios = [align(enc[2 * i], enc[2 * i + 1]).edit_ratio for i in range(len(pairs))]
    return sum(ratios) / len(ratios)


def run_teacher(
    samples_path: str | Path,
    problems_path: str | Path,
    tokenizer_path: str | Path,
    out_path: str | Path,
    metrics_path: str | Path,
    *,
    adapter_name: str,
    teacher_cfg: Mapping[str, Any],
    seed: int,
    cache_path: str | Path,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Run the stage (see the module docstring); returns the metrics written to ``metrics_path``."""
    t0 = time.monotonic()
    adapter = get_adapter(adapter_name)
    samples = read_parquet(samples_path, SAMPLES)
    problems = {p.id: p for p in load_problems(problems_path)}
    items = distinct_predictions(samples, problems, str(samples_path))
    correct = [it for it in items if it.correct]
    incorrect = [it for it in items if not it.correct]
    budget = teacher_cfg.get("max_predictions")
    if budget is not None and len(incorrect) > budget:
        chosen = set(random.Random(seed).sample(range(len(incorrect)), budget))
        incorrect = [it for i, it in enumerate(incorrect) if i in chosen]
    log.info("%d samples -> %d distinct predictions (%d correct, %d incorrect sent to the teacher)",
             samples.num_rows, len(items), len(correct), len(incorrect))

    teacher = make_teacher(teacher_cfg, adapter_name)
    prompts = Prompts.from_config(teacher_cfg.get("prompts"))
    retry = RetryPolicy(**teacher_cfg["retry"])
    cache = ResponseCache(cache_path) if teacher.cacheable else None
    if cache is not None:
        log.info("response cache %s: %d replies on disk", cache_path, len(cache))
    client = TeacherClient(teacher, max_in_flight=teacher_cfg["max_in_flight"], retry=retry, cache=cache, seed=seed)
    gen = {k: teacher_cfg[k] for k in ("max_tokens_error_step", "max_tokens_complete", "temperature")}
    t_requests = time.monotonic()
    try:
        sent_rows = asyncio.run(_run_all(incorrect, client, adapter, prompts, gen))
    finally:
        request_seconds = time.monotonic() - t_requests
        if cache is not None:
            cache.close()

    by_key = {(r["problem_id"], r["prediction"]): r for r in sent_rows}
    rows = []
    for it in items:  # sampling order, whatever order the replies came in
        if it.correct:
            rows.append(rewrite_row(it, None, error_step=-1, rewrite=it.prediction, rewrite_correct=True))
        elif (it.problem.id, it.prediction) in by_key:
            rows.append(by_key[(it.problem.id, it.prediction)])
    tokenizer = load_tokenizer(tokenizer_path, trust_remote_code=trust_remote_code)
    measure_edits(rows, tokenizer, adapter, teacher_cfg.get("max_edit_ratio"))
    write_parquet(pa.Table.from_pylist(rows, schema=REWRITES), out_path, REWRITES)

    statuses = {s: 0 for s in ("ok", "wrong_answer", "parse_error", "api_error", "filtered")}
    for r in sent_rows:
        statuses[r["status"]] += 1
    ok_ratios = [r["edit_ratio"] for r in sent_rows if r["status"] == "ok"]
    s = client.stats
    metrics = {
        "samples": samples.num_rows,
        "distinct_predictions": len(items),
        "passthrough_correct": len(correct),
        "sent_to_teacher": len(incorrect),
        "statuses": statuses,
        "ok_fraction": statuses["ok"] / len(incorrect) if incorrect else None,
        "mean_edit_ratio": sum(ok_ratios) / len(ok_ratios) if ok_ratios else None,
        "mean_edit_ratio_replace_rest": replace_rest_ratio(sent_rows, tokenizer, adapter),
        "teacher_backend": teacher.backend,
        "teacher_model": teacher.model,
        "requests_sent": s.requests_sent,
        "cache_hits": s.cache_hits,
        "retries": s.retries,
        "errors": s.errors,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "request_seconds": request_seconds,
        "wall_seconds": time.monotonic() - t0,
    }
    write_json_atomic(metrics_path, metrics)
    log.info("teacher: %s; mean edit ratio %s (replace-the-rest: %s); %d requests sent, %d cached",
             statuses, metrics["mean_edit_ratio"], metrics["mean_edit_ratio_replace_rest"], s.requests_sent, s.cache_hits)
    return metrics
