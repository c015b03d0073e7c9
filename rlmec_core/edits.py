"""Minimum-edit (Levenshtein) alignment of token-id sequences and the imitation weights derived from it.

RLMEC.md stage 5: a wrong solution ``y`` (``original_ids``) and its minimal-edit rewrite ``z``
(``rewrite_ids``) are aligned token by token; every token of ``z`` that the alignment inserts or
substitutes is an *edited* token and gets the weight ``changed`` (1.0) in the imitation regulariser,
every token of ``z`` matched unchanged gets ``kept`` (0.5). Stage 2 records the edit distance and
the edit ratio ``d / max(|y|, |z|)``.

The alignment runs in C (``rapidfuzz.distance.Levenshtein``, unit costs for insertion, deletion and
substitution); the O(nm) Python DP of the published code lives only in ``tests/naive.py``.

Empty inputs: ``align`` and ``edit_ratio`` accept empty sequences (the edit distance is total, so a
degenerate sample still gets a recorded distance: ``align([], z)`` is ``len(z)`` insertions, two empty
sequences have distance 0 and ``edit_ratio`` 0.0). ``imitation_weights`` raises ``ValueError`` for an
empty ``rewrite_ids``: there would be no imitation target, and an empty weight list would silently
drop the sample from the regulariser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rapidfuzz.distance import Levenshtein

__all__ = ["Alignment", "align", "edit_ratio", "imitation_weights"]

TokenIds = Sequence[int] | np.ndarray | Any  # also a 1-D integer torch.Tensor
OpTag = Literal["equal", "replace", "insert", "delete"]


@dataclass(frozen=True)
class Alignment:
    """A minimum edit alignment of ``original`` (length ``n``) into ``rewrite`` (length ``m``).

    Attributes:
        distance: the Levenshtein distance (unit costs) ``= insertions + deletions + substitutions``.
        insertions: tokens of the rewrite with no counterpart in the original.
        deletions: tokens of the original with no counterpart in the rewrite.
        substitutions: aligned pairs whose tokens differ.
        original_len: ``n``.  rewrite_len: ``m``.
        opcodes: difflib-style blocks ``(tag, i1, i2, j1, j2)``, ``tag`` in ``equal``/``replace``/
            ``insert``/``delete``, meaning ``original[i1:i2]`` becomes ``rewrite[j1:j2]``; the blocks
            cover both sequences in order.  ``replace`` blocks have ``i2 - i1 == j2 - j1``.
        rewrite_ops: one tag per rewrite token (length ``m``): ``equal``, ``replace`` or ``insert``.
        original_ops: one tag per original token (length ``n``): ``equal``, ``replace`` or ``delete``.

    When several alignments have the minimum cost, the one rapidfuzz's backtrace picks is returned:
    ``distance`` is unique, the split into operations need not be (``[2, 3] -> [3, 4]`` is two
    substitutions here, where a match-first DP such as the published code's would delete ``2``, keep
    ``3`` and insert ``4``; both cost 2).
    """

    distance: int
    insertions: int
    deletions: int
    substitutions: int
    original_len: int
    rewrite_len: int
    opcodes: tuple[tuple[OpTag, int, int, int, int], ...]
    rewrite_ops: tuple[OpTag, ...]
    original_ops: tuple[OpTag, ...]

    @property
    def matches(self) -> int:
        """Aligned pairs of equal tokens (``m - insertions - substitutions``)."""
        return self.rewrite_len - self.insertions - self.substitutions

    @property
    def edit_ratio(self) -> float:
        """``distance / max(n, m)``; 0.0 when both sequences are empty."""
        longest = max(self.original_len, self.rewrite_len)
        return self.distance / longest if longest else 0.0

    @property
    def rewrite_changed(self) -> tuple[bool, ...]:
        """Per rewrite token: True if inserted or substituted (length ``m``)."""
        return tuple(op != "equal" for op in self.rewrite_ops)


def _as_id_list(ids: TokenIds, name: str) -> list[int]:
    """A 1-D sequence of integer token ids as a list of Python ints (ValueError naming ``name``)."""
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of integer token ids, got {type(ids).__name__}")
    if hasattr(ids, "tolist") and hasattr(ids, "ndim"):  # numpy array or torch tensor
        if ids.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
        dtype = str(ids.dtype)
        if "int" not in dtype or "bool" in dtype:
            raise ValueError(f"{name} must hold integer token ids, got dtype {dtype}")
        return [int(x) for x in ids.tolist()]
    try:
        arr = np.asarray(ids)
    except (TypeError, ValueError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iu":  # the common case, at C speed
        return arr.tolist()
    try:  # slow path: empty input, ids beyond int64, or an error to locate
        out = list(ids)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a sequence of integer token ids, got {type(ids).__name__}") from None
    for i, x in enumerate(out):
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise ValueError(f"{name}[{i}] is {x!r} ({type(x).__name__}); token ids must be integers")
    return [int(x) for x in out]


def align(original_ids: TokenIds, rewrite_ids: TokenIds) -> Alignment:
    """Minimum edit (Levenshtein, unit costs) alignment of two token-id sequences.

    Args:
        original_ids: ``[n]`` token ids of the original solution ``y`` (list, 1-D numpy or torch ints).
        rewrite_ids: ``[m]`` token ids of the rewrite ``z``.

    Returns:
        An :class:`Alignment`: distance, operation counts, opcodes and per-token tags of both sides.
        Empty inputs are allowed: ``align([], z)`` is ``m`` insertions, two empty sequences give
        distance 0 and no opcodes.

    Raises:
        ValueError: an argument is not a 1-D sequence of integers (the message names it).
    """
    a = _as_id_list(original_ids, "original_ids")
    b = _as_id_list(rewrite_ids, "rewrite_ids")
    editops = Levenshtein.editops(a, b)
    rewrite_ops: list[OpTag] = ["equal"] * len(b)
    original_ops: list[OpTag] = ["equal"] * len(a)
    ins = dels = subs = 0
    for tag, i, j in editops.as_list():
        if tag == "replace":
            subs += 1
            rewrite_ops[j] = "replace"
            original_ops[i] = "replace"
        elif tag == "insert":
            ins += 1
            rewrite_ops[j] = "insert"
        else:  # delete
            dels += 1
            original_ops[i] = "delete"
    opcodes = tuple((tag, i1, i2, j1, j2) for tag, i1, i2, j1, j2 in editops.as_opcodes().as_list())
    return Alignment(
        distance=ins + dels + subs,
        insertions=ins,
        deletions=dels,
        substitutions=subs,
        original_len=len(a),
        rewrite_len=len(b),
        opcodes=opcodes,  # type: ignore[arg-type]
        rewrite_ops=tuple(rewrite_ops),
        original_ops=tuple(original_ops),
    )


def edit_ratio(original_ids: TokenIds, rewrite_ids: TokenIds) -> float:
    """Token edit ratio ``d(y, z) / max(|y|, |z|)`` in ``[0, 1]``.

    Args:
        original_ids: ``[n]`` token ids of ``y``.  rewrite_ids: ``[m]`` token ids of ``z``.

    Returns:
        The ratio; 0.0 when both sequences are empty (two identical sequences), 1.0 when exactly
        one is empty.
    """
    a = _as_id_list(original_ids, "original_ids")
    b = _as_id_list(rewrite_ids, "rewrite_ids")
    longest = max(len(a), len(b))
    return Levenshtein.distance(a, b) / longest if longest else 0.0


def imitation_weights(
    original_ids: TokenIds,
    rewrite_ids: TokenIds,
    changed: float = 1.0,
    kept: float = 0.5,
) -> list[float]:
    """Per-token weights ``w_j`` of the imitation target ``z`` (RLMEC.md stage 5).

    ``w_j = changed`` for tokens of ``z`` that the minimum edit alignment inserts or substitutes,
    ``w_j = kept`` for tokens of ``z`` matched unchanged. Identical sequences give all ``kept`` (the
    weights of a correct sample, whose target is ``y`` itself).

    Args:
        original_ids: ``[n]`` token ids of ``y`` (may be empty: then every weight is ``changed``).
        rewrite_ids: ``[m]`` token ids of ``z``, ``m >= 1``.
        changed: weight of edited tokens (finite, >= 0).
        kept: weight of kept tokens (finite, >= 0).

    Returns:
        ``m`` floats, one per token of ``rewrite_ids``; the number equal to ``changed`` (when
        ``changed != kept``) is ``insertions + substitutions`` of :func:`align`.

    Raises:
        ValueError: ``rewrite_ids`` is empty, an argument is not a 1-D integer sequence, or a weight is
        negative or not finite (the message names the argument).
    """
    for name, value in (("changed", changed), ("kept", kept)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative weight, got {value!r}")
    a = _as_id_list(original_ids, "original_ids")
    b = _as_id_list(rewrite_ids, "rewrite_ids")
    if not b:
        raise ValueError("rewrite_ids is empty: there is no imitation target to weight")
    weights = [float(kept)] * len(b)
    for tag, _i, j in Levenshtein.editops(a, b).as_list():
        if tag != "delete":  # insert or replace: the rewrite token at j was edited
            weights[j] = float(changed)
    return weights
