"""Stages of the generative reward model (RLMEC.md stages 3 and 4).

- ``build_grm_data``: the two GRM tasks from the teacher's rewrites, with a held-out validation part.
- ``train_grm``: supervised fine-tuning (loss on the target only) from the bootstrap policy or any HF
  model, optionally with LoRA (merged before saving); resumable from checkpoints.
- ``evaluate_grm``: quality on the held-out part: first-error-step accuracy; rewrites (two-step
  protocol) against the teacher's; and the GRM as a reward model, where a token of the prediction whose
  probability under the rewrite prompt is below 0.5 counts as flagged and the tokens the teacher's
  rewrite changed are the truth.
- ``grm_rewrite``: the trained GRM performs the two-step protocol on fresh samples, giving rows of the
  same schema as the teacher stage (backend ``grm``), so labelling can take rewrites from either.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from rlmec_core.edits import align
from rlmec_core.errors import DataError
from rlmec_core.grm.data import build_examples
from rlmec_core.grm.prompts import GRMPrompts
from rlmec_core.io import read_parquet, write_json_atomic, write_parquet
from rlmec_core.sampling import (
    PROMPT_TOO_LONG,
    EngineSettings,
    SampleSettings,
    check_model_weights,
    generate,
    load_tokenizer,
    model_context,
    resolve_score_backend,
)
from rlmec_core.schemas import GRM_DATA, REWRITES, SAMPLES
from rlmec_core.scoring import score_model
from rlmec_core.stages.data import load_problems
from rlmec_core.stages.policy import train_settings, train_with_published_log, validation_settings, write_model_dir
from rlmec_core.stages.teacher import Item, distinct_predictions, measure_edits, rewrite_row
from rlmec_core.tasks import TaskAdapter, get_adapter
from rlmec_core.teacher.protocol import parse_continuation, parse_error_step
from rlmec_core.train.loop import TrainResult
from rlmec_core.train.sft import SFTCollator, encode_sft_examples, heldout_loss_fn, sft_loss

log = logging.getLogger(__name__)


# -- stage 3a: data ------------------------------------------------------------------------------------
def build_grm_data(rewrites_path: str | Path, out_path: str | Path, stats_path: str | Path, *,
                   adapter_name: str, grm_cfg: Mapping[str, Any], seed: int) -> dict[str, Any]:
    rewrites = read_parquet(rewrites_path, REWRITES)
    table = build_examples(
        rewrites, get_adapter(adapter_name), GRMPrompts.from_config(grm_cfg.get("prompts")),
        validation_fraction=grm_cfg["validation_fraction"], balance_correct=grm_cfg["balance_correct"],
        seed=seed, where=str(rewrites_path),
    )
    write_parquet(table, out_path, GRM_DATA)
    rows = table.select(["split", "kind", "prediction_correct"]).to_pylist()
    stats: dict[str, Any] = {"rewrites_rows": rewrites.num_rows, "examples": len(rows)}
    for split in ("train", "validation"):
        part = [r for r in rows if r["split"] == split]
        stats[split] = {
            "error_step": sum(r["kind"] == "error_step" for r in part),
            "rewrite_of_wrong": sum(r["kind"] == "rewrite" and not r["prediction_correct"] for r in part),
            "rewrite_of_correct": sum(r["kind"] == "rewrite" and r["prediction_correct"] for r in part),
        }
    write_json_atomic(stats_path, stats)
    log.info("GRM data: %s", stats)
    return stats


# -- stage 3b: training --------------------------------------------------------------------------------
def _apply_lora(model: torch.nn.Module, lora: Mapping[str, Any]) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d on %s: %d trainable parameters", lora["r"], lora["target_modules"], trainable)
    return model


def train_grm(data_path: str | Path, init_model: str | Path, out_dir: str | Path, *, grm_cfg: Mapping[str, Any],
              seed: int, checkpoint_dir: str | Path, metrics_path: str | Path,
              trust_remote_code: bool = False) -> dict[str, Any]:
    """SFT of the GRM on the ``train`` part of ``data_path``; writes an HF model directory.

    With ``grm_cfg["validation"]`` enabled, the loss on the held-out part (``split == "validation"``, both
    tasks) is measured every few optimizer steps and at the end (``val_loss`` in the log) and the saved GRM
    is the one with the lowest held-out loss (``select: best``) or the last (``select: last``).
    """
    from transformers import AutoModelForCausalLM

    table = read_parquet(data_path, GRM_DATA)
    all_rows = table.select(["split", "prompt", "target"]).to_pylist()
    rows = [r for r in all_rows if r["split"] == "train"]
    held_out = [r for r in all_rows if r["split"] == "validation"]
    if not rows:
        raise DataError(f"{data_path}: no training examples ({table.num_rows} rows, all held out)")
    tokenizer = load_tokenizer(init_model, trust_remote_code=trust_remote_code)
    settings = train_settings(grm_cfg["train"], seed)
    dtype = torch.bfloat16 if settings.mixed_precision == "bf16" else torch.float32
    check_model_weights(init_model)
    model = AutoModelForCausalLM.from_pretrained(str(init_model), dtype=dtype, trust_remote_code=trust_remote_code,
                                                 use_safetensors=True)
    max_length = grm_cfg["max_length"]
    ctx = getattr(model.config, "max_position_embeddings", None)
    if ctx is not None and max_length > ctx:
        raise DataError(f"grm.max_length={max_length} exceeds the context of {init_model} ({ctx} positions)")
    examples, report = encode_sft_examples(tokenizer, [r["prompt"] for r in rows], [r["target"] for r in rows],
                                           max_length=max_length)
    if report.skipped_too_long:
        log.warning("skipped %d of %d GRM examples longer than grm.max_length=%d tokens",
                    report.skipped_too_long, len(rows), max_length)
    if not examples:
        raise DataError(f"{data_path}: no GRM example fits in grm.max_length={max_length} tokens")
    lora = grm_cfg.get("lora") or {}
    if lora.get("enabled"):
        model = _apply_lora(model, lora)
    card: dict[str, Any] = {"stage": "grm", "init_model": str(init_model), "train_examples": len(examples),
                            "skipped_too_long": report.skipped_too_long, "train": asdict(settings),
                            "lora": dict(lora) if lora.get("enabled") else None,
                            "prompts": asdict(GRMPrompts.from_config(grm_cfg.get("prompts")))}
    validation, evaluate_fn = _heldout_validation(grm_cfg.get("validation"), held_out, tokenizer, max_length,
                                                  data_path, card)

    def save(unwrapped: torch.nn.Module, state_dict: dict[str, torch.Tensor], result: TrainResult) -> None:
        card.update(asdict(result))
        card["tokens_per_s"] = result.tokens_seen / max(result.wall_seconds, 1e-9)
        if hasattr(unwrapped, "merge_and_unload"):  # LoRA: fold the adapters into plain weights
            unwrapped = unwrapped.merge_and_unload()
            state_dict = unwrapped.state_dict()
        write_model_dir(out_dir, unwrapped, tokenizer, card, state_dict)

    loss_fn = functools.partial(sft_loss, normalization=settings.loss_normalization)
    result = train_with_published_log(model, examples, SFTCollator(tokenizer.pad_token_id), loss_fn, settings,
                                      checkpoint_dir=checkpoint_dir, metrics_path=metrics_path, description="grm-sft",
                                      save_fn=save, validation=validation, evaluate_fn=evaluate_fn)
    if validation is not None:
        log.info("saved the GRM of step %s (%s): held-out loss %.4f, the lowest of %d evaluations",
                 result.saved_step, validation.select, result.best_metric, result.evaluations)
    log.info("GRM saved to %s: %d steps, %.0f s, %.0f tokens/s", out_dir, result.steps, result.wall_seconds,
             result.tokens_seen / max(result.wall_seconds, 1e-9))  # (the card is filled on the main process only)
    return card


def _heldout_validation(val_cfg: Mapping[str, Any] | None, held_out: Sequence[Mapping[str, Any]], tokenizer,
                        max_length: int, data_path: str | Path, card: dict[str, Any]):
    """``(ValidationSettings, evaluate_fn)`` of config ``grm.validation`` (the held-out loss, minimised), or
    ``(None, None)`` when it is disabled or there is no held-out part (``grm.validation_fraction: 0``)."""
    settings = validation_settings(val_cfg)
    if settings is None:
        return None, None
    examples, report = (encode_sft_examples(tokenizer, [r["prompt"] for r in held_out], [r["target"] for r in held_out],
                                            max_length=max_length) if held_out else ([], None))
    if not examples:
        log.warning("grm.validation is enabled but %s has no held-out example that fits grm.max_length: the GRM "
                    "is trained without it and the last weights are kept", data_path)
        return None, None
    settings = replace(settings, metric="val_loss", mode="min")
    card["validation"] = {**asdict(settings), "held_out_examples": len(examples),
                          "skipped_too_long": report.skipped_too_long if report is not None else 0}
    log.info("validation: held-out loss on %d examples of %s every %s; keep the %s weights", len(examples), data_path,
             f"{settings.every_steps} steps" if settings.every_steps else f"{settings.every_epochs:g} epochs",
             settings.select)
    return settings, heldout_loss_fn(examples, tokenizer.pad_token_id, batch_size=val_cfg.get("batch_size", 32))


# -- the two-step protocol with the GRM (stage 4) -------------------------------------------------------
@dataclass(frozen=True)
class GRMRewrite:
    error_step: int | None  # None: no valid label; -1: the GRM judged the prediction correct
    error_step_reply: str
    rewrite: str | None
    rewrite_reply: str | None
    too_long: bool = False  # a prompt of either step did not fit the GRM's context: skipped, not generated


def grm_two_step(model_dir: str | Path, cases: Sequence[tuple[str, str, str]], adapter: TaskAdapter,
                 prompts: GRMPrompts, engine: EngineSettings, gen: Mapping[str, Any]) -> list[GRMRewrite]:
    """First error step, then the continuation after the kept steps, for each ``(question, reference
    solution, prediction)`` (texts, cut into steps by ``adapter``); greedy decoding, all prompts of a step in
    one batch. A rewrite is ``adapter.join_rewrite(prediction, k, continuation)``: the kept part is a slice
    of the prediction's own text, and the GRM continues after that very text."""
    if not cases:
        return []
    split = [(q, adapter.split_steps(ref), adapter.split_steps(pred)) for q, ref, pred in cases]
    first = generate(model_dir, [prompts.error_step_prompt(q, ref, pred) for q, ref, pred in split],
                     SampleSettings(n=1, temperature=0.0, max_new_tokens=gen["max_new_tokens_error_step"]), engine)
    steps = [parse_error_step(c[0].text, len(pred)) for c, (_, _, pred) in zip(first.completions, split, strict=True)]
    too_long = [c[0].finish_reason == PROMPT_TOO_LONG for c in first.completions]
    todo = [i for i, k in enumerate(steps) if k is not None and k >= 0 and not too_long[i]]
    # the prediction's own text up to the error step, as in the training targets
    prefixes = [prompts.rewrite_prompt(*split[i]) + adapter.kept_prefix(cases[i][2], steps[i]) for i in todo]
    second = generate(model_dir, prefixes, SampleSettings(n=1, temperature=0.0,
                      max_new_tokens=gen["max_new_tokens_rewrite"]), engine) if todo else None
    out = [GRMRewrite(k, c[0].text, None, None, t) for k, c, t in zip(steps, first.completions, too_long, strict=True)]
    for j, i in enumerate(todo):
        kept = list(split[i][2][: steps[i]])
        if second.completions[j][0].finish_reason == PROMPT_TOO_LONG:
            out[i] = GRMRewrite(steps[i], out[i].error_step_reply, None, None, True)
            continue
        reply = second.completions[j][0].text
        cont = parse_continuation(reply, kept)
        rewrite = adapter.join_rewrite(cases[i][2], steps[i], cont) if cont else None
        out[i] = GRMRewrite(steps[i], out[i].error_step_reply, rewrite, reply)
    return out


