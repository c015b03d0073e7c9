"""Tests of rlmec_core.losses: rlmec_loss against the loop version of RLMEC.md, hand-made cases, helpers."""

from __future__ import annotations

import math

import pytest
import torch

from naive import rlmec_loss_loop
from rlmec_core.losses import (
    RATIO_FORMS,
    get_ratio_form,
    masked_mean,
    masked_sum,
    register_ratio_form,
    rlmec_loss,
)
from rlmec_core.rewards import sequence_rewards_to_tokens

EPS = 0.3


def _batch(seed: int, B: int = 4, T: int = 19, U: int = 13, dtype: torch.dtype = torch.float64) -> dict:
    """Random padded batch: ratios inside and outside the clip range, rewards of both signs and zeros."""
    g = torch.Generator().manual_seed(seed)
    len_y = torch.randint(1, T + 1, (B,), generator=g)
    len_z = torch.randint(1, U + 1, (B,), generator=g)
    len_y[0], len_z[0] = T, U  # one full row
    mask_y = torch.arange(T)[None] < len_y[:, None]
    mask_z = torch.arange(U)[None] < len_z[:, None]
    lp = -torch.rand(B, T, generator=g, dtype=dtype) * 4
    old = lp + torch.randn(B, T, generator=g, dtype=dtype) * 0.5  # ratios ~ exp(N(0, 0.5))
    correct = (torch.arange(B) % 2 == 0)[:, None]  # both kinds of rows
    p = torch.rand(B, T, generator=g, dtype=dtype)
    r = torch.where(correct, (p - 0.5).clamp(0, 0.5), (p - 0.5).clamp(-0.1, 0))
    r = torch.where(mask_y, r, 0.0)
    lp = torch.where(mask_y, lp, 0.0)
    old = torch.where(mask_y, old, 0.0)
    lpz = torch.where(mask_z, -torch.rand(B, U, generator=g, dtype=dtype) * 4, 0.0)
    w = torch.where(torch.rand(B, U, generator=g) < 0.3, 1.0, 0.5).to(dtype)
    w = torch.where(mask_z, w, 0.0)
    return {"policy_logprobs": lp, "old_logprobs": old, "rewards": r, "imitation_logprobs": lpz, "imitation_weights": w}


def _run(fn, batch: dict, **kwargs):  # type: ignore[no-untyped-def]
    lp = batch["policy_logprobs"].clone().requires_grad_()
    lpz = batch["imitation_logprobs"].clone().requires_grad_()
    loss, stats = fn(lp, batch["old_logprobs"], batch["rewards"], lpz, batch["imitation_weights"], **kwargs)
    loss.backward()
    return loss.detach(), stats, lp.grad, lpz.grad


def _assert_matches_loop(batch: dict, atol: float = 1e-10, **kwargs) -> dict:  # type: ignore[no-untyped-def]
    loss, stats, g_lp, g_lpz = _run(rlmec_loss, batch, **kwargs)
    ref_loss, ref_stats, ref_g_lp, ref_g_lpz = _run(rlmec_loss_loop, batch, **kwargs)
    torch.testing.assert_close(loss.double(), ref_loss.double(), atol=atol, rtol=atol)
    torch.testing.assert_close(g_lp.double(), ref_g_lp.double(), atol=atol, rtol=atol)
    torch.testing.assert_close(g_lpz.double(), ref_g_lpz.double(), atol=atol, rtol=atol)
    assert set(stats) == set(ref_stats)
    for key, value in ref_stats.items():
        assert stats[key] == pytest.approx(value, abs=max(atol, 1e-9)), key
    return stats


