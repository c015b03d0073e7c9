"""Per-token log-probabilities of a padded batch under a Hugging Face causal LM, without ``[B, T, V]``.

``token_logprobs`` runs the decoder body once for hidden states ``[B, T, H]``, then computes logits
only for the target positions, a chunk of ``chunk_size`` tokens at a time: per chunk
``logits = lm_head(h)`` (``[chunk, V]``, model dtype), then in float32
``logit[target] - logsumexp(logits)``. Peak memory beyond the model is ``O(chunk_size * V)`` instead of
the several float32 ``[B, T, V]`` tensors of ``model(...).logits.float().log_softmax(-1).gather(...)``.
With gradients on, each chunk is checkpointed (its logits are recomputed in the backward pass), so
training keeps the same bound.

A model wrapped for data parallelism (DDP, FSDP, DeepSpeed) is run through its wrapper instead, which
computes the full logits; only the float32 log-softmax is then chunked.

Used for the old log-probs of stage 5 (``torch.no_grad()``) and for ``log pi_theta`` in stage 6
(with gradient).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["token_logprobs"]


def _chunk_logprobs(
    hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, softcap: float | None
) -> torch.Tensor:
    """``[N, H]`` hidden states, ``[N]`` target ids -> ``[N]`` float32 ``log softmax(head(h))[target]``."""
    logits = head(hidden).float()  # [N, V]
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a data-parallel wrapper (DDP/FSDP/DeepSpeed keep it in ``.module``); ``model``
    itself when it is not wrapped."""
    inner = model
    while not hasattr(inner, "get_output_embeddings") and hasattr(inner, "module"):
        inner = inner.module
    return inner


def _logit_rows_logprobs(rows: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``[N, V]`` logits (any dtype), ``[N]`` target ids -> ``[N]`` float32 ``log softmax(row)[target]``,
    upcast one chunk of ``chunk_size`` rows at a time."""
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        chunk = rows[start : start + chunk_size].float()
        picked = chunk.gather(-1, targets[start : start + chunk_size].unsqueeze(-1)).squeeze(-1)
        pieces.append(picked - torch.logsumexp(chunk, dim=-1))
    return torch.cat(pieces) if pieces else rows.new_zeros(0, dtype=torch.float32)


def _check_mask(name: str, mask: object, shape: torch.Size) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)} but input_ids has {tuple(shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"{name} must be bool or integer 0/1, got {mask.dtype}")
    if bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{name} must hold only 0 and 1")
    return mask.bool()


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    target_mask: torch.Tensor,
    *,
    chunk_size: int = 1024,
    checkpoint_chunks: bool = True,
) -> torch.Tensor:
    """Log-probabilities ``[B, T]`` of each target token given its prefix, for a padded batch.

    Alignment: ``out[b, t] = log p(input_ids[b, t] | input_ids[b, :t])``, read from the model's
    logits at position ``t - 1``, for every ``t`` with ``target_mask[b, t]``; 0 elsewhere. A token
    whose previous position is not attended has no prefix, so its value is 0 as well: position 0
    always, and the first real token of a left-padded row. (Prompt tokens condition the targets but
    are themselves usually not targets.)

    Padding: left or right, given by ``attention_mask``. Position ids are passed explicitly as
    ``cumsum(attention_mask) - 1`` (clamped at 0), so a left-padded row gets the same positions, and
    the same log-probs, as the unpadded sequence (HF Llama would otherwise number from the first
    column, padding included).

    Args:
        model: a Hugging Face causal LM whose logits are ``get_output_embeddings()`` applied to the last
            hidden state of ``get_decoder()`` (LLaMA, Mistral, Qwen, GPT-2 style, ...); Gemma-style
            ``config.final_logit_softcapping`` is applied. Its dtype is kept (bf16 logits are upcast per
            chunk).
        input_ids: ``[B, T]`` integer token ids.
        attention_mask: ``[B, T]`` bool or 0/1, True on real tokens (prompt and response).
        target_mask: ``[B, T]`` bool or 0/1, True on the tokens whose log-prob is wanted (the response);
            must lie inside ``attention_mask``.
        chunk_size: target tokens per logits chunk (peak extra memory ~ ``chunk_size * V * 4`` bytes
            times a small constant).
        checkpoint_chunks: with gradients enabled, recompute each chunk's logits in the backward pass
            instead of keeping them (memory ``O(chunk_size * V)`` in training too).

    Returns:
        ``[B, T]`` float32 tensor on the model's device; differentiable w.r.t. the model's parameters
        when gradients are enabled.

    Raises:
        ValueError: ``input_ids`` is not a non-empty 2-D integer tensor or holds ids outside the
        vocabulary, a mask has another shape or non-0/1 values, ``target_mask`` marks padding, or
        ``chunk_size < 1`` (the message names the argument).
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a 2-D [B, T] tensor, got {getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.numel() == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)})")
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool or input_ids.is_complex():
        raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    attn = _check_mask("attention_mask", attention_mask, input_ids.shape)
    tmask = _check_mask("target_mask", target_mask, input_ids.shape)
    if bool((tmask & ~attn).any()):
        raise ValueError("target_mask marks positions where attention_mask is 0 (padding)")

    # A model wrapped for data parallelism (DDP, FSDP, a DeepSpeed engine) runs its forward through the
    # wrapper (gradient sync, parameter gathering), so it computes its own [B, T, V] logits (more memory
    # than the chunked head below); the checks, the alignment and the output are the same.
    inner = _unwrapped(model)
    wrapped = inner is not model
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if not wrapped and (head is None or decoder is None or decoder is model):
        raise ValueError("model must be a causal LM with get_decoder() and get_output_embeddings()")
    # out_features first: a sharded weight (DeepSpeed ZeRO-3) may not show the vocabulary in its shape
    vocab = None if head is None else int(getattr(head, "out_features", None) or head.weight.shape[0])
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise ValueError(f"input_ids must lie in [0, {vocab}) (the vocabulary), got [{lo}, {hi}]")

    device = next(model.parameters()).device if wrapped else head.weight.device
    input_ids = input_ids.to(device)
    attn = attn.to(device)
    tmask = tmask.to(device)
    position_ids = (attn.long().cumsum(-1) - 1).clamp_min(0)
    # position t is predicted from t - 1; its prefix must be attended
    sel = tmask[:, 1:] & attn[:, :-1]  # [B, T-1]
    targets = input_ids[:, 1:][sel]  # [N]
    if wrapped:
        logits = model(input_ids=input_ids, attention_mask=attn.long(), position_ids=position_ids,
                       use_cache=False).logits  # [B, T, V], softcapping applied by the model
        values = _logit_rows_logprobs(logits[:, :-1][sel], targets, chunk_size)
    else:
        softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        out = decoder(input_ids=input_ids, attention_mask=attn.long(), position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # [B, T, H]
        h = hidden[:, :-1][sel]  # [N, H]
        use_ckpt = checkpoint_chunks and torch.is_grad_enabled() and (
            h.requires_grad or any(p.requires_grad for p in head.parameters())
        )
        pieces = []
        for start in range(0, h.shape[0], chunk_size):
            hc, tc = h[start : start + chunk_size], targets[start : start + chunk_size]
            if use_ckpt:
                pieces.append(checkpoint(_chunk_logprobs, hc, tc, head, softcap, use_reentrant=False))
            else:
                pieces.append(_chunk_logprobs(hc, tc, head, softcap))
        values = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    shifted = torch.zeros(sel.shape, dtype=torch.float32, device=device).masked_scatter(sel, values)
    return torch.nn.functional.pad(shifted, (1, 0))
