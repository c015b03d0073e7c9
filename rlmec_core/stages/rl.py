"""Stage ``rl`` (RLMEC.md stage 6): the policy update with ``rlmec_loss`` on ``token_rewards.parquet``.

Starts from the sampling policy (``pi_old``; the labels' old log-probs come from it), trains with the
token-level clipped objective plus the imitation regulariser, logs per-step loss parts, clip fraction,
approximate KL to the old policy and gradient norm to a JSONL, resumes from checkpoints kept outside
the declared output, and writes an HF ``save_pretrained`` directory with a model card.

``sft_gold_update`` is the strongest simple baseline, through the same machinery: more SFT of the same
starting policy on the gold reference solutions of the problems the RL draw covers.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from rlmec_core.errors import DataError
from rlmec_core.io import read_parquet
from rlmec_core.losses import RATIO_FORMS
from rlmec_core.methods import get_method, method_examples
from rlmec_core.prompting import encode_prompts
from rlmec_core.sampling import check_model_weights, load_tokenizer
from rlmec_core.schemas import SAMPLES, TOKEN_REWARDS
from rlmec_core.stages.data import draw_problems, load_problems
from rlmec_core.stages.policy import (MODEL_CARD, train_settings, train_with_published_log, validation_settings,
                                     write_model_dir)
from rlmec_core.tasks import Problem, TaskAdapter, get_adapter
from rlmec_core.train.dpo import DPOCollator, dpo_batch_loss, pairs_from_samples, with_reference
from rlmec_core.train.loop import EvaluateFn, TrainResult, ValidationSettings
from rlmec_core.train.rl import RLCollator, RLExample, count_rl_tokens, rl_batch_loss
from rlmec_core.train.sft import SFTCollator, encode_sft_examples, sft_loss

log = logging.getLogger(__name__)


def load_rl_examples(path: str | Path) -> list[RLExample]:
    """The labelled samples of a ``token_rewards.parquet`` as training examples (file order)."""
    return load_labelled(path)[0]


def load_labelled(path: str | Path) -> tuple[list[RLExample], list[bool]]:
    """Training examples and the correctness flag of each labelled sample (file order)."""
    table = read_parquet(path, TOKEN_REWARDS)
    cols = ["sample_id", "prompt_ids", "token_ids", "rewards", "old_logprobs", "imitation_ids", "imitation_weights"]
    out = []
    for i, r in enumerate(table.select(cols).to_pylist()):
        values = r["rewards"] + r["old_logprobs"] + r["imitation_weights"]
        if any(v is None or v != v or v in (float("inf"), float("-inf")) for v in values):
            raise DataError(f"{path}: row {i} (sample {r['sample_id']!r}) has a NaN, infinite or null value in "
                            "rewards, old_logprobs or imitation_weights")
        if not r["imitation_ids"]:
            raise DataError(f"{path}: row {i} (sample {r['sample_id']!r}) has an empty imitation target")
        try:
            out.append(RLExample(r["prompt_ids"], r["token_ids"], r["rewards"], r["old_logprobs"], r["imitation_ids"],
                                 r["imitation_weights"]))
        except ValueError as exc:
            raise DataError(f"{path}: row {i} (sample {r['sample_id']!r}): {exc}") from None
    if not out:
        raise DataError(f"{path}: no labelled samples to train on")
    return out, [bool(c) for c in table.column("correct").to_pylist()]


def rl_objective(rl_cfg: Mapping[str, Any]):
    """The batch loss of config ``rl`` (``rl_batch_loss`` with its clip, imitation coefficient and ratio form);
    raises ``DataError`` naming ``rl.ratio_form`` when that is unknown."""
    if rl_cfg["ratio_form"] not in RATIO_FORMS:
        raise DataError(f"rl.ratio_form={rl_cfg['ratio_form']!r}: expected one of {sorted(RATIO_FORMS)}")
    return functools.partial(rl_batch_loss, clip_eps=rl_cfg["clip_eps"], imitation_coef=rl_cfg["imitation_coef"],
                             ratio_form=rl_cfg["ratio_form"])


def rl_update(
    labels_path: str | Path,
    policy_dir: str | Path,
    out_dir: str | Path,
    *,
    rl_cfg: Mapping[str, Any],
    seed: int,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    trust_remote_code: bool = False,
    method: str = "rlmec",
    instance_rewards: tuple[float, float] = (1.0, -1.0),
    dpo_beta: float = 0.1,
    samples_path: str | Path | None = None,
    chat_template: bool = False,
    validation_path: str | Path | None = None,
    adapter_name: str | None = None,
    prompt_template: str | None = None,
) -> dict[str, Any]:
    """Train ``policy_dir`` on ``labels_path`` with ``rlmec_loss``; write the updated policy to ``out_dir``.

    ``method`` (``rlmec_core.methods``) turns the labels into the examples of a baseline or ablation
    (same samples, same loss machinery); ``rlmec`` uses them as they are. ``dpo`` pairs the correct and
    wrong samples of ``samples_path`` (the draw the labels were made from) instead, their prompts encoded as
    the sampler encoded them (``chat_template``: config ``task.chat_template``).

    In-training validation (``rl_cfg["validation"]``, ``rl_cfg["select"]``; :func:`policy_validation`): greedy
    accuracy on the problems of ``validation_path`` (prompts of the task adapter ``adapter_name`` with
    ``prompt_template``) of the starting weights and every few optimizer steps; the saved policy is the best
    evaluated one with ``select: best``. The log's first and last evaluations give the update check
    (``rlmec_core.preflight.update_check_from_log``), logged as a warning when the update made the policy worse.
    """
    rl_loss = rl_objective(rl_cfg)
    examples, correct = load_labelled(labels_path)
    spec = get_method(method)
    check_model_weights(policy_dir)
    tokenizer = load_tokenizer(policy_dir, trust_remote_code=trust_remote_code)
    dataset: list[Any] = examples
    if method == "dpo":
        if samples_path is None:
            raise DataError("method dpo needs the samples the labels were made from (samples_path)")
        dataset = pairs_from_samples(read_parquet(samples_path, SAMPLES).to_pylist(), tokenizer,
                                     chat_template=chat_template)
        if not dataset:
            raise DataError(f"{samples_path}: no problem has both a correct and a wrong sample: no DPO pair")
    elif method != "rlmec":
        try:
            dataset = examples = method_examples(spec, examples, correct, instance_rewards=tuple(instance_rewards))
        except ValueError as exc:
            raise DataError(f"{labels_path}: {exc}") from None
    settings = train_settings(rl_cfg["train"], seed)
    model = _load_policy(policy_dir, settings, trust_remote_code)
    vocab = model.get_output_embeddings().weight.shape[0]
    top = max(max(e.prompt_ids + e.token_ids + e.imitation_ids) for e in examples)
    if top >= vocab:
        raise DataError(f"{labels_path}: token id {top} is outside the vocabulary of {policy_dir} ({vocab}); "
                        "were the labels made with another policy?")
    card = _card(policy_dir, method, len(dataset), settings, labels=str(labels_path),
                 **{k: rl_cfg[k] for k in ("clip_eps", "imitation_coef", "ratio_form")})
    if method == "dpo":
        dataset = with_reference(dataset, model, tokenizer.pad_token_id)
        card["dpo_beta"] = dpo_beta
        card["samples"] = str(samples_path)
        collate: Any = DPOCollator(tokenizer.pad_token_id)
        loss_fn = functools.partial(dpo_batch_loss, beta=dpo_beta)
    else:
        collate = RLCollator(tokenizer.pad_token_id)
        loss_fn = rl_loss
    log.info("RLMEC update of %s on %d samples (%s ratio, eps %.2f, lambda %.2f): %s", policy_dir, len(examples),
             rl_cfg["ratio_form"], rl_cfg["clip_eps"], rl_cfg["imitation_coef"], settings)
    validation = policy_validation(rl_cfg, tokenizer, validation_path, adapter_name=adapter_name,
                                   prompt_template=prompt_template, chat_template=chat_template, card=card)
    return _train_and_save(model, dataset, collate, loss_fn, settings, card=card, tokenizer=tokenizer, out_dir=out_dir,
                           checkpoint_dir=checkpoint_dir, metrics_path=metrics_path, count_tokens=count_rl_tokens,
                           description=method, validation=validation)


def policy_validation(rl_cfg: Mapping[str, Any], tokenizer, validation_path: str | Path | None, *,
                      adapter_name: str | None, prompt_template: str | None, chat_template: bool,
                      card: dict[str, Any] | None = None) -> tuple[ValidationSettings, EvaluateFn] | None:
    """The in-training validation of a policy update, from config ``rl.validation`` and ``rl.select``.

    Returns ``(settings, evaluate_fn)`` for ``rlmec_core.train.loop.train`` (greedy accuracy on the first
    ``limit`` problems of ``validation_path``, ``rlmec_core.stages.evaluate.greedy_accuracy_fn``), or None
    when ``rl.validation`` is absent or disabled. ``card``: the model card, which records the settings.
    Raises ``DataError`` when validation is enabled without a validation split or task adapter.
    """
    val_cfg = rl_cfg.get("validation")
    settings = validation_settings({**val_cfg, "select": rl_cfg.get("select", "best")} if val_cfg else None)
    if settings is None:
        return None
    if validation_path is None or adapter_name is None:
        raise DataError("rl.validation is enabled but the stage was given no validation split or task adapter "
                        "(set rl.validation.enabled: false to train without it)")
    from rlmec_core.stages.evaluate import greedy_accuracy_fn

    problems = load_problems(validation_path)[: val_cfg.get("limit")]
    adapter = get_adapter(adapter_name, prompt_template, chat_template)
    evaluate_fn = greedy_accuracy_fn(tokenizer, problems, adapter, max_new_tokens=val_cfg["max_new_tokens"],
                                     batch_size=val_cfg["batch_size"])
    every = f"{settings.every_steps} steps" if settings.every_steps else f"{settings.every_epochs:g} epochs"
    log.info("validation: %d problems of %s every %s%s and at the end; keep the %s weights", len(problems),
             validation_path, every, " (and the starting weights)" if settings.at_start else "", settings.select)
    if card is not None:
        card["validation"] = {**asdict(settings), "data": str(validation_path), "problems": len(problems)}
    return settings, evaluate_fn


def correct_sample_rows(samples_path: str | Path) -> list[dict[str, Any]]:
    """The samples rejection-sampling fine-tuning keeps: the correct ones of ``samples_path``, one per problem
    and normalised text (``rlmec_core.stages.label.normalise_solution``), in file order: the same selection
    the label stage makes of a draw's correct samples."""
    from rlmec_core.stages.label import normalise_solution

    cols = ["sample_id", "problem_id", "prompt", "completion", "token_ids", "finish_reason", "correct"]
    kept, seen = [], set()
    for row in read_parquet(samples_path, SAMPLES).select(cols).to_pylist():
        key = (row["problem_id"], normalise_solution(row["completion"]))
        if row["correct"] and key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def rft_examples(rows: Sequence[Mapping[str, Any]], tokenizer, model: torch.nn.Module, *, chat_template: bool,
                 batch_tokens: int = 16384, where: str | Path = "samples") -> list[RLExample]:
    """The ``rft`` examples of correct sample rows (``SAMPLES`` columns; :func:`correct_sample_rows`).

    Per row: prompt ids = the prompt encoded as the sampler encoded it; ``y`` = the sampled token ids + EOS
    when the sample stopped by itself (``[EOS]`` for an empty one); ``r_t = 0``; the old log-probs
    ``log pi(y_t | x, y_<t)`` of ``model`` from ``score_targets`` (the label stage's function); the
    imitation target ``y`` with weight 1 on every token. Rows whose prompt + ``y`` exceed the model's context
    are skipped and counted in a warning; none fitting raises ``DataError`` naming ``where``.
    """
    from accelerate import PartialState

    from rlmec_core.scoring import score_targets
    from rlmec_core.stages.label import sampled_target

    eos = tokenizer.eos_token_id
    prompts = encode_prompts(tokenizer, [r["prompt"] for r in rows], chat_template=chat_template)
    ys = [sampled_target(r["token_ids"], r["finish_reason"], eos) for r in rows]
    ctx = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    fits = [len(p) + len(y) <= ctx for p, y in zip(prompts, ys, strict=True)]
    if not any(fits):
        raise DataError(f"{where}: no correct sample fits in the policy's context of {ctx} tokens")
    if not all(fits):
        log.warning("skipped %d correct samples longer than the policy's context (%d tokens)", fits.count(False), ctx)
    prompts = [p for p, ok in zip(prompts, fits, strict=True) if ok]
    ys = [y for y, ok in zip(ys, fits, strict=True) if ok]
    model.to(PartialState().device).eval()  # this process's device (accelerate places it again for training)
    old = score_targets(model, prompts, ys, pad_token_id=tokenizer.pad_token_id, batch_tokens=batch_tokens,
                        progress="rft-old-logprobs")
    examples = [RLExample(p, y, [0.0] * len(y), [float(v) for v in lp], y, [1.0] * len(y))
                for p, y, lp in zip(prompts, ys, old, strict=True)]
    return method_examples(get_method("rft"), examples, [True] * len(examples))


