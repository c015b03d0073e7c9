"""Naive twins of the RLMEC kernels, written straight from RLMEC.md for the tests (and benchmarks).

- ``levenshtein_dp``: the O(nm) Python dynamic programme with a backtrace (the published code's
  approach), returning the distance and the per-token operations.
- ``rlmec_loss_loop``: the stage 6 formulas token by token with Python loops over scalar tensors;
  autograd through it gives the reference gradients of both ratio forms.
- ``token_logprobs_full``: the full ``log_softmax`` over ``[B, T, V]`` and a gather.
"""

from __future__ import annotations

import math

import torch


def levenshtein_dp(a: list[int], b: list[int]) -> tuple[int, list[tuple[str, int, int]]]:
    """Unit-cost edit distance of ``a`` into ``b`` and one optimal list of ``(tag, i, j)`` operations.

    Tags: ``equal``, ``replace`` (a[i] -> b[j]), ``delete`` (a[i]), ``insert`` (b[j]); in order.
    The backtrace prefers a match, then a substitution, then a deletion, then an insertion.
    """
    n, m = len(a), len(b)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        row, prev, ai = d[i], d[i - 1], a[i - 1]
        for j in range(1, m + 1):
            cost = 0 if ai == b[j - 1] else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
    ops: list[tuple[str, int, int]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and a[i - 1] == b[j - 1] and d[i][j] == d[i - 1][j - 1]:
            ops.append(("equal", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + 1:
            ops.append(("replace", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append(("delete", i - 1, j))
            i -= 1
        else:
            ops.append(("insert", i, j - 1))
            j -= 1
    ops.reverse()
    return d[n][m], ops


def imitation_weights_dp(a: list[int], b: list[int], changed: float = 1.0, kept: float = 0.5) -> list[float]:
    """Weights of ``b`` from the DP alignment: ``changed`` for inserted/substituted tokens, else ``kept``."""
    _, ops = levenshtein_dp(a, b)
    w = [kept] * len(b)
    for tag, _i, j in ops:
        if tag in ("insert", "replace"):
            w[j] = changed
    return w


def rlmec_loss_loop(
    policy_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    imitation_logprobs: torch.Tensor,
    imitation_weights: torch.Tensor,
    *,
    clip_eps: float = 0.3,
    imitation_coef: float = 1.0,
    ratio_form: str = "published",
    denominators: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """RLMEC.md stage 6 with loops; ``[B, T]`` x3 and ``[B, U]`` x2 tensors, returns ``(loss, stats)``.

    published: ``A = min(rho r, clip(rho) r)`` with ``rho`` detached, term ``-A log pi``.
    ppo: term ``-min(rho r, clip(rho) r)`` with ``rho = exp(log pi - l)`` differentiable.
    """
    B, T = policy_logprobs.shape
    U = imitation_logprobs.shape[1]
    rl_terms, n_r, n_active, ratio_sum, kl_sum = [], 0, 0, 0.0, 0.0
    for b in range(B):
        for t in range(T):
            r = float(rewards[b, t])
            lp = policy_logprobs[b, t]
            old = float(old_logprobs[b, t])
            lp_val = float(lp.detach())
            rho_val = math.exp(lp_val - old)
            if r != 0:
                n_r += 1
                ratio_sum += rho_val
                kl_sum += (rho_val - 1) - (lp_val - old)
                clipped = min(max(rho_val, 1 - clip_eps), 1 + clip_eps)
                n_active += int(clipped * r < rho_val * r)
            if ratio_form == "published":
                clipped = min(max(rho_val, 1 - clip_eps), 1 + clip_eps)
                adv = min(rho_val * r, clipped * r)
                rl_terms.append(-adv * lp)
            elif ratio_form == "ppo":
                rho = torch.exp(lp - old)
                rl_terms.append(-torch.minimum(rho * r, torch.clamp(rho, 1 - clip_eps, 1 + clip_eps) * r))
            else:
                raise ValueError(ratio_form)
    ir_terms, n_w = [], 0
    for b in range(B):
        for j in range(U):
            w = float(imitation_weights[b, j])
            if w != 0:
                n_w += 1
            ir_terms.append(w * -imitation_logprobs[b, j])
    d_r, d_w = denominators or (max(n_r, 1), max(n_w, 1))
    loss_rl = torch.stack(rl_terms).sum() / d_r
    loss_ir = torch.stack(ir_terms).sum() / d_w
    loss = loss_rl + imitation_coef * loss_ir
    stats = {
        "loss": float(loss.detach()),
        "loss_rl": float(loss_rl.detach()),
        "loss_ir": float(loss_ir.detach()),
        "clip_frac": n_active / n_r if n_r else 0.0,
        "ratio_mean": ratio_sum / n_r if n_r else 1.0,
        "approx_kl": kl_sum / n_r if n_r else 0.0,
        "n_reward_tokens": n_r,
        "n_imitation_tokens": n_w,
    }
    return loss, stats


def masked_ce(
    policy_logprobs: torch.Tensor,
    reward_mask: torch.Tensor,
    imitation_logprobs: torch.Tensor,
    weight_mask: torch.Tensor,
) -> torch.Tensor:
    """A plain masked cross-entropy on the same tokens (the benchmark's baseline): mean ``-log p``."""
    return -(policy_logprobs * reward_mask).sum() / reward_mask.sum() - (
        imitation_logprobs * weight_mask
    ).sum() / weight_mask.sum()


def token_logprobs_full(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor
) -> torch.Tensor:
    """``[B, T]``: full float32 ``log_softmax`` of ``model(...).logits`` gathered at the next token.

    Same alignment and position ids as ``rlmec_core.logprobs.token_logprobs``: ``out[:, t]`` is
    ``log p(input_ids[:, t] | input_ids[:, :t])`` where ``target_mask[:, t]`` and the previous position is
    attended, else 0.
    """
    attn = attention_mask.bool()
    position_ids = (attn.long().cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=input_ids, attention_mask=attn.long(), position_ids=position_ids).logits
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    picked = logp[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    sel = target_mask.bool()[:, 1:] & attn[:, :-1]
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    out[:, 1:] = torch.where(sel, picked, 0.0)
    return out