@pytest.mark.parametrize("ratio_form", ["published", "ppo"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_float64(seed: int, ratio_form: str) -> None:
    stats = _assert_matches_loop(_batch(seed), ratio_form=ratio_form)
    assert 0 < stats["clip_frac"] < 1  # the random batch exercises both branches


@pytest.mark.parametrize("ratio_form", ["published", "ppo"])
def test_matches_loop_float32_and_options(ratio_form: str) -> None:
    batch = _batch(7, B=4, T=29, U=31, dtype=torch.float32)
    _assert_matches_loop(batch, atol=1e-5, ratio_form=ratio_form, clip_eps=0.2, imitation_coef=0.3)
    _assert_matches_loop(batch, atol=1e-5, ratio_form=ratio_form, clip_eps=0.0, imitation_coef=0.0)


@pytest.mark.parametrize("ratio_form", ["published", "ppo"])
def test_data_parallel_denominators_match_the_loop_and_recombine(ratio_form: str) -> None:
    """Given denominators (the global counts / processes), each shard's loss and gradients match the loop, and
    the mean over shards equals the loss of the whole batch in one process."""
    batch = _batch(3, B=6)
    whole, whole_stats, g_lp, g_lpz = _run(rlmec_loss, batch, ratio_form=ratio_form)
    shards = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    d = (whole_stats["n_reward_tokens"] / 2, whole_stats["n_imitation_tokens"] / 2)
    losses, grads_lp, grads_lpz = [], [], []
    for shard in shards:
        _assert_matches_loop(shard, ratio_form=ratio_form, denominators=d)
        loss, _, glp, glpz = _run(rlmec_loss, shard, ratio_form=ratio_form, denominators=d)
        losses.append(loss)
        grads_lp.append(glp / 2)  # DDP averages the gradients of the two processes
        grads_lpz.append(glpz / 2)
    torch.testing.assert_close(sum(losses) / 2, whole)
    torch.testing.assert_close(torch.cat(grads_lp), g_lp)
    torch.testing.assert_close(torch.cat(grads_lpz), g_lpz)
    with pytest.raises(ValueError, match="denominators"):
        rlmec_loss(*batch.values(), denominators=(0.0, 1.0))


def test_instance_level_rewards_through_the_same_loss() -> None:
    batch = _batch(11)
    mask = batch["policy_logprobs"] != 0
    batch["rewards"] = sequence_rewards_to_tokens(torch.tensor([1.0, -1.0, 0.0, 0.5], dtype=torch.float64), mask)
    stats = _assert_matches_loop(batch)
    assert stats["n_reward_tokens"] == int(mask.sum() - mask[2].sum())


def _single(lp: list[float], old: list[float], r: list[float], ratio_form: str) -> tuple[float, list[float]]:
    """Loss and d loss / d policy_logprobs of one row with no imitation term."""
    lp_t = torch.tensor([lp], dtype=torch.float64, requires_grad=True)
    loss, _ = rlmec_loss(
        lp_t,
        torch.tensor([old], dtype=torch.float64),
        torch.tensor([r], dtype=torch.float64),
        torch.zeros(1, 1, dtype=torch.float64),
        torch.zeros(1, 1, dtype=torch.float64),
        ratio_form=ratio_form,
    )
    loss.backward()
    return float(loss.detach()), lp_t.grad[0].tolist()


@pytest.mark.parametrize("ratio_form", ["published", "ppo"])
def test_ratios_inside_clip_range(ratio_form: str) -> None:
    lp, r = [-1.0, -2.0, -0.5], [0.2, -0.05, 0.4]
    old = [x - math.log(q) for x, q in zip(lp, [1.0, 1.2, 0.8])]  # ratios 1, 1.2, 0.8
    loss, grad = _single(lp, old, r, ratio_form)
    ratios = [1.0, 1.2, 0.8]
    assert grad == pytest.approx([-q * ri / 3 for q, ri in zip(ratios, r)])  # both forms: -rho r / n_r
    if ratio_form == "published":
        assert loss == pytest.approx(-sum(q * ri * x for q, ri, x in zip(ratios, r, lp)) / 3)
    else:
        assert loss == pytest.approx(-sum(q * ri for q, ri in zip(ratios, r)) / 3)


@pytest.mark.parametrize(
    ("ratio", "reward", "clipped_value", "active"),
    [
        (2.0, 0.3, 1 + EPS, True),  # above the range, positive reward: clipped
        (2.0, -0.1, 2.0, False),  # above the range, negative reward: min picks rho r
        (0.5, 0.3, 0.5, False),  # below the range, positive reward: min picks rho r
        (0.5, -0.1, 1 - EPS, True),  # below the range, negative reward: clipped
    ],
)
def test_ratios_outside_clip_range(ratio: float, reward: float, clipped_value: float, active: bool) -> None:
    lp = -1.5
    old = lp - math.log(ratio)
    loss_pub, grad_pub = _single([lp], [old], [reward], "published")
    loss_ppo, grad_ppo = _single([lp], [old], [reward], "ppo")
    adv = clipped_value * reward  # A = min(rho r, clip(rho) r)
    assert loss_pub == pytest.approx(-adv * lp)
    assert grad_pub == pytest.approx([-adv])  # the published form passes gradient even when clipped
    assert loss_ppo == pytest.approx(-adv)
    assert grad_ppo == pytest.approx([0.0 if active else -ratio * reward])
    batch = [torch.tensor([[v]], dtype=torch.float64) for v in (lp, old, reward, 0.0, 0.0)]
    assert rlmec_loss(*batch)[1]["clip_frac"] == (1.0 if active else 0.0)


@pytest.mark.parametrize("ratio_form", ["published", "ppo"])
def test_no_reward_batch_is_defined(ratio_form: str) -> None:
    batch = _batch(3)
    batch["rewards"] = torch.zeros_like(batch["rewards"])
    loss, stats, g_lp, g_lpz = _run(rlmec_loss, batch, ratio_form=ratio_form)
    assert stats["loss_rl"] == 0.0 and stats["n_reward_tokens"] == 0
    assert (stats["clip_frac"], stats["ratio_mean"], stats["approx_kl"]) == (0.0, 1.0, 0.0)
    assert torch.all(g_lp == 0) and math.isfinite(float(loss))
    assert float(loss) == pytest.approx(stats["loss_ir"]) and stats["loss_ir"] > 0
    # nothing at all to learn from: loss 0, zero gradients, no NaN
    batch["imitation_weights"] = torch.zeros_like(batch["imitation_weights"])
    loss, stats, g_lp, g_lpz = _run(rlmec_loss, batch, ratio_form=ratio_form)
    assert float(loss) == 0.0 and stats["loss"] == 0.0 and stats["n_imitation_tokens"] == 0
    assert torch.all(g_lp == 0) and torch.all(g_lpz == 0)


def test_stats_are_python_numbers_and_consistent() -> None:
    batch = _batch(5)
    loss, stats = rlmec_loss(*batch.values())
    assert all(type(v) is float for k, v in stats.items() if not k.startswith("n_"))
    assert type(stats["n_reward_tokens"]) is int and type(stats["n_imitation_tokens"]) is int
    assert stats["loss"] == pytest.approx(float(loss))
    assert stats["loss"] == pytest.approx(stats["loss_rl"] + stats["loss_ir"])
    assert stats["n_reward_tokens"] == int((batch["rewards"] != 0).sum())
    assert stats["n_imitation_tokens"] == int((batch["imitation_weights"] != 0).sum())
    assert stats["approx_kl"] >= 0
    assert loss.dtype == torch.float64 and loss.dim() == 0


def test_low_precision_inputs() -> None:
    batch = {k: v.to(torch.bfloat16) for k, v in _batch(2).items()}
    loss, stats, g_lp, g_lpz = _run(rlmec_loss, batch)
    assert loss.dtype == torch.float32 and g_lp.dtype == torch.bfloat16 and g_lpz.dtype == torch.bfloat16
    ref = _run(rlmec_loss, {k: v.double() for k, v in batch.items()})
    assert float(loss) == pytest.approx(float(ref[0]), rel=1e-4)


def test_without_gradients() -> None:
    batch = _batch(1)
    with torch.no_grad():
        loss, stats = rlmec_loss(*batch.values())
    assert not loss.requires_grad and stats["loss"] == pytest.approx(float(loss))
    loss, _ = rlmec_loss(*batch.values())  # no input requires grad either
    assert not loss.requires_grad


def _bad(name: str, value: torch.Tensor) -> dict:
    batch = _batch(0)
    batch[name] = value
    return batch


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("policy_logprobs", lambda b: b[:, :-1], "old_logprobs has shape .* but policy_logprobs"),
        ("rewards", lambda b: b[:-1], "rewards has shape"),
        ("old_logprobs", lambda b: b[:, :5], "old_logprobs has shape"),
        ("imitation_weights", lambda b: b[:, :-2], "imitation_weights has shape"),
        ("imitation_logprobs", lambda b: b[:-1], "imitation_weights has shape"),
        ("policy_logprobs", lambda b: b[0], "policy_logprobs must be 2-D"),
        ("rewards", lambda b: b.long(), "rewards must be a floating-point tensor"),
        ("imitation_weights", lambda b: b.tolist(), "imitation_weights must be a torch.Tensor"),
        ("policy_logprobs", lambda b: b[:, :0], "policy_logprobs is empty"),
        ("policy_logprobs", lambda b: b.index_fill(1, torch.tensor([2]), math.nan), "policy_logprobs contains NaN"),
        ("old_logprobs", lambda b: b.index_fill(1, torch.tensor([3]), -math.inf), "old_logprobs contains NaN or inf"),
        ("rewards", lambda b: b.index_fill(1, torch.tensor([1]), math.nan), "rewards contains NaN"),
        ("rewards", lambda b: b.index_fill(1, torch.tensor([1]), math.inf), "rewards contains NaN or inf"),
        ("imitation_logprobs", lambda b: b.index_fill(1, torch.tensor([12]), -math.inf), "imitation_logprobs contains"),
        ("imitation_weights", lambda b: b.index_fill(1, torch.tensor([0]), math.inf), "imitation_weights contains"),
        ("imitation_weights", lambda b: b.index_fill(1, torch.tensor([0]), -1.0), "imitation_weights contains negative"),
    ],
)
def test_bad_inputs_name_the_argument(name: str, make, message: str) -> None:  # type: ignore[no-untyped-def]
    batch = _batch(0)
    batch[name] = make(batch[name])
    with pytest.raises(ValueError, match=message):
        rlmec_loss(*batch.values())