def rft_update(
    samples_path: str | Path,
    policy_dir: str | Path,
    out_dir: str | Path,
    *,
    rl_cfg: Mapping[str, Any],
    seed: int,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    trust_remote_code: bool = False,
    chat_template: bool = False,
    batch_tokens: int = 16384,
    validation_path: str | Path | None = None,
    adapter_name: str | None = None,
    prompt_template: str | None = None,
) -> dict[str, Any]:
    """One round of iterated rejection-sampling fine-tuning (expert iteration) straight from a draw.

    ``samples_path`` holds ``policy_dir``'s own samples of the round's problems; the correct ones
    (:func:`correct_sample_rows`) become the examples of the ``rft`` method (``rlmec_core.methods``:
    imitation of ``y`` with weight 1, no RL term) with ``y`` = the sampled token ids + EOS when the sample
    stopped by itself, the prompt encoded as the sampler encoded it, and the old log-probs from a forward
    pass of ``policy_dir`` (as the label stage computes them), trained with ``rl_cfg`` like ``rl_update``.
    The examples equal those ``rl_update(method="rft")`` builds from the label stage's table of the same
    draw; this path needs no GRM, so every round of the baseline costs sampling and training only.
    In-training validation as in ``rl_update``.
    """
    rl_loss = rl_objective(rl_cfg)
    rows = correct_sample_rows(samples_path)
    if not rows:
        raise DataError(f"{samples_path}: no correct sample to fine-tune on (rft keeps correct samples only)")
    check_model_weights(policy_dir)
    tokenizer = load_tokenizer(policy_dir, trust_remote_code=trust_remote_code)
    settings = train_settings(rl_cfg["train"], seed)
    model = _load_policy(policy_dir, settings, trust_remote_code)
    examples = rft_examples(rows, tokenizer, model, chat_template=chat_template, batch_tokens=batch_tokens,
                            where=samples_path)
    card = _card(policy_dir, "rft", len(examples), settings, samples=str(samples_path),
                 **{k: rl_cfg[k] for k in ("clip_eps", "imitation_coef", "ratio_form")})
    log.info("rft round from %s: %d correct samples of %s: %s", policy_dir, len(examples), samples_path, settings)
    validation = policy_validation(rl_cfg, tokenizer, validation_path, adapter_name=adapter_name,
                                   prompt_template=prompt_template, chat_template=chat_template, card=card)
    return _train_and_save(model, examples, RLCollator(tokenizer.pad_token_id), rl_loss, settings, card=card,
                           tokenizer=tokenizer, out_dir=out_dir, checkpoint_dir=checkpoint_dir,
                           metrics_path=metrics_path, count_tokens=count_rl_tokens, description="rft",
                           validation=validation)


