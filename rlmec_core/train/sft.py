"""Supervised fine-tuning on (prompt, target) pairs with the loss on the target tokens only.

Used by the policy bootstrap (demo), and by every later stage that fine-tunes a causal LM on text
targets (GRM SFT, rejection-sampling fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlmec_core.prompting import encode_prompts
from rlmec_core.train.dist import global_denominators

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]  # prompt ids (with BOS if the tokenizer adds one) + target ids + EOS
    labels: list[int]  # IGNORE_INDEX on prompt positions, the token id on target positions


@dataclass(frozen=True)
class EncodeReport:
    kept: int
    skipped_too_long: int  # examples whose prompt + target exceed max_length (skipped, never truncated)


def encode_sft_examples(
    tokenizer, prompts: Sequence[str], targets: Sequence[str], *, max_length: int, chat_template: bool = False
) -> tuple[list[EncodedExample], EncodeReport]:
    """Tokenize prompt and target separately (as the sampler sees them) and join them.

    The prompt is encoded as the sampler encodes it (``rlmec_core.prompting.encode_prompts``: with the
    tokenizer's special tokens, or through its chat template when ``chat_template``), the target without
    special tokens, followed by EOS. Examples longer than ``max_length`` tokens are skipped and counted, not truncated: a truncated
    target would teach the model to stop mid-solution.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"prompts ({len(prompts)}) and targets ({len(targets)}) differ in length")
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no EOS token; SFT targets must end with one")
    p_ids = encode_prompts(tokenizer, prompts, chat_template=chat_template)
    t_ids = tokenizer(list(targets), add_special_tokens=False)["input_ids"]
    out, skipped = [], 0
    for p, t in zip(p_ids, t_ids, strict=True):
        t = [*t, tokenizer.eos_token_id]
        if len(p) + len(t) > max_length:
            skipped += 1
            continue
        out.append(EncodedExample(input_ids=[*p, *t], labels=[IGNORE_INDEX] * len(p) + t))
    return out, EncodeReport(kept=len(out), skipped_too_long=skipped)


class SFTCollator:
    """Right-pad a list of ``EncodedExample`` into ``input_ids``, ``attention_mask``, ``labels`` [B, T]."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[EncodedExample]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e.input_ids)
            ids[i, :n] = torch.tensor(e.input_ids)
            labels[i, :n] = torch.tensor(e.labels)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sft_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], normalization: str = "token"
) -> tuple[torch.Tensor, dict[str, float]]:
    """Next-token cross-entropy over target positions (``labels != IGNORE_INDEX``).

    Shapes: ``input_ids``, ``attention_mask``, ``labels`` [B, T]; logits [B, T, V] are shifted by one so
    that position t predicts token t+1. ``normalization``: ``"token"`` = the mean over all target tokens
    of the batch (the usual SFT loss); ``"example"`` = the mean over examples of each example's mean, so
    that a short target (a step label) weighs as much as a long one (a whole rewrite). Under data
    parallelism ``"token"`` divides by the global batch's token count over the processes
    (:func:`rlmec_core.train.dist.global_denominators`), so P processes train exactly like one.
    Returns ``(loss, {"target_tokens": n, "token_acc": acc})``.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = batch["labels"][:, 1:]
    mask = shift_labels != IGNORE_INDEX
    n = int(mask.sum())
    if n == 0:
        raise ValueError("batch has no target tokens")
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    if normalization == "token":
        # the token mean of the global batch under data parallelism (see rlmec_core.train.dist)
        denominators = global_denominators(n)
        loss = nll.sum() / (denominators[0] if denominators else n)
    elif normalization == "example":
        per_example = nll.sum(1) / mask.sum(1).clamp_min(1)
        loss = per_example[mask.any(1)].mean()
    else:
        raise ValueError(f"normalization must be 'token' or 'example', got {normalization!r}")
    with torch.no_grad():
        acc = float(((shift_logits.argmax(-1) == shift_labels) & mask).sum()) / n
    return loss, {"target_tokens": float(n), "token_acc": acc}



def heldout_nll(model: torch.nn.Module, examples: Sequence[EncodedExample], collate: SFTCollator, *,
                batch_size: int = 32) -> tuple[float, int]:
    """``(sum of -log p(target token), number of target tokens)`` of ``model`` over held-out ``examples``.

    Batches of ``batch_size`` examples are right-padded by ``collate`` (``input_ids``, ``attention_mask``,
    ``labels`` [B, T]); position t's logits [B, T, V] predict token t+1 and only target positions (``labels !=
    IGNORE_INDEX``) count. Padding and batching do not change the figures (each example attends to its own
    tokens only). Runs under ``torch.no_grad`` on the model's device; the model's mode is left as it is.
    """
    if not examples:
        raise ValueError("held-out NLL needs at least one example")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(list(examples[i:i + batch_size])).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                  reduction="sum")
            total += float(nll)
            count += int((labels != IGNORE_INDEX).sum())
    return total, count


def heldout_loss_fn(examples: Sequence[EncodedExample], pad_token_id: int, *, batch_size: int = 32,
                    prefix: str = "val"):
    """An ``evaluate_fn`` for the training loop: the token-mean held-out loss of :func:`heldout_nll`, as
    ``{f"{prefix}_loss", f"{prefix}_tokens"}`` (minimise ``f"{prefix}_loss"``: ``ValidationSettings(mode="min")``)."""
    collate = SFTCollator(pad_token_id)
    examples = list(examples)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        total, count = heldout_nll(model, examples, collate, batch_size=batch_size)
        return {f"{prefix}_loss": total / max(count, 1), f"{prefix}_tokens": float(count)}

    return evaluate
