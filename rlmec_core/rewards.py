"""Token-level rewards from the GRM's token probabilities (RLMEC.md stage 5), and reward helpers.

- :func:`token_rewards`: ``r_t = clip(p_t - 0.5, *pos_clip)`` for a correct solution,
  ``clip(p_t - 0.5, *neg_clip)`` for an incorrect one; ``p_t = P_GRM(y_t | rewrite prompt, y_<t)``.
- :func:`step_reward_sums`: the token rewards summed per step (non-blank line) for inspection; step
  ``i`` is step ``[i]`` of the numbered solution (``TaskAdapter.split_steps``), so a sum can be read
  beside the first-error-step index ``k``.
- :func:`sequence_rewards_to_tokens`: one instance-level reward per sequence broadcast to every
  token, so that the instance-level baselines run through the same ``rlmec_loss`` and differ from
  RLMEC only in their rewards.

Empty inputs raise ``ValueError`` naming the argument (an empty solution has no token to reward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["token_rewards", "step_reward_sums", "sequence_rewards_to_tokens"]

ProbsT = TypeVar("ProbsT", Sequence[float], np.ndarray, torch.Tensor)


def check_clip(name: str, clip: tuple[float, float]) -> tuple[float, float]:
    """``clip`` as a ``(low, high)`` float pair, finite with ``low <= high`` (``ValueError`` naming ``name``)."""
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {clip!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{name} must be a finite pair with low <= high, got {clip!r}")
    return lo, hi


def token_rewards(
    probs: ProbsT,
    correct: bool,
    pos_clip: tuple[float, float] = (0.0, 0.5),
    neg_clip: tuple[float, float] = (-0.1, 0.0),
) -> ProbsT:
    """Token rewards ``r_t`` of one solution from the GRM's probabilities ``p_t`` of its tokens.

    ``r_t = clip(p_t - 0.5, *pos_clip)`` if ``correct`` else ``clip(p_t - 0.5, *neg_clip)``.
    With the defaults a correct solution's tokens get ``[0, 0.5]`` (more for tokens the GRM would
    keep) and an incorrect solution's tokens get ``[-0.1, 0]`` (negative only where the GRM would
    change the token; tokens it would keep, ``p_t >= 0.5``, get exactly 0 and so do not count in
    ``rlmec_loss``'s denominator).

    Args:
        probs: per-token probabilities in ``[0, 1]``: a sequence of floats (``[T]``), a numpy array or a
            torch tensor of any non-empty shape (e.g. ``[T]``, or ``[B, T]`` for solutions sharing the
            same ``correct``; padding must then be handled by the caller).
        correct: whether the solution's final answer is correct (a ``bool``).
        pos_clip: ``(low, high)`` clip range for correct solutions.
        neg_clip: ``(low, high)`` clip range for incorrect solutions.

    Returns:
        The rewards in the same kind as ``probs``: a ``list[float]`` for a sequence, a numpy array for
        an array (same floating dtype; integer input gives float64), a tensor for a tensor (same
        floating dtype and device; integer/bool input gives the default float dtype), same shape.

    Raises:
        ValueError: ``probs`` is empty, not numeric, holds NaN/inf or values outside ``[0, 1]``;
        ``correct`` is not a bool; a clip pair is malformed (the message names the argument).
    """
    if not isinstance(correct, (bool, np.bool_)):
        raise ValueError(f"correct must be a bool, got {correct!r} ({type(correct).__name__})")
    lo, hi = check_clip("pos_clip" if correct else "neg_clip", pos_clip if correct else neg_clip)
    check_clip("neg_clip" if correct else "pos_clip", neg_clip if correct else pos_clip)

    if isinstance(probs, torch.Tensor):
        p = probs if probs.is_floating_point() else probs.to(torch.get_default_dtype())
        if p.numel() == 0:
            raise ValueError("probs is empty: a solution needs at least one token")
        if not bool(torch.isfinite(p).all()):
            raise ValueError("probs contains NaN or inf")
        if bool(((p < 0) | (p > 1)).any()):
            raise ValueError(
                f"probs must lie in [0, 1], got values in [{p.min().item():.6g}, {p.max().item():.6g}]"
            )
        return torch.clamp(p - 0.5, lo, hi)  # type: ignore[return-value]

    is_array = isinstance(probs, np.ndarray)
    if isinstance(probs, (str, bytes)):
        raise ValueError(f"probs must be numeric, got {type(probs).__name__}")
    try:
        arr = np.asarray(probs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"probs must be a numeric sequence: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"probs must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError("probs must be real numbers")
    if arr.size == 0:
        raise ValueError("probs is empty: a solution needs at least one token")
    if not is_array and arr.ndim != 1:
        raise ValueError(f"probs as a sequence must be flat (one value per token), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("probs contains NaN or inf")
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"probs must lie in [0, 1], got values in [{arr.min():.6g}, {arr.max():.6g}]")
    out = np.clip(arr - arr.dtype.type(0.5), lo, hi).astype(arr.dtype, copy=False)
    if is_array:
        return out  # type: ignore[return-value]
    return [float(x) for x in out]  # type: ignore[return-value]


def step_reward_sums(tokens: Sequence[str], rewards: Sequence[float] | np.ndarray | torch.Tensor) -> list[float]:
    """Sum token rewards per step of a solution, for inspection.

    The solution text is ``"".join(tokens)`` (``tokens`` are the decoded pieces of its tokens, e.g.
    ``tokenizer.convert_ids_to_tokens`` + ``convert_tokens_to_string`` per id, or offsets-derived
    slices). Steps are its non-blank lines, as in ``TaskAdapter.split_steps`` (``str.splitlines``;
    a line of only whitespace is no step), so ``result[i]`` belongs to step ``[i]``.

    Attribution: a token belongs to the step holding its first non-whitespace character (a token
    ``"\\n3"`` belongs to the line of ``3``). A token without one (``"\\n"``, ``" "``, ``""``) belongs
    to the step of the closest preceding token that has one, or to step 0 if none precedes it.

    Args:
        tokens: ``[T]`` decoded token strings.
        rewards: ``[T]`` token rewards (sequence, 1-D numpy array or 1-D tensor).

    Returns:
        One float per step (``len == number of non-blank lines``); an empty list when the text has no
        non-blank line (every reward then belongs to no step).

    Raises:
        ValueError: ``tokens`` is empty or holds a non-string; ``rewards`` is not 1-D, holds NaN/inf, or
        its length differs from ``tokens`` (the message names the argument).
    """
    if isinstance(tokens, str):
        raise ValueError("tokens must be a sequence of token strings, not one string")
    tokens = list(tokens)
    if not tokens:
        raise ValueError("tokens is empty: a solution needs at least one token")
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise ValueError(f"tokens[{i}] is {type(tok).__name__}, expected str")
    r = rewards.detach().cpu().double().numpy() if isinstance(rewards, torch.Tensor) else np.asarray(rewards, float)
    if r.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {r.shape}")
    if len(r) != len(tokens):
        raise ValueError(f"rewards has {len(r)} values but tokens has {len(tokens)}: they must match")
    if not np.isfinite(r).all():
        raise ValueError("rewards contains NaN or inf")

    text = "".join(tokens)
    # step index of every character (-1 on blank lines); lines as str.splitlines sees them
    char_step: list[int] = []
    n_steps = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            char_step.extend([n_steps] * len(line))
            n_steps += 1
        else:
            char_step.extend([-1] * len(line))
    if n_steps == 0:
        return []
    sums = [0.0] * n_steps
    pos = 0
    current = 0  # step of the last token that had a non-whitespace character
    for tok, reward in zip(tokens, r.tolist()):
        for k, ch in enumerate(tok):
            if not ch.isspace():
                current = char_step[pos + k]
                break
        sums[current] += reward
        pos += len(tok)
    return sums


def sequence_rewards_to_tokens(seq_rewards: Any, mask: torch.Tensor) -> torch.Tensor:
    """Broadcast one reward per sequence to every token of it (instance-level baselines).

    ``out[b, t] = seq_rewards[b] if mask[b, t] else 0``. Fed to ``rlmec_loss`` as ``rewards``, this gives
    the instance-level variant of the same objective; note that a sequence with reward 0 contributes no
    token to the denominator ``#{t : r_t != 0}``.

    Args:
        seq_rewards: ``[B]`` rewards, one per sequence (tensor, array or sequence of floats).
        mask: ``[B, T]`` bool (or 0/1) tensor, True on the tokens of each sequence that are rewarded
            (the response tokens; False on padding and prompt).

    Returns:
        ``[B, T]`` tensor of ``mask``'s device; dtype of ``seq_rewards`` when it is a floating tensor,
        else the default float dtype.

    Raises:
        ValueError: ``mask`` is not a non-empty 2-D tensor, ``seq_rewards`` is not ``[B]``, or holds
        NaN/inf (the message names the argument).
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a 2-D [B, T] tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    if mask.numel() == 0:
        raise ValueError(f"mask is empty (shape {tuple(mask.shape)})")
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("mask must be bool or hold only 0 and 1")
        mask = mask.bool()
    if isinstance(seq_rewards, torch.Tensor):
        sr = seq_rewards.to(mask.device)
        if not sr.is_floating_point():
            sr = sr.to(torch.get_default_dtype())
    else:
        sr = torch.as_tensor(np.asarray(seq_rewards, dtype=float), dtype=torch.get_default_dtype(), device=mask.device)
    if sr.shape != (mask.shape[0],):
        raise ValueError(f"seq_rewards must have shape [B] = [{mask.shape[0]}], got {tuple(sr.shape)}")
    if not bool(torch.isfinite(sr).all()):
        raise ValueError("seq_rewards contains NaN or inf")
    return torch.where(mask, sr[:, None], sr.new_zeros(()))