def sft_gold_update(
    problems_path: str | Path,
    policy_dir: str | Path,
    out_dir: str | Path,
    *,
    draw: Mapping[str, Any],
    adapter_name: str,
    prompt_template: str | None,
    train_cfg: Mapping[str, Any],
    seed: int,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    trust_remote_code: bool = False,
    chat_template: bool = False,
    match_labels: str | Path | None = None,
    validation_cfg: Mapping[str, Any] | None = None,
    validation_path: str | Path | None = None,
) -> dict[str, Any]:
    """The ``sft_gold`` baseline: continue SFT of ``policy_dir`` on the reference solutions of the problems
    ``draw["first"] .. draw["first"] + draw["problems"]`` of ``problems_path`` (the RL draw's problems), with
    the optimizer settings ``train_cfg`` (``rl.train`` with the method's learning rate), one example per
    problem: prompt -> gold solution + EOS, the loss on the solution's tokens only.

    ``match_labels``: the label stage's ``metrics.json`` of the RL update this run is compared with; the run
    then takes exactly that update's optimizer steps (``train.epochs`` over its ``labelled`` samples, the gold
    solutions cycled), so both spend the same optimizer budget.

    ``validation_cfg``: ``{"validation": rl.validation, "select": rl.select}``, the in-training validation of
    ``rl_update`` on ``validation_path`` (None: none).

    A gain of RLMEC that this also gives is "more supervised training on gold data", not the method's.
    """
    first, count = int(draw.get("first", 0)), draw.get("problems")
    problems = draw_problems(load_problems(problems_path), first, count, problems_path)
    check_model_weights(policy_dir)
    tokenizer = load_tokenizer(policy_dir, trust_remote_code=trust_remote_code)
    settings = train_settings(train_cfg, seed)
    if match_labels is not None:
        labelled = json.loads(Path(match_labels).read_text()).get("labelled")
        if not isinstance(labelled, int) or labelled < 1:
            raise DataError(f"{match_labels}: no positive 'labelled' count to match the RL update's steps")
        settings = replace(settings, schedule_examples=labelled)
    model = _load_policy(policy_dir, settings, trust_remote_code)
    max_length = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    examples, report = gold_sft_examples(problems, get_adapter(adapter_name, prompt_template, chat_template), tokenizer,
                                         max_length=max_length)
    if not examples:
        raise DataError(f"{problems_path}: no gold solution of the rl draw fits in {max_length} tokens")
    if report.skipped_too_long:
        log.warning("skipped %d of %d gold solutions longer than %d tokens", report.skipped_too_long, len(problems),
                    max_length)
    card = _card(policy_dir, "sft_gold", len(examples), settings, problems=str(problems_path),
                 draw={"first": first, "problems": len(problems)}, skipped_too_long=report.skipped_too_long,
                 matched_labels=None if match_labels is None else str(match_labels))
    log.info("sft_gold: SFT of %s on the gold solutions of %d problems (%s rows %d..%d): %s", policy_dir,
             len(examples), problems_path, first, first + len(problems) - 1, settings)
    validation = policy_validation(validation_cfg or {}, tokenizer, validation_path, adapter_name=adapter_name,
                                   prompt_template=prompt_template, chat_template=chat_template, card=card)
    return _train_and_save(model, examples, SFTCollator(tokenizer.pad_token_id),
                           functools.partial(sft_loss, normalization=settings.loss_normalization), settings, card=card,
                           tokenizer=tokenizer, out_dir=out_dir, checkpoint_dir=checkpoint_dir,
                           metrics_path=metrics_path, count_tokens=None, description="sft_gold",
                           validation=validation)