def grm_rewrite(model_dir: str | Path, samples_path: str | Path, problems_path: str | Path, out_path: str | Path,
                metrics_path: str | Path, *, adapter_name: str, grm_cfg: Mapping[str, Any], engine: EngineSettings,
                max_edit_ratio: float | None = None) -> dict[str, Any]:
    """Stage 4: rewrites of every distinct wrong prediction in ``samples_path`` by the GRM (``REWRITES``)."""
    t0 = time.monotonic()
    adapter = get_adapter(adapter_name)
    prompts = GRMPrompts.from_config(grm_cfg.get("prompts"))
    samples = read_parquet(samples_path, SAMPLES)
    problems = {p.id: p for p in load_problems(problems_path)}
    items = distinct_predictions(samples, problems, str(samples_path))
    wrong = [it for it in items if not it.correct]
    cases = [(it.problem.question, it.problem.reference_solution, it.prediction) for it in wrong]
    results = grm_two_step(model_dir, cases, adapter, prompts, engine, grm_cfg["generation"])
    by_key = {}
    source = _GRMSource(str(model_dir))
    for it, res in zip(wrong, results, strict=True):
        by_key[(it.problem.id, it.prediction)] = _grm_row(it, res, adapter, source)
    rows = [rewrite_row(it, None, error_step=-1, rewrite=it.prediction, rewrite_correct=True) if it.correct
            else by_key[(it.problem.id, it.prediction)] for it in items]
    measure_edits(rows, load_tokenizer(model_dir, trust_remote_code=engine.trust_remote_code), adapter, max_edit_ratio)
    write_parquet(pa.Table.from_pylist(rows, schema=REWRITES), out_path, REWRITES)
    statuses = {s: 0 for s in ("ok", "wrong_answer", "parse_error", "api_error", "filtered")}
    for r in rows:
        if not r["prediction_correct"]:
            statuses[r["status"]] += 1
    ok = [r["edit_ratio"] for r in rows if not r["prediction_correct"] and r["status"] == "ok"]
    metrics = {"samples": samples.num_rows, "distinct_predictions": len(items), "wrong": len(wrong),
               "statuses": statuses, "prompt_too_long": sum(res.too_long for res in results),
               "ok_fraction": statuses["ok"] / len(wrong) if wrong else None,
               "mean_edit_ratio": float(np.mean(ok)) if ok else None, "wall_seconds": time.monotonic() - t0}
    write_json_atomic(metrics_path, metrics)
    log.info("GRM rewrites: %s", metrics)
    return metrics


