"""Tests of rlmec_core.edits: the rapidfuzz alignment against the naive O(nm) DP, and imitation weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from naive import imitation_weights_dp, levenshtein_dp
from rlmec_core.edits import Alignment, align, edit_ratio, imitation_weights


@st.composite
def id_pairs(draw: st.DrawFn, max_len: int = 300) -> tuple[list[int], list[int]]:
    """Two token-id lists; a small alphabet or a derived rewrite so that matches and edits both occur."""
    vocab = draw(st.sampled_from([2, 5, 50, 32000]))
    ids = st.integers(0, vocab - 1)
    a = draw(st.lists(ids, max_size=max_len))
    if draw(st.booleans()):
        b = draw(st.lists(ids, max_size=max_len))
    else:  # a rewrite of a: a few random edits
        b = list(a)
        for _ in range(draw(st.integers(0, 12))):
            kind = draw(st.sampled_from(["ins", "del", "sub"]))
            pos = draw(st.integers(0, len(b)))
            if kind == "ins" and len(b) < max_len:
                b.insert(pos, draw(ids))
            elif kind == "del" and pos < len(b):
                del b[pos]
            elif kind == "sub" and pos < len(b):
                b[pos] = draw(ids)
    return a, b


def _check_consistent(al: Alignment, a: list[int], b: list[int]) -> None:
    """The alignment's opcodes rebuild b from a, with the counts and per-token tags it reports."""
    assert al.original_len == len(a) and al.rewrite_len == len(b)
    assert al.distance == al.insertions + al.deletions + al.substitutions
    assert len(al.rewrite_ops) == len(b) and len(al.original_ops) == len(a)
    rebuilt: list[int] = []
    cost = 0
    i_prev = j_prev = 0
    for tag, i1, i2, j1, j2 in al.opcodes:
        assert (i1, j1) == (i_prev, j_prev)  # blocks tile both sequences in order
        i_prev, j_prev = i2, j2
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
        elif tag == "replace":
            assert i2 - i1 == j2 - j1
            assert all(x != y for x, y in zip(a[i1:i2], b[j1:j2]))
            cost += i2 - i1
        elif tag == "insert":
            assert i1 == i2
            cost += j2 - j1
        else:
            assert tag == "delete" and j1 == j2
            cost += i2 - i1
        if tag != "delete":
            rebuilt.extend(b[j1:j2])
        for j in range(j1, j2):
            assert al.rewrite_ops[j] == tag
        for i in range(i1, i2):
            assert al.original_ops[i] == tag
    assert (i_prev, j_prev) == (len(a), len(b))
    assert rebuilt == b
    assert cost == al.distance
    assert al.rewrite_ops.count("insert") == al.insertions
    assert al.rewrite_ops.count("replace") == al.substitutions
    assert al.original_ops.count("delete") == al.deletions
    assert al.matches == al.rewrite_ops.count("equal") == al.original_ops.count("equal")


