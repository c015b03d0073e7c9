"""Stage ``policy`` (demo only): build a tokenizer and a tiny LLaMA model locally and SFT it on the
training split's reference solutions, then ``save_pretrained`` (safetensors) the result.

With ``bootstrap.validation.enabled`` the SFT measures greedy accuracy on the validation split as it
trains, keeps the best checkpoint by that accuracy and may stop early (``rlmec_core.train.loop``): the
starting policy of the demo is then the best the schedule reached, not whatever the last step left.

Real configs name an existing model in ``policy.model`` and skip this stage. The stage resumes from
its last checkpoint (kept in ``checkpoint_dir``, outside the declared output) when rerun after a crash;
the tokenizer is stored beside the checkpoints so that a resumed run uses the very same vocabulary.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rlmec_core.errors import DataError
from rlmec_core.io import atomic_path
from rlmec_core.models.tiny import TinyArch, build_tiny_llama, train_tokenizer
from rlmec_core.prompting import TINY_CHAT_TEMPLATE
from rlmec_core.stages.data import load_problems
from rlmec_core.tasks import get_adapter
from rlmec_core.train.loop import TrainResult, TrainSettings, ValidationSettings, train
from rlmec_core.train.sft import SFTCollator, encode_sft_examples, sft_loss

log = logging.getLogger(__name__)

MODEL_CARD = "rlmec_model.json"


def write_model_dir(out_dir: str | Path, model: torch.nn.Module, tokenizer, card: dict[str, Any],
                    state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Atomically write an HF ``save_pretrained`` directory (safetensors) with the tokenizer and the model card."""
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")


LIVE_LOG = "train_log.jsonl"


def train_with_published_log(model: torch.nn.Module, dataset, collate_fn, loss_fn, settings: TrainSettings, *,
                             checkpoint_dir: str | Path, metrics_path: str | Path, save_fn, **kwargs) -> TrainResult:
    """``train`` with its JSONL log written beside the checkpoints and published to ``metrics_path`` at the end.

    ``metrics_path`` is a declared output, and Snakemake deletes a killed job's outputs before rerunning it:
    a log kept there would lose the steps before the checkpoint the rerun resumes from. The live log
    (``checkpoint_dir/train_log.jsonl``) survives with the checkpoints; it is copied atomically to
    ``metrics_path`` just before ``save_fn`` writes the model, so the published log holds every step 1..N
    exactly once however often the job was killed.
    """
    live = Path(checkpoint_dir) / LIVE_LOG

    def save(unwrapped: torch.nn.Module, state_dict: dict[str, torch.Tensor], result: TrainResult) -> None:
        with atomic_path(metrics_path) as tmp:
            shutil.copyfile(live, tmp)
        save_fn(unwrapped, state_dict, result)

    result = train(model, dataset, collate_fn, loss_fn, settings, checkpoint_dir=checkpoint_dir, metrics_path=live,
                   save_fn=save, **kwargs)
    live.unlink(missing_ok=True)
    return result


def train_settings(cfg: Mapping[str, Any], seed: int) -> TrainSettings:
    """``TrainSettings`` from a config ``train`` block (unknown keys were rejected by the schema)."""
    kwargs = dict(cfg)
    if "adam_betas" in kwargs:
        kwargs["adam_betas"] = tuple(kwargs["adam_betas"])
    return TrainSettings(seed=seed, **kwargs)


def validation_settings(cfg: Mapping[str, Any] | None) -> ValidationSettings | None:
    """``ValidationSettings`` from a config ``validation`` block (None when it is absent or disabled)."""
    if not cfg or not cfg.get("enabled", True):
        return None
    keys = ("every_epochs", "every_steps", "at_start", "patience", "min_delta", "select")
    return ValidationSettings(**{k: cfg[k] for k in keys if k in cfg})