def gold_sft_examples(problems: Sequence[Problem], adapter: TaskAdapter, tokenizer, *, max_length: int):
    """The SFT examples of ``sft_gold``: per problem, its prompt (as the policy is sampled with) -> its gold
    reference solution + EOS, in the problems' order. Returns ``(examples, EncodeReport)``; solutions longer
    than ``max_length`` tokens are skipped and counted."""
    return encode_sft_examples(tokenizer, [adapter.format_prompt(p.question) for p in problems],
                               [p.reference_solution for p in problems], max_length=max_length,
                               chat_template=adapter.chat_template)


def _load_policy(policy_dir: str | Path, settings, trust_remote_code: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if settings.mixed_precision == "bf16" else torch.float32
    return AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=dtype, trust_remote_code=trust_remote_code,
                                                use_safetensors=True)


def _card(policy_dir: str | Path, method: str, n_examples: int, settings, **extra: Any) -> dict[str, Any]:
    """The model card of an updated policy; keeps the starting policy's prompt template (the evaluator's)."""
    card: dict[str, Any] = {"stage": "rl", "method": method, "init_model": str(policy_dir),
                            "train_examples": n_examples, "train": asdict(settings), **extra}
    parent = Path(policy_dir) / MODEL_CARD
    if parent.exists():
        parent_card = json.loads(parent.read_text())
        card["prompt_template"] = parent_card.get("prompt_template")
        card["chat_template"] = bool(parent_card.get("chat_template", False))
    return card


