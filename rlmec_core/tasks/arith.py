"""The embedded demo task: seeded multi-step arithmetic word problems with step-by-step solutions.

A problem is a start quantity followed by a chain of operations, each told by one sentence::

    Lena has 23 marbles. She finds 45 more marbles. She loses 12 marbles. How many marbles does Lena have now?

and its reference solution has one step per line, the last line stating the answer::

    23 + 45 = 68
    68 - 12 = 56
    The answer is 56

Every sentence comes from a small fixed grammar, so a question can be parsed back into its operations
(``parse_question``); the oracle teacher and the wrong-step analysis recompute each step from that.
Difficulty knobs live in ``ArithSpec`` (number of steps, operand ranges, operators, value cap).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.tasks.answers import MathTask
from rlmec_core.tasks.base import Problem

OPERATORS = ("+", "-", "*", "/")

_NAMES = (
    ("Lena", "She"), ("Omar", "He"), ("Mia", "She"), ("Ravi", "He"), ("Ana", "She"), ("Tom", "He"),
    ("Zoe", "She"), ("Ivan", "He"), ("Kira", "She"), ("Leo", "He"), ("Nora", "She"), ("Sam", "He"),
)
_ITEMS = ("marbles", "apples", "coins", "stickers", "books", "pencils", "shells", "cards", "stamps", "eggs")

# One sentence pattern per (operator, phrasing). "{p}" is the pronoun, "{b}" the operand, "{i}" the item.
_PHRASES: dict[str, tuple[str, ...]] = {
    "+": ("{p} finds {b} more.", "{p} buys {b} more.", "{p} gets {b} more."),
    "-": ("{p} loses {b}.", "{p} gives away {b}.", "{p} sells {b}."),
    "*": ("Then {p_low} has {b} times as many.",),
    "/": ("Then {p_low} keeps one of {b} equal shares.",),
}
_OPENING = "{name} has {a} {i}."
_QUESTION = "How many {i} does {name} have now?"
_ANSWER_LINE = "The answer is {x}"
# Wording styles of a solution: (prefix of its first step, prefix of every later step). A solution keeps
# one style throughout, and its first line tells which; only the arithmetic is judged.
STEP_STYLES: tuple[tuple[str, str], ...] = (("", ""), ("First, ", "Then "), ("We get ", "So "), ("Start with ", "Now "))


@dataclass(frozen=True)
class ArithSpec:
    """Difficulty knobs of the demo task (config ``task.synth``; same defaults as config/schema.yaml)."""

    min_steps: int = 2
    max_steps: int = 3
    operand_min: int = 2  # start value and +/- operands are drawn from [operand_min, operand_max]
    operand_max: int = 20
    mul_max: int = 5  # * and / operands are drawn from [2, mul_max]
    max_value: int = 60  # every intermediate result stays within [0, max_value]
    operators: tuple[str, ...] = field(default=("+", "-"))

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        if not 0 <= self.operand_min <= self.operand_max:
            raise ValueError(f"need 0 <= operand_min <= operand_max, got {self.operand_min}, {self.operand_max}")
        if self.operand_max > self.max_value:
            raise ValueError(f"operand_max ({self.operand_max}) must not exceed max_value ({self.max_value})")
        if self.mul_max < 2:
            raise ValueError(f"mul_max must be >= 2, got {self.mul_max}")
        unknown = set(self.operators) - set(OPERATORS)
        if not self.operators or unknown:
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {self.operators}")
        if "+" not in self.operators and "-" not in self.operators:
            raise ValueError("operators must include '+' or '-' (otherwise most chains have no valid step)")


@dataclass(frozen=True)
class Step:
    """One operation of a problem: ``left op operand = result``."""

    left: int
    op: str
    operand: int
    result: int

    def line(self) -> str:
        return f"{self.left} {self.op} {self.operand} = {self.result}"


def apply_op(left: int, op: str, operand: int) -> int:
    """The exact integer result of ``left op operand`` (division must be exact)."""
    if op == "+":
        return left + operand
    if op == "-":
        return left - operand
    if op == "*":
        return left * operand
    if op == "/":
        if operand == 0 or left % operand:
            raise ValueError(f"{left} / {operand} is not an exact division")
        return left // operand
    raise ValueError(f"unknown operator {op!r}")


def _valid_ops(value: int, spec: ArithSpec) -> list[tuple[str, list[int]]]:
    """Operators usable on ``value`` with the operands that keep the result in [0, max_value]."""
    choices: list[tuple[str, list[int]]] = []
    lo, hi = spec.operand_min, spec.operand_max
    for op in spec.operators:
        if op == "+":
            ops = list(range(max(lo, 1), min(hi, spec.max_value - value) + 1))
        elif op == "-":
            ops = list(range(max(lo, 1), min(hi, value) + 1))
        elif op == "*":
            ops = [b for b in range(2, spec.mul_max + 1) if value * b <= spec.max_value] if value > 0 else []
        else:  # "/"
            ops = [b for b in range(2, spec.mul_max + 1) if value > 0 and value % b == 0]
        if ops:
            choices.append((op, ops))
    return choices


def sample_chain(rng: random.Random, spec: ArithSpec) -> tuple[int, list[Step]]:
    """Draw a start value and a chain of steps that satisfies ``spec``."""
    n_steps = rng.randint(spec.min_steps, spec.max_steps)
    while True:  # retry the rare chain that dead-ends (no valid operator)
        value = rng.randint(max(spec.operand_min, 1), spec.operand_max)
        start, steps = value, []
        for _ in range(n_steps):
            choices = _valid_ops(value, spec)
            if not choices:
                break
            op, operands = rng.choice(choices)
            operand = rng.choice(operands)
            result = apply_op(value, op, operand)
            steps.append(Step(value, op, operand, result))
            value = result
        if len(steps) == n_steps:
            return start, steps


def render_question(rng: random.Random, start: int, steps: list[Step]) -> str:
    """The word-problem text for a chain (names, items and phrasings drawn from ``rng``)."""
    name, pronoun = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    parts = [_OPENING.format(name=name, a=start, i=item)]
    for step in steps:
        phrase = rng.choice(_PHRASES[step.op])
        parts.append(phrase.format(p=pronoun, p_low=pronoun.lower(), b=step.operand, i=item))
    parts.append(_QUESTION.format(i=item, name=name))
    return " ".join(parts)


def render_solution(steps: list[Step], rng: random.Random | None = None) -> str:
    """The reference solution: one ``a op b = c`` line per step, then ``The answer is c``.

    With ``rng``, the solution is worded in a style drawn from ``STEP_STYLES`` (``First, 23 + 45 = 68``,
    ``Then 68 - 12 = 56``), so that solutions to the same problem can be worded differently while their
    arithmetic is the same; without it, the bare equations.
    """
    first, rest = rng.choice(STEP_STYLES) if rng is not None else STEP_STYLES[0]
    lines = [(first if i == 0 else rest) + step.line() for i, step in enumerate(steps)]
    return "\n".join([*lines, answer_line(steps[-1].result)])


def answer_line(value: int) -> str:
    return _ANSWER_LINE.format(x=value)


_EQUATION = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)")
_ANSWER_RE = re.compile(r"^\s*The answer is (-?\d+)\s*$")


@dataclass(frozen=True)
class StepLine:
    """A solution line read back: its equation (if any) and where the equation sits in the text."""

    text: str
    equation: tuple[int, str, int, int] | None  # (left, op, operand, result)
    span: tuple[int, int] | None  # character span of the equation (or of the answer's number) in ``text``
    answer: int | None  # the value of a ``The answer is N`` line


def read_step_line(text: str) -> StepLine:
    """Find the equation ``a op b = c`` (anywhere in the line) or the ``The answer is N`` statement."""
    m = _EQUATION.search(text)
    if m:
        eq = (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))
        return StepLine(text, eq, m.span(), None)
    a = _ANSWER_RE.match(text)
    if a:
        return StepLine(text, None, a.span(1), int(a.group(1)))
    return StepLine(text, None, None, None)


# -- parsing questions back into operations (used by the oracle teacher and step checks) ------------
_NUM = r"(\d+)"
_PHRASE_PATTERNS: list[tuple[re.Pattern[str], str]] = []
for _op, _phrases in _PHRASES.items():
    for _ph in _phrases:
        _pat = re.escape(_ph).replace(re.escape("{b}"), _NUM)
        _pat = _pat.replace(re.escape("{p}"), r"(?:He|She)").replace(re.escape("{p_low}"), r"(?:he|she)")
        _pat = _pat.replace(re.escape("{i}"), r"[a-z]+")
        _PHRASE_PATTERNS.append((re.compile(_pat), _op))
_OPENING_RE = re.compile(r"^[A-Z][a-z]+ has (\d+) [a-z]+\.")


def parse_question(question: str) -> tuple[int, list[tuple[str, int]]]:
    """Recover ``(start, [(op, operand), ...])`` from a question made by ``render_question``.

    Raises ``ValueError`` when the text does not follow the demo grammar.
    """
    m = _OPENING_RE.match(question)
    if not m:
        raise ValueError(f"not a demo arithmetic question (no opening sentence): {question!r}")
    start = int(m.group(1))
    ops: list[tuple[str, int]] = []
    for sentence in re.split(r"(?<=\.)\s+", question[m.end():].strip()):
        if sentence.startswith("How many"):
            break
        for pattern, op in _PHRASE_PATTERNS:
            pm = pattern.fullmatch(sentence)
            if pm:
                ops.append((op, int(pm.group(1))))
                break
        else:
            raise ValueError(f"unrecognised sentence {sentence!r} in question {question!r}")
    return start, ops


def solve(start: int, ops: list[tuple[str, int]]) -> list[Step]:
    """The exact steps of a parsed problem."""
    steps, value = [], start
    for op, operand in ops:
        result = apply_op(value, op, operand)
        steps.append(Step(value, op, operand, result))
        value = result
    return steps


def generate_problems(
    n: int,
    seed: int,
    spec: ArithSpec,
    *,
    split: str,
    prefix: str = "arith",
    exclude: set[tuple[int, tuple[tuple[str, int], ...]]] | None = None,
) -> list[Problem]:
    """``n`` problems drawn with ``random.Random(seed)``: the same arguments always give the same problems.

    Chains in ``exclude`` (``(start, ((op, operand), ...))``) are redrawn, and every drawn chain is added
    to it, so that splits generated one after another share no arithmetic chain. Raises ``ValueError``
    when the spec's problem space is too small to draw ``n`` distinct chains.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen = exclude if exclude is not None else set()
    problems: list[Problem] = []
    misses = 0
    while len(problems) < n:
        start, steps = sample_chain(rng, spec)
        key = (start, tuple((s.op, s.operand) for s in steps))
        if key in seen:
            misses += 1
            if misses > 50 * (n + 100):
                raise ValueError(
                    f"could only draw {len(problems)} distinct problems of {n} for split {split!r}: "
                    f"widen task.synth (steps, operand ranges, operators)"
                )
            continue
        seen.add(key)
        problems.append(
            Problem(
                id=f"{prefix}-{split}-{len(problems):06d}",
                question=render_question(rng, start, steps),
                reference_solution=render_solution(steps, rng),
                answer=str(steps[-1].result),
                task="arith",
            )
        )
    return problems


