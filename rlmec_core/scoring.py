"""Teacher-forced scoring: the log-probability a causal LM gives each token of a target after a prompt.

Used for the GRM's token probabilities (RLMEC.md stage 5, and the GRM's quality metrics) and for the
sampling policy's old log-probs. Sequences are sorted by length and packed into batches of at most
``batch_tokens`` padded tokens (length bucketing), so that a batch wastes little on padding; the
per-token log-probs come from ``rlmec_core.logprobs.token_logprobs`` (no ``[B, T, V]`` log-softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from rlmec_core.logprobs import token_logprobs


def length_buckets(lengths: Sequence[int], batch_tokens: int, max_batch: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length: sorted by length, each batch's
    ``size * longest`` at most ``batch_tokens`` (a longer single sequence gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newest member is the longest
        if current and (longest * (len(current) + 1) > batch_tokens or (max_batch and len(current) >= max_batch)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def score_targets(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_tokens: int = 16384,
    max_batch: int | None = None,
    progress: str | None = None,
) -> list[np.ndarray]:
    """``log p(target[t] | prompt, target[:t])`` for every target token, one float32 array per pair.

    Args:
        model: an HF causal LM (eval mode is set here).
        prompt_ids: token ids of each prompt (with BOS if the model expects one); non-empty.
        target_ids: token ids of each target (what is scored); may be empty (gives an empty array).
        pad_token_id: id used for right padding (never scored).
        batch_tokens: bound on ``batch size x longest sequence`` per forward pass.
        max_batch: optional bound on the batch size.
        progress: a tqdm description, or None for no bar.
    """
    if len(prompt_ids) != len(target_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(target_ids)} targets")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (the first target token must have a prefix)")
    model.eval()
    device = next(model.parameters()).device
    lengths = [len(p) + len(t) for p, t in zip(prompt_ids, target_ids, strict=True)]
    out: list[np.ndarray | None] = [None] * len(lengths)
    batches = length_buckets(lengths, batch_tokens, max_batch)
    for batch in tqdm(batches, desc=progress, disable=progress is None, mininterval=5.0):
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.bool)
        tmask = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, i in enumerate(batch):
            p, t = prompt_ids[i], target_ids[i]
            ids[row, : len(p) + len(t)] = torch.tensor([*p, *t], dtype=torch.long)
            attn[row, : len(p) + len(t)] = True
            tmask[row, len(p) : len(p) + len(t)] = True
        logp = token_logprobs(model, ids.to(device), attn.to(device), tmask.to(device)).cpu()
        for row, i in enumerate(batch):
            start = len(prompt_ids[i])
            out[i] = logp[row, start : start + len(target_ids[i])].numpy().astype(np.float32)
    return [o if o is not None else np.zeros(0, np.float32) for o in out]