def bootstrap_policy(
    train_path: str | Path,
    out_dir: str | Path,
    *,
    adapter_name: str,
    prompt_template: str | None,
    bootstrap: Mapping[str, Any],
    seed: int,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    validation_path: str | Path | None = None,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Train the demo policy and write it to ``out_dir``; returns the model card written beside it.

    ``validation_path`` (the validation split) is read when ``bootstrap["validation"]`` is enabled. With
    ``chat_template`` (config ``task.chat_template``) the tiny tokenizer gets ``TINY_CHAT_TEMPLATE`` and the
    policy is trained on prompts rendered through it, as an instruct model would be.
    """
    adapter = get_adapter(adapter_name, prompt_template, chat_template)
    problems = load_problems(train_path)
    prompts = [adapter.format_prompt(p.question) for p in problems]
    targets = [p.reference_solution for p in problems]
    checkpoint_dir = Path(checkpoint_dir)
    tok_dir = checkpoint_dir / "tokenizer"
    max_length = bootstrap["max_length"]

    if (tok_dir / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), trust_remote_code=False)  # our own BPE tokenizer
        log.info("reusing tokenizer from %s (resumed run)", tok_dir)
    else:
        tokenizer = train_tokenizer(prompts + targets, vocab_size=bootstrap["vocab_size"], model_max_length=max_length)
        if chat_template:
            tokenizer.chat_template = TINY_CHAT_TEMPLATE
        with atomic_path(tok_dir) as tmp:
            tokenizer.save_pretrained(str(tmp))
    arch = TinyArch(max_position_embeddings=max_length, **bootstrap["arch"])
    model = build_tiny_llama(tokenizer, arch, seed=seed)
    n_params = sum(p.numel() for p in model.parameters())

    examples, report = encode_sft_examples(tokenizer, prompts, targets, max_length=max_length,
                                           chat_template=chat_template)
    if not examples:
        raise DataError(f"{train_path}: no training example fits in max_length={max_length} tokens")
    if report.skipped_too_long:
        log.warning("skipped %d of %d examples longer than %d tokens", report.skipped_too_long, len(prompts), max_length)
    settings = train_settings(bootstrap["train"], seed)
    log.info("policy: %.2fM parameters, vocab %d, %d examples, %s", n_params / 1e6, len(tokenizer), len(examples), settings)
    val_cfg = bootstrap.get("validation")
    validation = validation_settings(val_cfg)
    evaluate_fn = None
    if validation is not None:
        from rlmec_core.stages.evaluate import greedy_accuracy_fn

        if validation_path is None:
            raise DataError("policy.bootstrap.validation is enabled but no validation split was given")
        val_problems = load_problems(validation_path)[: val_cfg.get("limit")]
        evaluate_fn = greedy_accuracy_fn(tokenizer, val_problems, adapter, max_new_tokens=val_cfg["max_new_tokens"],
                                         batch_size=val_cfg["batch_size"])
        log.info("validation: %d problems of %s every %g epochs, patience %s, keep the %s weights",
                 len(val_problems), validation_path, validation.every_epochs, validation.patience, validation.select)

    card: dict[str, Any] = {
        "stage": "policy_bootstrap",
        "kind": "tiny-llama",
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "arch": asdict(arch),
        "train": asdict(settings),
        "train_examples": len(examples),
        "skipped_too_long": report.skipped_too_long,
        "train_data": str(train_path),
        "validation": None if validation is None else {**asdict(validation), "data": str(validation_path),
                                                       "problems": len(val_problems)},
        "adapter": adapter_name,
        "prompt_template": adapter.prompt_template,
        "chat_template": adapter.chat_template,
    }

    def save(unwrapped: torch.nn.Module, state_dict: dict[str, torch.Tensor], result: TrainResult) -> None:
        card.update(asdict(result))
        write_model_dir(out_dir, unwrapped, tokenizer, card, state_dict)

    result = train_with_published_log(
        model,
        examples,
        SFTCollator(tokenizer.pad_token_id),
        functools.partial(sft_loss, normalization=settings.loss_normalization),
        settings,
        checkpoint_dir=checkpoint_dir,
        metrics_path=metrics_path,
        description="policy-sft",
        save_fn=save,
        validation=validation,
        evaluate_fn=evaluate_fn,
    )
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("policy saved to %s (%d steps, %.0f s, %.0f tokens/s)", out_dir, result.steps, result.wall_seconds,
             result.tokens_seen / max(result.wall_seconds, 1e-9))
    if validation is not None:
        log.info("saved the weights of step %s: validation accuracy %.4f (best of %d evaluations%s)",
                 result.saved_step, result.best_metric, result.evaluations,
                 ", stopped early" if result.stopped_early else "")
    return card
