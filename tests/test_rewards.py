"""Tests of rlmec_core.rewards: token rewards, per-step sums, instance-level broadcast."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmec_core.rewards import sequence_rewards_to_tokens, step_reward_sums, token_rewards
from rlmec_core.tasks.base import TaskAdapter


def _ref(p: float, correct: bool) -> float:
    """RLMEC.md stage 5 for one token."""
    return min(max(p - 0.5, 0.0), 0.5) if correct else min(max(p - 0.5, -0.1), 0.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=300), st.booleans())
def test_token_rewards_formula(probs: list[float], correct: bool) -> None:
    expected = [_ref(p, correct) for p in probs]
    out = token_rewards(probs, correct)
    assert isinstance(out, list) and out == pytest.approx(expected, abs=1e-12)
    arr = token_rewards(np.array(probs), correct)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64
    np.testing.assert_allclose(arr, expected, atol=1e-12)
    ten = token_rewards(torch.tensor(probs, dtype=torch.float64), correct)
    assert isinstance(ten, torch.Tensor) and ten.dtype == torch.float64
    np.testing.assert_allclose(ten.numpy(), expected, atol=1e-12)
    # signs: correct solutions never get a negative reward, incorrect ones never a positive one
    assert all(r >= 0 for r in out) if correct else all(r <= 0 for r in out)


def test_token_rewards_hand_made() -> None:
    assert token_rewards([0.9, 0.5, 0.2, 1.0, 0.0], True) == pytest.approx([0.4, 0.0, 0.0, 0.5, 0.0])
    assert token_rewards([0.9, 0.5, 0.45, 0.0], False) == pytest.approx([0.0, 0.0, -0.05, -0.1])
    assert token_rewards([0.9], True, pos_clip=(0.0, 0.2)) == pytest.approx([0.2])
    assert token_rewards([0.0], False, neg_clip=(-0.3, 0.0)) == pytest.approx([-0.3])
    # kinds and dtypes are kept
    t32 = token_rewards(torch.tensor([[0.9, 0.1]], dtype=torch.float32), False)
    assert t32.dtype == torch.float32 and t32.shape == (1, 2)
    a32 = token_rewards(np.array([0.9, 0.1], dtype=np.float32), True)
    assert a32.dtype == np.float32
    assert token_rewards(np.array([1, 0]), True).dtype == np.float64  # integer input -> float
    assert token_rewards((0.75,), np.bool_(True)) == [0.25]


@pytest.mark.parametrize(
    ("probs", "correct", "kwargs", "message"),
    [
        ([], True, {}, "probs is empty"),
        (np.array([]), True, {}, "probs is empty"),
        (torch.tensor([]), False, {}, "probs is empty"),
        ([0.5, float("nan")], True, {}, "probs contains NaN"),
        (torch.tensor([float("inf")]), True, {}, "probs contains NaN or inf"),
        ([1.2], True, {}, r"probs must lie in \[0, 1\]"),
        (torch.tensor([-0.1]), False, {}, r"probs must lie in \[0, 1\]"),
        (["a"], True, {}, "probs must be numeric"),
        ("0.5", True, {}, "probs must be numeric"),
        ([[0.5, 0.5]], True, {}, "probs as a sequence must be flat"),
        ([0.5], 1, {}, "correct must be a bool"),
        ([0.5], None, {}, "correct must be a bool"),
        ([0.5], True, {"pos_clip": (0.5, 0.0)}, "pos_clip"),
        ([0.5], True, {"neg_clip": (0.0,)}, "neg_clip"),
    ],
)
def test_token_rewards_bad_input(probs: object, correct: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        token_rewards(probs, correct, **kwargs)  # type: ignore[arg-type]


class _Adapter(TaskAdapter):
    name = "test"

    def extract_answer(self, text: str) -> str | None:
        return None

    def answers_match(self, pred_answer: str, gold_answer: str) -> bool:
        return False

    def problem_from_record(self, record, where):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


def test_step_reward_sums_hand_made() -> None:
    tokens = ["Step", " one", ".\n", "\n", "  ", "x", " =", " 2", "\n", "\n3", " apples", "\n"]
    rewards = [0.1, 0.2, 0.3, 1.0, 2.0, -0.1, -0.2, -0.3, 5.0, 0.5, 0.25, 7.0]
    sums = step_reward_sums(tokens, rewards)
    text = "".join(tokens)
    assert len(sums) == len(_Adapter().split_steps(text)) == 3
    # step 0: Step one .\n and the whitespace-only "\n", "  " that follow it
    assert sums[0] == pytest.approx(0.1 + 0.2 + 0.3 + 1.0 + 2.0)
    # step 1: "x = 2" and its trailing "\n"
    assert sums[1] == pytest.approx(-0.1 - 0.2 - 0.3 + 5.0)
    # step 2: "\n3" belongs to the line of "3"
    assert sums[2] == pytest.approx(0.5 + 0.25 + 7.0)
    assert sum(sums) == pytest.approx(sum(rewards))


def test_step_reward_sums_edge_cases() -> None:
    # leading whitespace-only tokens go to step 0; tensors and arrays are accepted
    assert step_reward_sums(["\n", " a", "b"], torch.tensor([1.0, 2.0, 3.0])) == pytest.approx([6.0])
    assert step_reward_sums(["a\nb"], np.array([1.5])) == pytest.approx([1.5, 0.0])
    assert step_reward_sums(["\n", " "], [1.0, 2.0]) == []
    assert step_reward_sums(["a\r\nb"], [1.0]) == pytest.approx([1.0, 0.0])  # same line rule as split_steps


@pytest.mark.parametrize(
    ("tokens", "rewards", "message"),
    [
        ([], [], "tokens is empty"),
        ("abc", [1.0, 2.0, 3.0], "tokens must be a sequence"),
        (["a", 3], [1.0, 2.0], r"tokens\[1\]"),
        (["a", "b"], [1.0], "rewards has 1 values but tokens has 2"),
        (["a"], [[1.0]], "rewards must be 1-D"),
        (["a"], [math.nan], "rewards contains NaN"),
    ],
)
def test_step_reward_sums_bad_input(tokens: object, rewards: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step_reward_sums(tokens, rewards)  # type: ignore[arg-type]


def test_sequence_rewards_to_tokens() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    out = sequence_rewards_to_tokens([1.0, -1.0, 2.0], mask)
    expected = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, -1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    out64 = sequence_rewards_to_tokens(torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), mask.bool())
    assert out64.dtype == torch.float64
    assert out64[1].abs().sum() == 0  # a zero reward gives no reward token


@pytest.mark.parametrize(
    ("seq", "mask", "message"),
    [
        ([1.0], torch.ones(3), "mask must be a 2-D"),
        ([1.0], torch.ones(0, 3), "mask is empty"),
        ([1.0, 2.0], torch.ones(1, 3), r"seq_rewards must have shape \[B\]"),
        ([math.inf], torch.ones(1, 3), "seq_rewards contains NaN or inf"),
        ([1.0], torch.full((1, 3), 2), "mask must be bool or hold only 0 and 1"),
    ],
)
def test_sequence_rewards_to_tokens_bad_input(seq: object, mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequence_rewards_to_tokens(seq, mask)