@settings(max_examples=60, deadline=None)
@given(id_pairs())
def test_align_matches_naive_dp(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    al = align(a, b)
    dist, ops = levenshtein_dp(a, b)
    assert al.distance == dist
    _check_consistent(al, a, b)
    # the DP's own alignment is optimal too: same cost, and its op counts satisfy the same identities
    assert sum(tag != "equal" for tag, _, _ in ops) == dist
    longest = max(len(a), len(b))
    assert edit_ratio(a, b) == pytest.approx(dist / longest if longest else 0.0)
    assert al.edit_ratio == pytest.approx(edit_ratio(a, b))


@settings(max_examples=60, deadline=None)
@given(id_pairs())
def test_changed_weights_count_insertions_and_substitutions(pair: tuple[list[int], list[int]]) -> None:
    a, b = pair
    if not b:
        with pytest.raises(ValueError, match="rewrite_ids"):
            imitation_weights(a, b)
        return
    w = imitation_weights(a, b)
    al = align(a, b)
    assert len(w) == len(b)
    assert w.count(1.0) == al.insertions + al.substitutions
    assert w.count(0.5) == al.matches
    assert w == [1.0 if op != "equal" else 0.5 for op in al.rewrite_ops]
    # the DP's alignment (a possibly different optimum) gives weights of the same kind and length
    w_dp = imitation_weights_dp(a, b)
    assert len(w_dp) == len(b) and set(w_dp) <= {0.5, 1.0}


def test_identical_sequences_are_all_kept() -> None:
    ids = [5, 9, 9, 2, 7]
    assert imitation_weights(ids, ids) == [0.5] * 5
    al = align(ids, ids)
    assert al.distance == 0 and al.opcodes == (("equal", 0, 5, 0, 5),)
    assert al.rewrite_changed == (False,) * 5
    assert edit_ratio(ids, ids) == 0.0


def test_hand_made_edits() -> None:
    # substitution in the middle
    al = align([1, 2, 3, 4], [1, 2, 9, 4])
    assert (al.distance, al.substitutions, al.insertions, al.deletions) == (1, 1, 0, 0)
    assert imitation_weights([1, 2, 3, 4], [1, 2, 9, 4]) == [0.5, 0.5, 1.0, 0.5]
    # pure insertion at the end (a continuation)
    assert imitation_weights([1, 2], [1, 2, 3, 4]) == [0.5, 0.5, 1.0, 1.0]
    assert align([1, 2], [1, 2, 3, 4]).insertions == 2
    # pure deletion: every rewrite token kept
    al = align([1, 2, 3], [1, 3])
    assert (al.distance, al.deletions) == (1, 1)
    assert imitation_weights([1, 2, 3], [1, 3]) == [0.5, 0.5]
    assert al.original_ops == ("equal", "delete", "equal")
    # custom weights
    assert imitation_weights([1, 2], [1, 3], changed=2.0, kept=0.0) == [0.0, 2.0]
    assert edit_ratio([1, 2, 3, 4], [1, 2, 9, 4]) == 0.25


def test_empty_sequences() -> None:
    both = align([], [])
    assert both.distance == 0 and both.opcodes == () and both.edit_ratio == 0.0
    assert edit_ratio([], []) == 0.0
    ins = align([], [4, 5])
    assert (ins.distance, ins.insertions) == (2, 2) and ins.rewrite_ops == ("insert", "insert")
    assert edit_ratio([], [4, 5]) == 1.0 and edit_ratio([4, 5], []) == 1.0
    assert imitation_weights([], [4, 5]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="rewrite_ids is empty"):
        imitation_weights([1, 2], [])


def test_array_and_tensor_inputs() -> None:
    a, b = [3, 1, 4, 1, 5], [3, 1, 5, 9]
    ref = align(a, b)
    assert align(np.array(a), np.array(b, dtype=np.int32)) == ref
    assert align(torch.tensor(a), torch.tensor(b)) == ref
    assert align(tuple(a), [np.int64(x) for x in b]) == ref
    assert imitation_weights(torch.tensor(a), np.array(b)) == imitation_weights(a, b)
    big = [150_000, 2**40]
    assert align(big, big).distance == 0


@pytest.mark.parametrize(
    ("original", "rewrite", "message"),
    [
        ("abc", [1], "original_ids"),
        ([1], [1.5], r"rewrite_ids\[0\]"),
        ([True], [1], r"original_ids\[0\]"),
        (np.zeros((2, 2), dtype=int), [1], "original_ids must be 1-D"),
        ([1], np.array([0.5]), "rewrite_ids must hold integer"),
        (None, [1], "original_ids"),
    ],
)
def test_bad_inputs_name_the_argument(original: object, rewrite: object, message: str) -> None:
    for fn in (align, edit_ratio, imitation_weights):
        with pytest.raises(ValueError, match=message):
            fn(original, rewrite)  # type: ignore[arg-type]


def test_bad_weights() -> None:
    with pytest.raises(ValueError, match="changed"):
        imitation_weights([1], [1], changed=float("nan"))
    with pytest.raises(ValueError, match="kept"):
        imitation_weights([1], [1], kept=-0.5)
