"""Math answers shared by every math adapter: pull the final answer out of a solution, normalise it,
and decide equivalence with `math-verify <https://github.com/huggingface/Math-Verify>`_.

``math-verify`` guards its work with ``signal.alarm`` timeouts, which raise ``ValueError`` outside the
main thread. We call it with the timeouts disabled (``parsing_timeout=None``, ``timeout_seconds=None``)
so that everything here is safe to use from worker threads. Parsing never evaluates (sympy
``evaluate=False``) and is fast; ``verify`` can run forever on answers such as ``2^{2^{2^{2^{2^2}}}}``
or ``100000000!``, so before verifying we reject answers whose value would have more than
``_MAX_DIGITS`` digits (``_too_big``) and answers longer than ``_MAX_CHARS`` characters.
"""

from __future__ import annotations

import math
import re

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rlmec_core.tasks.base import TaskAdapter

__all__ = ["MathTask", "extract_math_answer", "math_equal", "normalize_math_answer", "parse_gold"]

_MAX_CHARS = 256  # longer "answers" are not final answers; never hand them to sympy
_MAX_DIGITS = 100_000  # verify() on a number with more digits than this takes seconds to forever

_LATEX = [LatexExtractionConfig()]
_EXPR = [ExprExtractionConfig()]

# -- extraction ------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_NUMBER_IN_TEXT = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def _last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` with balanced braces, or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def _rest_of_line(text: str, pos: int) -> str:
    return text[pos:].split("\n", 1)[0].strip()


def extract_math_answer(text: str) -> str | None:
    """The final answer stated in a solution text, as the raw span (``$18.00``, ``18 dollars``, ``1,234``).

    In order of priority: the contents of the last ``\\boxed{...}``; the rest of the line after the last
    ``The answer is`` (case-insensitive; a leading ``:`` and trailing periods dropped); the rest of the
    line after the last ``####``; the last number in the text. None when there is none of these.
    """
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        ans = _rest_of_line(text, matches[-1].end()).lstrip(":").strip().rstrip(".").strip()
        if ans:
            return ans
    hashes = text.rfind("####")
    if hashes != -1:
        ans = _rest_of_line(text, hashes + 4)
        if ans:
            return ans
    numbers = _NUMBER_IN_TEXT.findall(text)
    return numbers[-1] if numbers else None


# -- normalisation ---------------------------------------------------------------------------------

_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox|boxed|fbox)\s*\{([^{}]*)\}")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_NUMBER_THEN_WORDS = re.compile(rf"({_NUM}(?:/\d+)?)(?:\s+[A-Za-z]|\s*°).*", re.DOTALL)
_LEADING_NUMBER = re.compile(rf"\s*{_NUM}")
_LATEX_DIGIT_GROUP = re.compile(r"\{,\}|(?<=\d)\\,(?=\d{3}(?!\d))")  # 1{,}234 and 1\,234 -> 1,234


def normalize_math_answer(ans: str) -> str:
    """A canonical text form of a (numeric) answer, for parsing and exact comparison.

    - ``\\text{..}``, ``\\textbf{..}``, ``\\mathrm{..}``, ``\\mbox{..}``, ``\\boxed{..}`` are unwrapped;
    - ``$``/``\\$`` (currency or math delimiters) and ``%``/``\\%`` (gold percentages are bare numbers)
      are removed, LaTeX spacing (``\\,`` ``\\!`` ``\\;`` ``\\:``) becomes a space, LaTeX digit-group
      separators (``1{,}234``, ``1\\,234``) become commas and the Unicode minus becomes ``-``;
    - ``... = 18`` keeps only the right-hand side when that starts with a number;
    - thousands separators go (``1,234,567`` -> ``1234567``; ``1,2`` is left alone);
    - words after a number go (``18 dollars`` -> ``18``, ``1/2 cup`` -> ``1/2``, ``30 °C`` -> ``30``);
    - surrounding whitespace and trailing periods go.
    """
    s = ans.strip().replace("\u2212", "-")
    for _ in range(5):  # nested wrappers, innermost first
        s, n = _WRAPPER.subn(r"\1", s)
        if not n:
            break
    s = _LATEX_DIGIT_GROUP.sub(",", s)
    for token in ("\\$", "$", "\\%", "%"):
        s = s.replace(token, "")
    for token in ("\\,", "\\!", "\\;", "\\:"):
        s = s.replace(token, " ")
    if "=" in s:
        rhs = s.rsplit("=", 1)[1]
        if _LEADING_NUMBER.match(rhs):
            s = rhs
    s = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s.strip().rstrip(".").strip())
    m = _NUMBER_THEN_WORDS.fullmatch(s)
    if m:
        s = m.group(1)
    return s.strip().rstrip(".").strip()