@dataclass(frozen=True)
class _GRMSource:
    """Stands in for a teacher in the rows the GRM writes."""

    model: str
    backend: str = "grm"


def _grm_row(item: Item, res: GRMRewrite, adapter: TaskAdapter, source: _GRMSource) -> dict[str, Any]:
    common = {"error_step_reply": res.error_step_reply, "attempts": 1}
    if res.too_long:
        return rewrite_row(item, source, status="filtered", detail="prompt longer than the GRM's context: skipped",
                           **common)
    if res.error_step is None:
        return rewrite_row(item, source, status="parse_error", detail="no valid step label in the GRM's reply", **common)
    if res.error_step < 0:
        return rewrite_row(item, source, status="parse_error", detail="the GRM judged an incorrect prediction correct",
                           **common)
    if res.rewrite is None:
        return rewrite_row(item, source, status="parse_error", error_step=res.error_step, rewrite_reply=res.rewrite_reply,
                           detail="empty continuation", **common)
    verdict = adapter.judge(res.rewrite, item.problem.answer)
    return rewrite_row(item, source, status="ok" if verdict.correct else "wrong_answer",
                       detail=None if verdict.correct else f"rewrite answers {verdict.pred_answer!r}, gold is {item.problem.answer!r}",
                       error_step=res.error_step, rewrite=res.rewrite, rewrite_correct=verdict.correct,
                       rewrite_reply=res.rewrite_reply, **common)


