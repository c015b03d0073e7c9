"""The RLMEC policy objective (RLMEC.md stage 6) and masked reduction helpers.

Per token ``t`` of the sampled solution ``y`` and token ``j`` of the imitation target ``z``::

    rho_t = exp(log pi_theta(y_t) - l_t)                                (no gradient)
    A_t   = min(rho_t * r_t, clip(rho_t, 1 - eps, 1 + eps) * r_t)       (no gradient)
    L_RL  = - sum_t A_t * log pi_theta(y_t) / #{t : r_t != 0}
    L_IR  = sum_j w_j * (- log pi_theta(z_j)) / #{j : w_j != 0}
    L     = L_RL + lambda * L_IR

Sums and counts run over the whole batch. How the ratio enters ``L_RL`` is chosen by name from
:data:`RATIO_FORMS` (verl ``core_algos`` style registry):

- ``"published"`` (default): the formula above; where the ratio is clipped the gradient is still
  ``-clip(rho) * r * grad log pi`` (a truncated importance weight), as in the published code.
- ``"ppo"``: textbook PPO-clip, ``L_RL = - sum_t min(rho_t r_t, clip(rho_t) r_t) / #{t : r_t != 0}``
  with ``rho_t`` carrying gradient: same gradient as ``"published"`` where the clip is inactive, zero
  gradient where it is active. Note that its *value* is the surrogate, not ``-A log pi``.

Padding carries ``r = 0`` / ``w = 0`` and therefore counts in neither sum nor denominator; no
separate masks are taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "RATIO_FORMS",
    "RatioForm",
    "get_ratio_form",
    "masked_mean",
    "masked_sum",
    "register_ratio_form",
    "rlmec_loss",
]


# ------------------------------------------------------------------------------------------------
# masked reductions
# ------------------------------------------------------------------------------------------------
def _as_bool_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != values.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but values has {tuple(values.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is set.

    Args:
        values: any shape, e.g. ``[B, T]``.
        mask: same shape; bool, or numeric where non-zero means "included". Entries outside the mask
            are ignored even when they are NaN/inf (``torch.where``, not multiplication).
        dim: reduce over this dimension only; ``None`` reduces everything to a scalar.

    Returns:
        The masked sum: a 0-dim tensor, or ``values`` reduced over ``dim``. Differentiable in ``values``.
    """
    m = _as_bool_mask(values, mask)
    kept = torch.where(m, values, values.new_zeros(()))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is set; 0 where nothing is selected.

    Args:
        values: any shape, e.g. ``[B, T]``.
        mask: same shape; bool, or numeric where non-zero means "included" (a count, not a weight).
        dim: average over this dimension only; ``None`` averages everything to a scalar.

    Returns:
        ``masked_sum / count``; where ``count == 0`` the result is 0 (never NaN) and its gradient is 0.
    """
    m = _as_bool_mask(values, mask)
    total = masked_sum(values, m, dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp_min(1).to(total.dtype)


# ------------------------------------------------------------------------------------------------
# ratio forms
# ------------------------------------------------------------------------------------------------
RatioForm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""``(policy_logprobs, ratio, rewards, clip_eps) -> (rl_sum, grad_coef, n_clip_active)``.

Called without gradient on tensors of one shape (``[B * T]`` in ``rlmec_loss``): ``policy_logprobs``,
``ratio = exp(policy_logprobs - old_logprobs)`` and ``rewards``. Returns ``rl_sum``, the summed per-token
RL loss (0-dim; ``rlmec_loss`` divides it by ``#{t : r_t != 0}``), ``grad_coef``, the derivative of
``rl_sum`` with respect to each entry of ``policy_logprobs`` (same shape), and ``n_clip_active`` (0-dim),
the number of tokens where ``clip(rho) r < rho r``. Terms and coefficients must be 0 where ``r_t == 0``.
``rlmec_loss`` applies the stated gradient through a linear surrogate (see its docstring);
``tests/test_losses.py`` checks both registered forms against autograd through a loop implementation.
"""

RATIO_FORMS: dict[str, RatioForm] = {}