# -- parsing and equivalence -----------------------------------------------------------------------

_GROWTH_FUNCS = (
    sympy.factorial,
    sympy.factorial2,
    sympy.subfactorial,
    sympy.gamma,
    sympy.binomial,
    sympy.RisingFactorial,
    sympy.FallingFactorial,
)


def _log10_size(e: object) -> float:
    """A rough upper bound on log10 of the magnitude of ``e`` (inf when astronomically large).

    Computed from the expression tree with floats, never by evaluating it; symbols count as 1.
    """
    if isinstance(e, sympy.MatrixBase):
        return max((_log10_size(x) for x in e), default=0.0)
    if not isinstance(e, sympy.Basic):
        return 0.0
    if isinstance(e, sympy.Integer):
        return len(str(abs(int(e))))
    if isinstance(e, sympy.Rational):
        return max(len(str(abs(e.p))), len(str(e.q)))
    if isinstance(e, sympy.Float):  # parsed from at most _MAX_CHARS characters of text
        f = abs(float(e))
        return math.log10(f + 1.0) if math.isfinite(f) else float(_MAX_CHARS)
    if not e.args:
        return 1.0  # symbols, pi, E, I, oo, ...
    sizes = [_log10_size(a) for a in e.args]
    if isinstance(e, sympy.Mul):
        return sum(sizes)
    if isinstance(e, (sympy.Pow, sympy.exp)):
        base, expo = (sizes[0], sizes[1]) if isinstance(e, sympy.Pow) else (1.0, sizes[0])
        return math.inf if expo > 8 else max(base, 1.0) * 10.0**expo
    if isinstance(e, _GROWTH_FUNCS):
        n = max(sizes)
        return math.inf if n > 8 else 10.0**n * max(n, 1.0)
    return max(sizes) + math.log10(len(sizes))  # Add, functions, relations, sets, tuples


def _too_big(parsed: list[object]) -> bool:
    return any(_log10_size(p) > _MAX_DIGITS for p in parsed)


def _parse(ans: str) -> list[object]:
    """``math_verify.parse`` of a normalised answer: as LaTeX (inside ``$...$``), else as a plain
    expression (``2**3``); ``[]`` when neither works or the answer is too long or too big to verify."""
    if not ans or len(ans) > _MAX_CHARS:
        return []
    try:
        parsed = parse(f"${ans}$", extraction_config=_LATEX, parsing_timeout=None)
        if not parsed:
            parsed = parse(ans, extraction_config=_EXPR, parsing_timeout=None)
    except Exception:  # noqa: BLE001 - math-verify/sympy may raise anything on junk
        return []
    return [] if _too_big(parsed) else parsed


def parse_gold(gold: str) -> bool:
    """Whether a gold answer normalises and parses to a mathematical object ``math_equal`` can compare.

    Any expression counts (letters parse as symbols: ``x+1``); loaders of numeric tasks check the form
    of the number themselves.
    """
    return any(isinstance(p, (sympy.Basic, sympy.MatrixBase)) for p in _parse(normalize_math_answer(gold)))


def math_equal(pred: str, gold: str) -> bool:
    """Whether the predicted answer ``pred`` equals the gold answer ``gold`` mathematically.

    Both sides are normalised (``normalize_math_answer``); identical texts match at once, otherwise both
    are parsed and compared with ``math_verify.verify(gold, pred)`` (numbers within 6 decimal places,
    ``0.5`` = ``1/2``, symbolic equality). Thread-safe; never raises: junk input gives False.
    """
    try:
        p, g = normalize_math_answer(pred), normalize_math_answer(gold)
        if not p or not g:
            return False
        if p == g:
            return True
        gold_parsed, pred_parsed = _parse(g), _parse(p)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - a checker of model output must not crash the pipeline
        return False


class MathTask(TaskAdapter):
    """Base of the adapters whose answers are numbers or expressions (arith, GSM8K, SVAMP): answers are
    pulled out with ``extract_math_answer`` and compared with ``math_equal``; subclasses add a loader."""

    def extract_answer(self, text: str) -> str | None:
        return extract_math_answer(text)

    def answers_match(self, pred_answer: str, gold_answer: str) -> bool:
        return math_equal(pred_answer, gold_answer)
