"""Stage ``label`` (RLMEC.md stage 5): token-level rewards, old log-probs and imitation targets.

For every kept sample ``y`` of the RL draw (incorrect ones whose rewrite ``z`` is ``ok``; correct ones
deduplicated per problem after whitespace/punctuation normalisation):

- ``p_t``: the GRM's probability of ``y_t`` when ``y`` is teacher-forced as its answer to the rewrite
  prompt for ``(x, s, y)``: vLLM prompt log-probabilities (continuous batching) when the engine is vLLM,
  else length-bucketed transformers forward passes (``engine.score_backend``; ``rlmec_core.scoring``);
- ``r_t = token_rewards(p, correct, pos_clip, neg_clip)``;
- ``l_t = log pi_old(y_t | x, y_<t)`` from a forward pass of the sampling policy through
  ``token_logprobs`` (the function the RL stage trains with, so the first ratio is exactly 1);
- the imitation target ``z`` (``y`` for a correct sample) and its weights from the minimum-edit alignment.

``y`` is the token sequence the sampler produced (``samples.parquet``'s ``token_ids``) plus EOS when the
sample stopped by itself, so the RL update sees exactly what was sampled, stop included. The GRM must
share the policy's tokenizer (the paper fine-tunes it from the same model family); a different
vocabulary is refused with a clear error rather than silently mis-scored.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rlmec_core.edits import align, imitation_weights
from rlmec_core.errors import DataError
from rlmec_core.grm.prompts import GRMPrompts
from rlmec_core.io import read_parquet, write_json_atomic, write_parquet
from rlmec_core.rewards import step_reward_sums, token_rewards
from rlmec_core.sampling import EngineSettings, load_tokenizer, resolve_score_backend
from rlmec_core.schemas import REWRITES, SAMPLES, TOKEN_REWARDS
from rlmec_core.scoring import score_model
from rlmec_core.tasks import get_adapter

log = logging.getLogger(__name__)

_PUNCT_OR_SPACE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalise_solution(text: str) -> str:
    """The key under which correct solutions of one problem count as duplicates: NFKC, lower case,
    whitespace and punctuation removed (``"12 + 3 = 15."`` and ``"12+3 = 15"`` are the same)."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).lower())


@dataclass(frozen=True)
class LabelSettings:
    """Config ``label``."""

    pos_clip: tuple[float, float] = (0.0, 0.5)
    neg_clip: tuple[float, float] = (-0.1, 0.0)
    changed_weight: float = 1.0
    kept_weight: float = 0.5
    batch_tokens: int = 16384
    max_batch: int | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LabelSettings:
        return cls(pos_clip=tuple(cfg["pos_clip"]), neg_clip=tuple(cfg["neg_clip"]),
                   changed_weight=float(cfg["changed_weight"]), kept_weight=float(cfg["kept_weight"]),
                   batch_tokens=int(cfg["batch_tokens"]), max_batch=cfg.get("max_batch"))