# -- quality (stage 3c) ---------------------------------------------------------------------------------
def token_flags(original_ids: Sequence[int], rewrite_ids: Sequence[int]) -> list[bool]:
    """Per token of the original: True if the minimum-edit alignment deletes or substitutes it."""
    return [op != "equal" for op in align(original_ids, rewrite_ids).original_ops]


def evaluate_grm(model_dir: str | Path, data_path: str | Path, out_path: str | Path, *, adapter_name: str,
                 grm_cfg: Mapping[str, Any], engine: EngineSettings, limit: int | None = None) -> dict[str, Any]:
    """GRM quality on the validation part of ``data_path`` (see the module docstring).

    Besides the flag metrics at ``p_t < 0.5``, ``calibration`` holds the share of tokens the teacher's rewrite
    edits per bucket of ``p_t`` (``rlmec_core.calibration.calibration_table``, ``DEFAULT_BINS`` buckets): over
    the held-out wrong predictions (``wrong_predictions``) and over all scored ones, where a correct
    prediction's tokens count as unedited (``all_predictions``).
    """
    from rlmec_core.calibration import DEFAULT_BINS, calibration_table

    t0 = time.monotonic()
    adapter = get_adapter(adapter_name)
    prompts = GRMPrompts.from_config(grm_cfg.get("prompts"))
    table = read_parquet(data_path, GRM_DATA)
    val = [r for r in table.to_pylist() if r["split"] == "validation" and r["kind"] == "rewrite"]
    if not val:
        raise DataError(f"{data_path}: no validation examples (grm.validation_fraction is 0?)")
    wrong = [r for r in val if not r["prediction_correct"]][:limit]  # limit: per kind of prediction
    right = [r for r in val if r["prediction_correct"]][:limit]

    # Examples that do not fit the GRM's context (prompt + prediction for the token scores; either prompt of
    # the two-step rewrite) are skipped and counted, not scored as misses. Each row is tokenized once here;
    # the scores below reuse its ids.
    tokenizer = load_tokenizer(model_dir, trust_remote_code=engine.trust_remote_code)
    ctx = model_context(Path(model_dir), engine)

    def encoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not rows:
            return []
        p_ids = tokenizer([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]
        y_ids = tokenizer([r["prediction"] for r in rows], add_special_tokens=False)["input_ids"]
        return [{**r, "prompt_ids": p, "prediction_ids": y} for r, p, y in zip(rows, p_ids, y_ids, strict=True)
                if ctx is None or len(p) + len(y) <= ctx]

    n_before = len(wrong) + len(right)
    wrong, right = encoded(wrong), encoded(right)

    # Two-step rewrites of the wrong predictions.
    cases = [(r["question"], r["reference_solution"], r["prediction"]) for r in wrong]
    results = grm_two_step(model_dir, cases, adapter, prompts, engine, grm_cfg["generation"])
    kept = [i for i, res in enumerate(results) if not res.too_long]
    wrong, results = [wrong[i] for i in kept], [results[i] for i in kept]
    skipped = n_before - len(wrong) - len(right)
    if skipped:
        log.warning("GRM quality: %d held-out examples longer than the GRM's context (%s positions) skipped",
                    skipped, ctx)
    step_hits = sum(res.error_step == r["error_step"] for res, r in zip(results, wrong, strict=True))
    exact = sum(res.rewrite is not None and res.rewrite == r["rewrite"] for res, r in zip(results, wrong, strict=True))
    answer_ok, ratios = 0, []
    for res, r in zip(results, wrong, strict=True):
        if res.rewrite is None:
            continue
        answer_ok += adapter.judge(res.rewrite, r["gold_answer"]).correct
        z = tokenizer(res.rewrite, add_special_tokens=False)["input_ids"]
        ratios.append(align(r["prediction_ids"], z).edit_ratio)

    # The GRM as a reward model: teacher-forced probability of each prediction token (the label stage's backend).
    scored = [*wrong, *right]
    prompt_ids = [r["prompt_ids"] for r in scored]
    y_ids = [r["prediction_ids"] for r in scored]
    score_backend = resolve_score_backend(engine)
    logps, _ = score_model(model_dir, prompt_ids, y_ids, engine=engine, backend=score_backend,
                           pad_token_id=tokenizer.pad_token_id, progress="grm-score")
    tp = fp = fn = 0
    first_line_hits = first_line_truth = 0
    wrong_truth: list[list[bool]] = []  # per wrong row: its tokens the teacher's rewrite edits
    for r, ids, lp in zip(wrong, y_ids[: len(wrong)], logps[: len(wrong)], strict=True):
        truth = token_flags(ids, tokenizer(r["rewrite"], add_special_tokens=False)["input_ids"])
        wrong_truth.append(truth)
        flagged = (np.exp(lp) < 0.5).tolist()
        tp += sum(t and f for t, f in zip(truth, flagged, strict=True))
        fp += sum(f and not t for t, f in zip(truth, flagged, strict=True))
        fn += sum(t and not f for t, f in zip(truth, flagged, strict=True))
        newlines = np.array([tokenizer.decode([i]).count("\n") for i in ids], dtype=int)
        line_of_token = np.cumsum(newlines) - newlines  # a token's own newline ends its line
        in_first = (line_of_token == r["error_step"]).tolist()
        first_line_truth += sum(t and a for t, a in zip(truth, in_first, strict=True))
        first_line_hits += sum(t and f and a for t, f, a in zip(truth, flagged, in_first, strict=True))
    right_lp = logps[len(wrong):]
    right_tokens = sum(len(lp) for lp in right_lp)
    right_flagged = sum(int((np.exp(lp) < 0.5).sum()) for lp in right_lp)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0

    def probs_of(lps: Sequence[np.ndarray]) -> np.ndarray:  # [tokens] p_t of the rows, concatenated
        flat = [np.asarray(lp, dtype=np.float64) for lp in lps]
        return np.exp(np.concatenate(flat)).clip(0.0, 1.0) if flat else np.zeros(0)

    wrong_p = probs_of(logps[: len(wrong)])
    wrong_edited = np.array([t for truth in wrong_truth for t in truth], dtype=bool)
    calibration = {
        "bins": DEFAULT_BINS,
        "wrong_predictions": calibration_table(wrong_p, wrong_edited, DEFAULT_BINS),
        "all_predictions": calibration_table(np.concatenate([wrong_p, probs_of(right_lp)]),
                                             np.concatenate([wrong_edited, np.zeros(right_tokens, dtype=bool)]),
                                             DEFAULT_BINS),
    }
    metrics = {
        "validation_wrong": len(wrong),
        "validation_correct": len(right),
        "skipped_too_long": skipped,
        "error_step_accuracy": step_hits / len(wrong) if wrong else None,
        "rewrite_exact_match": exact / len(wrong) if wrong else None,
        "rewrite_answer_correct": answer_ok / len(wrong) if wrong else None,
        "rewrite_mean_edit_ratio": float(np.mean(ratios)) if ratios else None,
        "token_flag_precision": precision,
        "token_flag_recall": recall,
        "token_flag_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "correct_tokens_flagged": right_flagged / right_tokens if right_tokens else None,
        # Diagnostic: recall on the first wrong step's own tokens. After it, the GRM reads the prediction's
        # (wrong) values as its own context and tends to continue from them, which the truth counts as misses.
        "token_flag_recall_first_error_step": first_line_hits / first_line_truth if first_line_truth else None,
        "flag_threshold": 0.5,
        "calibration": calibration,
        "score_backend": score_backend,
        "wall_seconds": time.monotonic() - t0,
    }
    write_json_atomic(out_path, metrics)
    log.info("GRM quality: %s", metrics)
    return metrics