def test_nan_on_padding_is_still_rejected() -> None:
    batch = _batch(0)
    batch["policy_logprobs"][2, -1] = math.nan  # a padded position (rewards 0 there)
    with pytest.raises(ValueError, match="policy_logprobs contains NaN"):
        rlmec_loss(*batch.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_eps": -0.1}, "clip_eps"),
        ({"clip_eps": 1.0}, "clip_eps"),
        ({"imitation_coef": -1.0}, "imitation_coef"),
        ({"imitation_coef": math.nan}, "imitation_coef"),
        ({"ratio_form": "grpo"}, r"ratio_form must be one of \['ppo', 'published'"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rlmec_loss(*_batch(0).values(), **kwargs)


def test_ratio_form_registry() -> None:
    assert {"published", "ppo"} <= set(RATIO_FORMS)
    assert get_ratio_form("published") is RATIO_FORMS["published"]

    @register_ratio_form("test_unclipped")
    def unclipped(lp, ratio, rewards, clip_eps):  # type: ignore[no-untyped-def]
        coef = -(ratio * rewards)
        return torch.dot(coef.reshape(-1), lp.reshape(-1)), coef, torch.zeros((), dtype=lp.dtype)

    try:
        batch = _batch(4)
        loss_u, stats_u, g_u, _ = _run(rlmec_loss, batch, ratio_form="test_unclipped")
        _, _, g_pub, _ = _run(rlmec_loss, batch, clip_eps=0.999)
        assert stats_u["clip_frac"] == 0.0
        with pytest.raises(ValueError, match="already registered"):
            register_ratio_form("test_unclipped")(lambda *a: a)  # type: ignore[arg-type,return-value]
    finally:
        RATIO_FORMS.pop("test_unclipped")
    assert g_u.shape == g_pub.shape


def test_masked_helpers() -> None:
    x = torch.tensor([[1.0, 2.0, math.nan], [4.0, math.inf, 6.0]], requires_grad=True)
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert float(masked_sum(x, m).detach()) == 7.0
    assert float(masked_mean(x, m.bool()).detach()) == pytest.approx(7.0 / 3)
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_sum(x, m, dim=0), torch.tensor([5.0, 2.0, 0.0]))
    empty = torch.zeros_like(m)
    assert float(masked_mean(x, empty).detach()) == 0.0
    torch.testing.assert_close(masked_mean(x, m * torch.tensor([[1], [0]]), dim=1), torch.tensor([1.5, 0.0]))
    masked_mean(x, m).backward()
    torch.testing.assert_close(x.grad, torch.tensor([[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="mask has shape"):
        masked_mean(x, m[:, :2])