def select_rows(rewrites: pa.Table, where: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of a rewrites table that get labels, and the counts of what was left out.

    Kept: incorrect predictions with status ``ok`` (a verified rewrite), and correct predictions, one per
    problem and normalised text (:func:`normalise_solution`), in file order.
    """
    kept, seen = [], set()
    counts = {"rewrite_rows": rewrites.num_rows, "correct_duplicates": 0, "wrong_without_rewrite": 0}
    for row in rewrites.to_pylist():
        if row["prediction_correct"]:
            key = (row["problem_id"], normalise_solution(row["prediction"]))
            if key in seen:
                counts["correct_duplicates"] += 1
                continue
            seen.add(key)
            kept.append(row)
        elif row["status"] == "ok" and row["rewrite"] is not None:
            kept.append(row)
        else:
            counts["wrong_without_rewrite"] += 1
    if rewrites.num_rows and not kept:
        raise DataError(f"{where}: none of {rewrites.num_rows} rewrite rows is usable (no correct sample and no "
                        "verified rewrite)")
    return kept, counts


def sampled_target(token_ids: Sequence[int], finish_reason: str, eos: int) -> list[int]:
    """``y`` as the RL update sees a sample: its sampled token ids plus EOS when it stopped by itself
    (``finish_reason == "stop"``); ``[eos]`` for a sample with no token at all."""
    return list(token_ids) + ([eos] if finish_reason == "stop" else []) or [eos]


def grm_scoring_prompt(prompts: GRMPrompts, adapter, question: str, reference_solution: str, prediction: str) -> str:
    """The prompt under which the GRM scores ``y``: its rewrite prompt for ``(x, s, y)``."""
    return prompts.rewrite_prompt(question, adapter.split_steps(reference_solution), adapter.split_steps(prediction))


def _same_vocabulary(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


def label_samples(
    grm_dir: str | Path,
    policy_dir: str | Path,
    samples_path: str | Path,
    rewrites_path: str | Path,
    out_path: str | Path,
    metrics_path: str | Path,
    *,
    adapter_name: str,
    grm_cfg: Mapping[str, Any],
    label_cfg: Mapping[str, Any],
    engine: EngineSettings,
    trust_remote_code: bool = False,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Write ``token_rewards.parquet`` (``TOKEN_REWARDS``) for the samples of ``rewrites_path``.

    ``samples_path`` is the draw the rewrites were made from (its prompts and sampled token ids);
    ``rewrites_path`` holds the rewrites (from the GRM, or a teacher for the ablation). The policy's prompt
    ids are encoded exactly as the sampler encoded them (``chat_template``: config ``task.chat_template``);
    the GRM's scoring prompt is always plain text.
    """
    t0 = time.monotonic()
    settings = LabelSettings.from_config(label_cfg)
    adapter = get_adapter(adapter_name, chat_template=chat_template)
    prompts = GRMPrompts.from_config(grm_cfg.get("prompts"))
    rewrites = read_parquet(rewrites_path, REWRITES)
    sample_rows = (read_parquet(samples_path, SAMPLES)
                   .select(["sample_id", "prompt", "completion", "token_ids", "finish_reason"]).to_pylist())
    samples = {r["sample_id"]: r for r in sample_rows}
    if len(samples) != len(sample_rows):
        seen: set[str] = set()
        dup = next(r["sample_id"] for r in sample_rows if r["sample_id"] in seen or seen.add(r["sample_id"]))
        raise DataError(f"{samples_path}: duplicate sample_id {dup!r}")
    rows, counts = select_rows(rewrites, str(rewrites_path))

    tok = load_tokenizer(policy_dir, trust_remote_code=trust_remote_code)
    grm_tok = load_tokenizer(grm_dir, trust_remote_code=trust_remote_code)
    if not _same_vocabulary(tok, grm_tok):
        raise DataError(f"{grm_dir}: the GRM's tokenizer differs from the policy's ({policy_dir}); token rewards "
                        "need one vocabulary (fine-tune the GRM from the policy's model family)")
    eos = tok.eos_token_id

    ys, zs = [], []
    for row in rows:
        sample = samples.get(row["sample_id"])
        if sample is None:
            raise DataError(f"{rewrites_path}: sample {row['sample_id']!r} is not in {samples_path} "
                            "(rewrites of another draw?)")
        if sample["completion"] != row["prediction"]:
            raise DataError(f"{rewrites_path}: the prediction of sample {row['sample_id']!r} differs from its text "
                            f"in {samples_path}")
        y = sampled_target(sample["token_ids"], sample["finish_reason"], eos)
        ys.append(y)
        if row["prediction_correct"]:
            zs.append(y)
        else:
            zs.append(tok(row["rewrite"], add_special_tokens=False)["input_ids"] + [eos])
    policy_prompts = adapter.encode_prompts(tok, [samples[r["sample_id"]]["prompt"] for r in rows])
    grm_prompts = tok([grm_scoring_prompt(prompts, adapter, r["question"], r["reference_solution"], r["prediction"])
                       for r in rows], add_special_tokens=True)["input_ids"]

    # Samples that do not fit a model's context are skipped and counted (never truncated, never a crash).
    from transformers import AutoConfig

    def ctx_of(path: str | Path) -> int:
        cfg = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        return int(getattr(cfg, "max_position_embeddings", 1 << 30))

    grm_ctx, pol_ctx = ctx_of(grm_dir), ctx_of(policy_dir)
    fits = [len(g) + len(y) <= grm_ctx and len(p) + max(len(y), len(z)) <= pol_ctx
            for g, p, y, z in zip(grm_prompts, policy_prompts, ys, zs, strict=True)]
    counts["too_long"] = fits.count(False)
    if counts["too_long"]:
        log.warning("skipped %d samples longer than a model's context (GRM %d, policy %d tokens)",
                    counts["too_long"], grm_ctx, pol_ctx)
    keep = [i for i, ok in enumerate(fits) if ok]
    rows = [rows[i] for i in keep]
    ys, zs = [ys[i] for i in keep], [zs[i] for i in keep]
    policy_prompts, grm_prompts = [policy_prompts[i] for i in keep], [grm_prompts[i] for i in keep]

    # p_t through vLLM's prompt log-probs when the engine is vLLM (engine.score_backend); the old log-probs
    # always through transformers' token_logprobs, the RL stage's own function (first ratio exactly 1).
    engine = dataclasses.replace(engine, trust_remote_code=trust_remote_code)
    grm_backend = resolve_score_backend(engine)
    scoring = dict(engine=engine, pad_token_id=tok.pad_token_id, batch_tokens=settings.batch_tokens,
                   max_batch=settings.max_batch)
    grm_lp, grm_s = score_model(grm_dir, grm_prompts, ys, backend=grm_backend, progress="label-grm", **scoring)
    old_lp, pol_s = score_model(policy_dir, policy_prompts, ys, backend="hf", progress="label-policy", **scoring)

    pieces = {i: tok.decode([i]) for i in {t for seq in (*ys, *zs) for t in seq}}
    out_rows = []
    for row, y, z, pp, g_lp, o_lp in zip(rows, ys, zs, policy_prompts, grm_lp, old_lp, strict=True):
        probs = np.exp(g_lp.astype(np.float64)).clip(0.0, 1.0)
        correct = bool(row["prediction_correct"])
        rewards = token_rewards(probs, correct, settings.pos_clip, settings.neg_clip)
        tokens = [pieces[t] for t in y]
        al = align(y, z)
        out_rows.append({
            "sample_id": row["sample_id"],
            "problem_id": row["problem_id"],
            "question": row["question"],
            "reference_solution": row["reference_solution"],
            "gold_answer": row["gold_answer"],
            "prompt": samples[row["sample_id"]]["prompt"],
            "prompt_ids": pp,
            "prediction": row["prediction"],
            "correct": correct,
            "error_step": row["error_step"] if not correct else -1,
            "rewrite": row["prediction"] if correct else row["rewrite"],
            "rewrite_source": row["teacher_backend"],
            "token_ids": y,
            "tokens": tokens,
            "grm_probs": probs.astype(np.float32),
            "rewards": rewards.astype(np.float32),
            "old_logprobs": o_lp,
            "step_rewards": step_reward_sums(tokens, rewards),
            "imitation_ids": z,
            "imitation_tokens": [pieces[t] for t in z],
            "imitation_weights": imitation_weights(y, z, settings.changed_weight, settings.kept_weight),
            "edit_distance": al.distance,
            "edit_ratio": al.edit_ratio,
        })
    table = pa.Table.from_pylist(out_rows, schema=TOKEN_REWARDS)
    write_parquet(table, out_path, TOKEN_REWARDS)

    n_tokens = sum(len(y) for y in ys)
    wrong = [r for r in out_rows if not r["correct"]]
    right = [r for r in out_rows if r["correct"]]
    neg = sum(int((r["rewards"] < 0).sum()) for r in wrong)
    # where the RL term's signal lies: |r_t| summed over correct vs wrong samples (the loss weighs tokens by r_t)
    mass = {name: sum(float(np.abs(r["rewards"]).sum()) for r in rows) for name, rows in (("correct", right), ("wrong", wrong))}
    metrics = {
        **counts,
        "labelled": len(out_rows),
        "labelled_correct": len(right),
        "labelled_wrong": len(wrong),
        "reward_tokens": n_tokens,
        "penalised_token_fraction_wrong": neg / max(sum(len(r["token_ids"]) for r in wrong), 1),
        "mean_reward_correct": float(np.mean(np.concatenate([r["rewards"] for r in right]))) if right else None,
        "mean_reward_wrong": float(np.mean(np.concatenate([r["rewards"] for r in wrong]))) if wrong else None,
        "mean_edit_ratio_wrong": float(np.mean([r["edit_ratio"] for r in wrong])) if wrong else None,
        "reward_mass_correct": mass["correct"],
        "reward_mass_wrong": mass["wrong"],
        "reward_mass_share_correct": mass["correct"] / (mass["correct"] + mass["wrong"])
        if mass["correct"] + mass["wrong"] > 0 else None,
        "grm_score_backend": grm_backend,
        "grm_score_seconds": grm_s,
        "policy_score_seconds": pol_s,
        # forward-pass throughput: prompt + solution tokens of both passes per second
        "tokens_per_s": (2 * n_tokens + sum(map(len, grm_prompts)) + sum(map(len, policy_prompts)))
        / max(grm_s + pol_s, 1e-9),
        "rewrites": str(rewrites_path),
        "wall_seconds": time.monotonic() - t0,
    }
    write_json_atomic(metrics_path, metrics)
    log.info("labels: %s", metrics)
    return metrics