def _train_and_save(model, dataset, collate, loss_fn, settings, *, card: dict[str, Any], tokenizer, out_dir, checkpoint_dir,
                    metrics_path, count_tokens, description: str,
                    validation: tuple[ValidationSettings, EvaluateFn] | None = None) -> dict[str, Any]:
    from rlmec_core.io import iter_jsonl
    from rlmec_core.preflight import update_check_from_log

    def save(unwrapped: torch.nn.Module, state_dict: dict[str, torch.Tensor], result: TrainResult) -> None:
        card.update(asdict(result))
        if validation is not None:  # the update check of this run's own log (the live log, published just before)
            records = [r for _, r in iter_jsonl(metrics_path)]
            check = update_check_from_log(records, lr=settings.lr, where=str(metrics_path))
            card["update_check"] = None if check is None else asdict(check)
        write_model_dir(out_dir, unwrapped, tokenizer, card, state_dict)

    # the log lives beside the checkpoints until the end: Snakemake deletes a killed job's declared outputs
    settings_v, evaluate_fn = validation if validation is not None else (None, None)
    result = train_with_published_log(model, dataset, collate, loss_fn, settings, checkpoint_dir=checkpoint_dir,
                                      metrics_path=metrics_path, count_tokens=count_tokens, description=description,
                                      save_fn=save, validation=settings_v, evaluate_fn=evaluate_fn)
    log.info("%s policy saved to %s: %d steps, %.0f s", description, out_dir, result.steps, result.wall_seconds)
    if validation is not None:
        log.info("saved the weights of step %s (%s): validation accuracy %.4f, the best of %d evaluations%s",
                 result.saved_step, settings_v.select, result.best_metric, result.evaluations,
                 ", stopped early" if result.stopped_early else "")
        check = card.get("update_check")
        if check is not None and check["status"] != "green":
            log.warning("%s", check["message"])
    return card