def register_ratio_form(name: str) -> Callable[[RatioForm], RatioForm]:
    """Decorator: register a ratio form under ``name`` for ``rlmec_loss(ratio_form=name)``."""

    def decorator(fn: RatioForm) -> RatioForm:
        if name in RATIO_FORMS and RATIO_FORMS[name] is not fn:
            raise ValueError(f"ratio form {name!r} is already registered")
        RATIO_FORMS[name] = fn
        return fn

    return decorator


def get_ratio_form(name: str) -> RatioForm:
    """The registered ratio form ``name`` (ValueError listing the known names otherwise)."""
    try:
        return RATIO_FORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"ratio_form must be one of {sorted(RATIO_FORMS)}, got {name!r}") from None


def _clipped_terms(
    ratio: torch.Tensor, rewards: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u = rho r, A = min(u, clip(rho) r), u - A)``; ``u - A > 0`` exactly where the clip is active."""
    unclipped = ratio * rewards
    adv = torch.minimum(unclipped, ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps).mul_(rewards))
    return unclipped, adv, unclipped - adv


@register_ratio_form("published")
def published_ratio_form(
    policy_logprobs: torch.Tensor, ratio: torch.Tensor, rewards: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RLMEC.md: per-token loss ``-A_t log pi(y_t)`` with ``A_t`` a constant; gradient ``-A_t``.

    Where the clip is active the gradient is ``-clip(rho) r`` (a truncated importance weight).
    """
    _, adv, gap = _clipped_terms(ratio, rewards, clip_eps)
    rl_sum = torch.dot(adv.reshape(-1), policy_logprobs.reshape(-1)).neg_()
    # (sign of a float tensor and a float sum: bool comparisons are several times slower on CPU)
    return rl_sum, adv.neg_(), gap.sign_().sum()


