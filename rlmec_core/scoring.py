"""Teacher-forced scoring: the log-probability a causal LM gives each token of a target after a prompt.

Used for the GRM's token probabilities (RLMEC.md stage 5, and the GRM's quality metrics) and for the
sampling policy's old log-probs. Two backends with one contract:

- transformers (:func:`score_targets`): sequences sorted by length and packed into batches of at most
  ``batch_tokens`` padded tokens (length bucketing); the per-token log-probs come from
  ``rlmec_core.logprobs.token_logprobs`` (no ``[B, T, V]`` log-softmax), the function the RL stage
  trains with, so old log-probs made here give a first ratio of exactly 1;
- vLLM (:func:`score_targets_vllm`): prompt log-probabilities with continuous batching, for the GRM's
  ``p_t`` when the engine is vLLM (``engine.score_backend``).

:func:`score_model` loads a model directory with either backend, scores, and frees it.
"""

from __future__ import annotations

import gc
import os
import time
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


def score_targets_vllm(
    llm,
    prompt_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    *,
    progress: bool = False,
) -> list[np.ndarray]:
    """:func:`score_targets` through a ``vllm.LLM`` (continuous batching, no padding).

    A pair ``(prompt, target)`` with ``T = len(target) >= 1`` is one request: ``prompt + target[:-1]`` is
    sent as the prompt with ``prompt_logprobs=0`` (vLLM returns the log-probability of every prompt token
    given the tokens before it), which gives ``target[:-1]``; one token is generated, restricted to
    ``target[-1]`` (``allowed_token_ids``) with ``logprobs=0``, which gives the last one. Both come from the
    raw logits (the engine must run with ``logprobs_mode="raw_logprobs"``, vLLM's default and what
    ``rlmec_core.sampling.open_vllm(..., scoring=True)`` sets): no temperature, no mask. So a pair fits
    when ``len(prompt) + T <= max_model_len``, the same bound as the transformers path.

    Returns one float32 array of shape ``[T]`` per pair (empty for an empty target, which is not sent).
    Same argument checks as :func:`score_targets`.
    """
    from vllm import SamplingParams

    if len(prompt_ids) != len(target_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(target_ids)} targets")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (the first target token must have a prefix)")
    todo = [i for i, t in enumerate(target_ids) if len(t)]
    requests = [{"prompt_token_ids": [*prompt_ids[i], *target_ids[i][:-1]]} for i in todo]
    params = [SamplingParams(max_tokens=1, temperature=1.0, allowed_token_ids=[int(target_ids[i][-1])],
                             prompt_logprobs=0 if len(target_ids[i]) > 1 else None, logprobs=0,
                             detokenize=False, ignore_eos=True) for i in todo]
    outputs = llm.generate(requests, params, use_tqdm=progress) if todo else []
    out = [np.zeros(0, np.float32) for _ in target_ids]
    for i, res in zip(todo, outputs, strict=True):
        start, target = len(prompt_ids[i]), target_ids[i]
        values = [res.prompt_logprobs[start + j][tok].logprob for j, tok in enumerate(target[:-1])]
        generated = res.outputs[0]
        if list(generated.token_ids) != [target[-1]]:  # cannot happen with allowed_token_ids; never mis-score
            raise RuntimeError(f"vLLM generated {list(generated.token_ids)} where {target[-1]} was forced")
        values.append(generated.logprobs[0][target[-1]].logprob)
        out[i] = np.array(values, dtype=np.float32)
    return out


def score_model(
    model_dir: str | os.PathLike[str],
    prompt_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    *,
    engine,
    backend: str,
    pad_token_id: int = 0,
    batch_tokens: int = 16384,
    max_batch: int | None = None,
    progress: str | None = None,
) -> tuple[list[np.ndarray], float]:
    """Load ``model_dir`` with ``backend`` (``"vllm"`` or ``"hf"``), score the pairs, free the model.

    ``engine``: ``rlmec_core.sampling.EngineSettings`` (dtype, vLLM memory share, ...); ``batch_tokens`` and
    ``max_batch`` bound the transformers path's batches, padded with ``pad_token_id`` (never scored). Returns the per-pair log-probs (as
    :func:`score_targets`) and the seconds spent scoring (model loading excluded).
    """
    from rlmec_core.sampling import check_model_weights, load_inference_model, open_vllm

    if backend not in ("vllm", "hf"):
        raise ValueError(f"backend must be 'vllm' or 'hf', got {backend!r}")
    check_model_weights(model_dir)
    if backend == "vllm":
        model = open_vllm(model_dir, engine, scoring=True)
        t0 = time.monotonic()
        out = score_targets_vllm(model, prompt_ids, target_ids, progress=progress is not None)
    else:
        model = load_inference_model(model_dir, engine)
        t0 = time.monotonic()
        out = score_targets(model, prompt_ids, target_ids, pad_token_id=pad_token_id, batch_tokens=batch_tokens,
                            max_batch=max_batch, progress=progress)
    seconds = time.monotonic() - t0
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out, seconds