@dataclass(frozen=True)
class Tier:
    """A second kind of problem mixed into every split: ``share`` of each split is drawn from ``spec``."""

    share: float
    spec: ArithSpec

    def __post_init__(self) -> None:
        if not 0 < self.share < 1:
            raise ValueError(f"a tier's share must be in (0, 1), got {self.share}")


def generate_splits(sizes: dict[str, int], seed: int, spec: ArithSpec, *, prefix: str = "arith",
                    tier: Tier | None = None) -> dict[str, list[Problem]]:
    """Disjoint splits: drawn in the order given (put test first), each with its own derived seed.

    With ``tier``, ``round(tier.share * n)`` problems of every split come from ``tier.spec`` and the rest from
    ``spec``, in a seeded random order (ids are numbered in that order); no arithmetic chain repeats across
    splits or tiers.
    """
    seen: set[tuple[int, tuple[tuple[str, int], ...]]] = set()
    splits: dict[str, list[Problem]] = {}
    for i, (split, n) in enumerate(sizes.items()):
        split_seed = seed * 1000 + i
        if tier is None:
            splits[split] = generate_problems(n, split_seed, spec, split=split, prefix=prefix, exclude=seen)
            continue
        n_tier = int(round(tier.share * n))
        mixed = (generate_problems(n - n_tier, split_seed, spec, split=split, prefix=prefix, exclude=seen)
                 + generate_problems(n_tier, split_seed + 500, tier.spec, split=split, prefix=prefix, exclude=seen))
        random.Random(split_seed).shuffle(mixed)
        splits[split] = [replace(p, id=f"{prefix}-{split}-{k:06d}") for k, p in enumerate(mixed)]
    return splits


def within_spec(question: str, spec: ArithSpec) -> bool:
    """Whether the problem of ``question`` is one ``spec`` can make: its operators, operands and every value
    within the spec's ranges (a problem of a harder tier can still be within the main spec by chance)."""
    start, ops = parse_question(question)
    if not spec.operand_min <= start <= spec.operand_max:
        return False
    for step in solve(start, ops):
        if step.op not in spec.operators or not 0 <= step.result <= spec.max_value:
            return False
        lo, hi = (spec.operand_min, spec.operand_max) if step.op in "+-" else (2, spec.mul_max)
        if not lo <= step.operand <= hi:
            return False
    return True


class ArithTask(MathTask):
    """Adapter of the embedded demo task (numeric answers, one step per line)."""

    name = "arith"

    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        raise DataError(f"{where}: the arith task has no source files; its data are generated from config task.synth")

    def load_source(self, path: str | Path, *, split: str) -> list[Problem]:
        raise DataError(
            f"{path}: the arith task has no source files; its data are generated from config task.synth"
        )