@register_ratio_form("ppo")
def ppo_ratio_form(
    policy_logprobs: torch.Tensor, ratio: torch.Tensor, rewards: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Textbook PPO-clip: per-token loss ``-min(rho r, clip(rho) r)`` with ``rho`` carrying gradient.

    Gradient w.r.t. ``log pi``: ``-rho r`` where the clip is inactive, 0 where it is active (the clamp
    passes no gradient outside ``[1 - eps, 1 + eps]``; at the boundary both terms are equal and the clip
    counts as inactive, matching ``torch.clamp``'s inclusive gradient).
    """
    unclipped, adv, gap = _clipped_terms(ratio, rewards, clip_eps)
    active = gap > 0
    return adv.sum().neg_(), unclipped.neg_().masked_fill_(active, 0.0), active.sum()


# ------------------------------------------------------------------------------------------------
# the loss
# ------------------------------------------------------------------------------------------------
def _check_inputs(tensors: dict[str, torch.Tensor]) -> None:
    """Type/shape checks that need no device sync (values are checked with the forward's one sync)."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    shape_y = tensors["policy_logprobs"].shape
    for name in ("old_logprobs", "rewards"):
        if tensors[name].shape != shape_y:
            raise ValueError(f"{name} has shape {tuple(tensors[name].shape)} but policy_logprobs has {tuple(shape_y)}")
    shape_z = tensors["imitation_logprobs"].shape
    if tensors["imitation_weights"].shape != shape_z:
        raise ValueError(
            f"imitation_weights has shape {tuple(tensors['imitation_weights'].shape)} "
            f"but imitation_logprobs has {tuple(shape_z)}"
        )
    if shape_z[0] != shape_y[0]:
        raise ValueError(f"imitation_logprobs has batch size {shape_z[0]} but policy_logprobs has {shape_y[0]}")


def _raise_for_bad_values(tensors: dict[str, torch.Tensor]) -> None:
    """Slow path after a non-finite statistic: name the argument holding NaN/inf."""
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
    raise ValueError("the loss overflowed (all inputs are finite but their sums are not)")


def _forward_no_grad(
    policy_logprobs: torch.Tensor,
    imitation_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    weights: torch.Tensor,
    clip_eps: float,
    imitation_coef: float,
    form: RatioForm,
    named: dict[str, torch.Tensor],
    denominators: tuple[float, float] | None = None,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Everything but the graph: ``(stats, dL/d policy_logprobs [B*T], dL/d imitation_logprobs [B*U])``.

    Runs under ``torch.no_grad``; every statistic and every value check comes from one small vector
    read back with one ``tolist()`` (one device sync).
    """
    dtype = torch.promote_types(policy_logprobs.dtype, torch.float32)
    lp = policy_logprobs.detach().to(dtype).reshape(-1)
    lpz = imitation_logprobs.detach().to(dtype).reshape(-1)
    r = rewards.to(dtype).reshape(-1)
    w = weights.to(dtype).reshape(-1)

    log_ratio = lp - old_logprobs.to(dtype).reshape(-1)
    ratio = torch.exp(log_ratio)
    reward_mask = torch.sign(r).abs_()  # 1.0 where r != 0 (NaN for NaN)
    rl_sum, grad_coef, n_active = form(lp, ratio, r, clip_eps)
    # Every value check rides on these sums: a NaN/inf entry of any argument makes one of them
    # non-finite (torch.dot multiplies every pair, so 0 * inf = NaN shows up too).
    sums = torch.stack(
        [
            rl_sum,  # policy_logprobs, old_logprobs (through ratio), rewards
            torch.dot(ratio, reward_mask),
            torch.dot(log_ratio, reward_mask),  # old_logprobs where the ratio underflows to 0
            reward_mask.sum(),
            n_active.to(dtype),
            torch.dot(w, lpz),  # imitation_logprobs, imitation_weights
            torch.sign(w).sum(),  # = #{w != 0} once w >= 0 is checked
            torch.amin(w),
        ]
    )
    rl_value, ratio_sum_m, log_ratio_sum_m, n_r_f, n_active_f, ir_dot, n_w_f, w_min = sums.tolist()
    if not all(math.isfinite(v) for v in (rl_value, log_ratio_sum_m, n_r_f, ir_dot, w_min)):
        _raise_for_bad_values(named)
    if w_min < 0:
        raise ValueError(f"imitation_weights contains negative weights (min {w_min:.6g})")

    n_r, n_w = int(n_r_f), int(n_w_f)
    d_r, d_w = (max(n_r, 1), max(n_w, 1)) if denominators is None else denominators
    loss_rl = rl_value / d_r
    loss_ir = -ir_dot / d_w
    stats: dict[str, float] = {
        "loss": loss_rl + imitation_coef * loss_ir,
        "loss_rl": loss_rl,
        "loss_ir": loss_ir,
        "clip_frac": n_active_f / n_r if n_r else 0.0,
        "ratio_mean": ratio_sum_m / n_r if n_r else 1.0,
        "approx_kl": (ratio_sum_m - n_r - log_ratio_sum_m) / n_r if n_r else 0.0,
        "n_reward_tokens": n_r,
        "n_imitation_tokens": n_w,
    }
    grad_y = grad_coef.mul_(1.0 / d_r)
    grad_z = w * (-imitation_coef / d_w)
    return stats, grad_y, grad_z


def rlmec_loss(
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
    """The RLMEC loss ``L = L_RL + imitation_coef * L_IR`` of one batch (RLMEC.md stage 6).

    Args:
        policy_logprobs: ``[B, T]`` ``log pi_theta(y_t | x, y_<t)``, carries gradient.
        old_logprobs: ``[B, T]`` ``l_t = log pi_old(y_t | x, y_<t)`` (a constant).
        rewards: ``[B, T]`` token rewards ``r_t`` (a constant); 0 on padding and on unrewarded tokens.
        imitation_logprobs: ``[B, U]`` ``log pi_theta(z_j | x, z_<j)``, carries gradient.
        imitation_weights: ``[B, U]`` weights ``w_j >= 0`` (a constant); 0 on padding.
        clip_eps: ``eps`` of the ratio clip, in ``[0, 1)``.
        imitation_coef: ``lambda``, finite and ``>= 0``.
        ratio_form: a name in :data:`RATIO_FORMS`: ``"published"`` (default) or ``"ppo"``.
        denominators: ``(d_r, d_w)`` replacing ``max(n_r, 1)`` and ``max(n_w, 1)`` (both > 0). Data-parallel
            training passes the global batch's counts divided by the processes
            (:func:`rlmec_core.train.dist.global_denominators`), so that the gradients averaged over the
            processes equal one process's gradient on the whole batch. None: this batch's own counts.

    Every entry must be finite, padding included (``token_logprobs`` puts 0 there). Computation is in
    float32 (float64 if the inputs are float64); gradients come back in the inputs' dtypes.
    Everything except the graph is computed without gradient, including the analytic gradients
    ``g_t = dL/d log pi(y_t) = coef_t / max(n_r, 1)`` (``coef_t = -A_t`` for ``"published"``) and
    ``h_j = dL/d log pi(z_j) = -lambda w_j / max(n_w, 1)``; the returned graph is the linear surrogate
    ``sum_t g_t log pi(y_t) + sum_j h_j log pi(z_j)`` shifted by a constant to the exact value ``L``
    (so first derivatives are exact; second derivatives are zero). The call reads one small vector
    back from the device (one sync), which gives every statistic and every value check.

    Returns:
        ``(loss, stats)``: ``loss`` is a 0-dim tensor (float32, or float64 for float64 inputs) with
        gradient to ``policy_logprobs`` and ``imitation_logprobs``; ``stats`` is a dict of Python numbers:

        - ``loss``, ``loss_rl``, ``loss_ir`` (float): ``L``, ``L_RL`` (value of the chosen form; for
          ``"ppo"`` the clipped surrogate ``-sum min(rho r, clip(rho) r) / n_r``) and ``L_IR``
          (not multiplied by ``imitation_coef``);
        - ``clip_frac`` (float): fraction of reward tokens (``r_t != 0``) where the clip is active,
          ``clip(rho) r < rho r`` (the tokens where the two forms differ);
        - ``ratio_mean`` (float): mean ``rho_t`` over reward tokens;
        - ``approx_kl`` (float): mean of ``(rho_t - 1) - log rho_t`` over reward tokens, a non-negative
          estimate of ``KL(pi_old || pi_theta)`` (Schulman's k3);
        - ``n_reward_tokens``, ``n_imitation_tokens`` (int): ``n_r = #{t : r_t != 0}`` and
          ``n_w = #{j : w_j != 0}`` over the batch.

        No-reward batch: if ``n_r = 0`` then ``L_RL = 0`` (empty sum, denominator clamped to 1), and
        ``clip_frac = 0``, ``ratio_mean = 1``, ``approx_kl = 0``; if ``n_w = 0`` then ``L_IR = 0``. The loss
        is still connected to both inputs, with zero gradient. Never NaN.

    Raises:
        ValueError: an argument is not a non-empty 2-D floating tensor, the shapes disagree
        (``[B, T]`` x3, ``[B, U]`` x2, same ``B``), an entry is NaN/inf, a weight is negative, ``clip_eps`` /
        ``imitation_coef`` are out of range, or ``ratio_form`` is unknown (the message names the argument).
    """
    named = {
        "policy_logprobs": policy_logprobs,
        "old_logprobs": old_logprobs,
        "rewards": rewards,
        "imitation_logprobs": imitation_logprobs,
        "imitation_weights": imitation_weights,
    }
    _check_inputs(named)
    if not (0.0 <= float(clip_eps) < 1.0):
        raise ValueError(f"clip_eps must be in [0, 1), got {clip_eps!r}")
    if not (0.0 <= float(imitation_coef) < math.inf):
        raise ValueError(f"imitation_coef must be finite and >= 0, got {imitation_coef!r}")
    form = get_ratio_form(ratio_form)
    if denominators is not None:
        denominators = (float(denominators[0]), float(denominators[1]))
        if not all(0.0 < d < math.inf for d in denominators):
            raise ValueError(f"denominators must be finite and > 0, got {denominators!r}")
    with torch.no_grad():
        stats, grad_y, grad_z = _forward_no_grad(
            policy_logprobs,
            imitation_logprobs,
            old_logprobs.detach(),
            rewards.detach(),
            imitation_weights.detach(),
            float(clip_eps),
            float(imitation_coef),
            form,
            named,
            denominators,
        )
    # The graph: a linear surrogate whose gradient is the analytic one, shifted to the exact value.
    lp = policy_logprobs.reshape(-1).to(grad_y.dtype)
    lpz = imitation_logprobs.reshape(-1).to(grad_z.dtype)
    surrogate = torch.dot(grad_y, lp) + torch.dot(grad_z, lpz)
    loss = surrogate + (stats["loss"] - surrogate.detach())
    return loss, stats
