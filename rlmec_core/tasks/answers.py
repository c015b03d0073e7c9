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

import functools
import math
import re

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rlmec_core.tasks.base import TaskAdapter

__all__ = [
    "MathTask",
    "brace_frac_arguments",
    "extract_math_answer",
    "is_math_object",
    "last_boxed",
    "latex_equal",
    "math_equal",
    "normalize_math_answer",
    "parse_gold",
    "parse_latex_answer",
    "strip_math_delimiters",
]

_MAX_CHARS = 256  # longer "answers" are not final answers; never hand them to sympy
_MAX_DIGITS = 100_000  # verify() on a number with more digits than this takes seconds to forever

_LATEX = [LatexExtractionConfig()]
_EXPR = [ExprExtractionConfig()]

# -- extraction ------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_NUMBER_IN_TEXT = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def _rest_of_line(text: str, pos: int) -> str:
    return text[pos:].split("\n", 1)[0].strip()


def extract_math_answer(text: str) -> str | None:
    """The final answer stated in a solution text, as the raw span (``$18.00``, ``18 dollars``, ``1,234``).

    In order of priority: the contents of the last ``\\boxed{...}``; the rest of the line after the last
    ``The answer is`` (case-insensitive; a leading ``:`` and trailing periods dropped); the rest of the
    line after the last ``####``; the last number in the text. None when there is none of these.
    """
    boxed = last_boxed(text, ("\\boxed",))
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


# -- LaTeX answers (competition math: MATH) ----------------------------------------------------------
#
# ``math_equal`` normalises an answer into a plain number before parsing, which suits GSM8K-style numeric
# answers but not competition answers: its thousands rule reads the ordered pair ``(1,234)`` as
# ``(1234)`` and its ``=`` rule reads ``a=2, b=3`` as ``3``. The functions below hand the answer's own
# LaTeX to math-verify instead, whose LaTeX normalisation already knows ``\dfrac``, ``\text{..}``
# units, ``^\circ``, ``\%``, ``\$``, ``1,\!000``, ``\left(..\right)``, intervals, sets, tuples and
# matrices, and ``x = 3`` against ``3``.

_BOX_COMMANDS: tuple[str, ...] = ("\\boxed", "\\fbox")
_LATEX_ANSWER_CHARS = 1_000  # competition answers (matrices, unions of intervals) are longer than numbers
_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _escaped(text: str, i: int) -> bool:
    """Whether ``text[i]`` is preceded by an odd number of backslashes (``\\{`` is an escaped brace,
    ``\\\\{`` a line break then a group)."""
    n = 0
    while i - n - 1 >= 0 and text[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _braced_group(text: str, i: int) -> int | None:
    """The index of the ``}`` closing the group that opens at ``text[i] == "{"`` (escaped braces
    ``\\{``/``\\}`` do not count), or None when it never closes."""
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c in "{}" and not _escaped(text, j):
            depth += 1 if c == "{" else -1
            if depth == 0:
                return j
    return None


def last_boxed(text: str, commands: tuple[str, ...] = _BOX_COMMANDS) -> str | None:
    """The contents (stripped) of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text`` whose braces
    balance, nested braces included (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``); None when there is
    none. A command without a brace group (``\\boxed 5``) or with an unclosed one is skipped, and so is
    a longer command that merely starts like one (``\\boxedx``)."""
    best: tuple[int, str] | None = None
    for command in commands:
        start = text.rfind(command)
        while start != -1:
            i = start + len(command)
            if i < len(text) and text[i].isalpha():  # \boxedfoo is another macro
                start = text.rfind(command, 0, start)
                continue
            while i < len(text) and text[i].isspace():
                i += 1
            end = _braced_group(text, i) if i < len(text) and text[i] == "{" else None
            if end is not None:
                if best is None or start > best[0]:
                    best = (start, text[i + 1 : end].strip())
                break
            start = text.rfind(command, 0, start)
    return best[1] if best is not None else None


def strip_math_delimiters(ans: str) -> str:
    """``ans`` without surrounding whitespace, trailing sentence punctuation (``.`` ``,`` ``;``) and one pair
    of enclosing math delimiters (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``); whitespace runs,
    newlines included, become one space. ``$\\frac12$.`` -> ``\\frac12``."""
    s = " ".join(ans.split())
    for _ in range(2):  # punctuation may sit inside or outside the delimiters: "$3.$" / "$3$."
        s = s.rstrip(".,;").strip()
        for left, right in _DELIMITERS:
            if len(s) < len(left) + len(right) or not (s.startswith(left) and s.endswith(right)):
                continue
            inner = s[len(left) : len(s) - len(right)]
            if _escaped(s, len(s) - len(right)) or "$" in inner.replace("\\$", ""):
                continue  # "\\$5" is money, "$x$ or $y$" two formulas
            s = inner.strip()
            break
    return s


_FRAC = re.compile(r"\\[dtc]?frac(?![A-Za-z])")
_CONTROL_SEQUENCE = re.compile(r"\\(?:[A-Za-z]+|.)")
# Digit grouping written with TeX spacing: "111, \\! 111", "1{,}000", "1\\,000" (a comma, optionally
# with spaces and a negative thin space, or a braced comma or a thin space, before exactly three digits).
_TEX_DIGIT_GROUP = re.compile(r"(?<=\d)(?:\s*,\s*\\!\s*|\{,\}|\\,)(?=\d{3}(?!\d))")
# A macro argument holding only a number with thousands separators ("\\frac{12}{5,525}"): no tuple there.
_BRACED_GROUPED_NUMBER = re.compile(r"(?<=[A-Za-z}])\{\s*(\d{1,3}(?:,\d{3})+(?:\.\d+)?)\s*\}")


def _macro_argument(s: str, i: int) -> tuple[str, int] | None:
    """The TeX argument starting at ``s[i]`` (spaces skipped) and the index after it: a brace group's
    content, a control sequence (``\\pi``) or a single character; None when there is none."""
    while i < len(s) and s[i].isspace():
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        end = _braced_group(s, i)
        return None if end is None else (s[i + 1 : end], end + 1)
    m = _CONTROL_SEQUENCE.match(s, i)
    if m:
        return m.group(0), m.end()
    return None if s[i] == "}" else (s[i], i + 1)


def brace_frac_arguments(ans: str) -> str:
    """Every ``\\frac``/``\\dfrac``/``\\tfrac``/``\\cfrac`` rewritten as ``\\frac{a}{b}`` with braced
    arguments, as TeX reads them: ``\\frac \\pi4`` -> ``\\frac{\\pi}{4}``, ``\\dfrac34`` ->
    ``\\frac{3}{4}`` (math-verify reads ``\\frac12`` but not a control sequence as an unbraced
    argument). A fraction whose arguments are missing is left as it is."""
    pos = 0
    for _ in range(len(ans)):  # each pass rewrites one fraction and moves past its command name
        m = _FRAC.search(ans, pos)
        if not m:
            break
        first = _macro_argument(ans, m.end())
        second = _macro_argument(ans, first[1]) if first else None
        if first is None or second is None:
            pos = m.end()
            continue
        ans = f"{ans[: m.start()]}\\frac{{{first[0]}}}{{{second[0]}}}{ans[second[1]:]}"
        pos = m.start() + len("\\frac")
    return ans


def _latex_log10_size(e: object) -> float:
    """``_log10_size`` with numeric powers bounded by their exponent's value: ``1/2004!`` (a power
    ``-1``) is as big as ``2004!``, where ``_log10_size`` bounds every power by ``base ** 10**size``."""
    if isinstance(e, sympy.MatrixBase):
        return max((_latex_log10_size(x) for x in e), default=0.0)
    if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Number) and e.exp.is_finite:
        return max(_latex_log10_size(e.base), 1.0) * max(abs(float(e.exp)), 1.0)
    if isinstance(e, (sympy.Mul, sympy.Add)) and e.args:
        sizes = [_latex_log10_size(a) for a in e.args]
        return sum(sizes) if isinstance(e, sympy.Mul) else max(sizes) + math.log10(len(sizes))
    return _log10_size(e)


def is_math_object(parsed: list[object]) -> bool:
    """Whether a ``parse``/``parse_latex_answer`` result holds a mathematical object (a sympy expression,
    set, interval, relation or matrix), not only the text math-verify falls back to."""
    return any(isinstance(p, (sympy.Basic, sympy.MatrixBase)) for p in parsed)


def parse_latex_answer(ans: str) -> list[object]:
    """``math_verify.parse`` of one answer written in LaTeX (or plain text: ``sqrt(2)/2``), without the
    numeric pre-normalisation ``math_equal`` applies: math delimiters and trailing punctuation are
    stripped (``strip_math_delimiters``), digit groups written with TeX spacing become plain commas
    (``111, \\! 111`` and ``1{,}000`` like ``1,\\!000``, which math-verify reads as one number), a macro
    argument holding only such a number loses its commas (``\\frac{12}{5,525}``: math-verify reads commas
    in fractions as lists), fractions get braced arguments (``brace_frac_arguments``) and the rest is
    parsed as LaTeX inside ``$...$``, else as a plain expression. ``[]`` when neither works, or the
    answer is empty, longer than 1,000 characters or too big to verify (a value with more than 100,000
    digits)."""
    s = strip_math_delimiters(ans)
    if not s or len(s) > _LATEX_ANSWER_CHARS:
        return []
    try:
        latex = _TEX_DIGIT_GROUP.sub(",", s)
        latex = _BRACED_GROUPED_NUMBER.sub(lambda m: "{" + m.group(1).replace(",", "") + "}", latex)
        latex = brace_frac_arguments(latex)
        parsed = parse(f"${latex}$", extraction_config=_LATEX, parsing_timeout=None)
        if not parsed:
            parsed = parse(s, extraction_config=_EXPR, parsing_timeout=None)
        return [] if any(_latex_log10_size(p) > _MAX_DIGITS for p in parsed) else parsed
    except Exception:  # noqa: BLE001 - math-verify/sympy may raise anything on junk (or overflow a float)
        return []


@functools.lru_cache(maxsize=4096)
def _parse_gold_latex(gold: str) -> tuple[object, ...]:
    """``parse_latex_answer`` of a gold answer, cached: a problem's gold is compared with many samples."""
    return tuple(parse_latex_answer(gold))


_RELATIVE_TOLERANCE = 1e-4
_ROUNDING_SCALE = 1e-5  # math-verify compares numbers rounded to 6 decimal places


def _numbers_far_apart(gold_parsed: list[object], pred_parsed: list[object]) -> bool:
    """Whether both answers are single non-zero numbers that only rounding can make equal: closer than
    ``1e-5`` but more than 0.01% apart (relative). math-verify rounds numbers to 6 decimal places before
    comparing, so it takes ``0.0000001`` for ``0.00000001`` and ``1/2004!`` for ``1/2003!``; this check
    takes such a "match" back. Matches it grants on purpose (``50\\%`` for ``50``) are far apart and
    stay. It never adds a match."""

    def number(parsed: list[object]) -> sympy.Expr | None:
        first = next((x for x in parsed if isinstance(x, sympy.Basic)), None)
        return first if isinstance(first, sympy.Expr) and first.is_number else None

    g, p = number(gold_parsed), number(pred_parsed)
    if g is None or p is None:
        return False
    try:
        g_val, p_val = sympy.N(g.doit(), 30), sympy.N(p.doit(), 30)
        if not (g_val.is_Float and p_val.is_Float) or g_val == 0 or p_val == 0:
            return False
        diff = abs(g_val - p_val)
        return bool(diff < _ROUNDING_SCALE and diff > _RELATIVE_TOLERANCE * max(abs(g_val), abs(p_val)))
    except Exception:  # noqa: BLE001 - leave the verdict to math-verify
        return False


_TEXT_ONLY = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{[^{}$\\]*\}")
_PLAIN_NUMBER_THEN_WORDS = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?)\s+[A-Za-z][A-Za-z .]*")


def latex_equal(pred: str, gold: str) -> bool:
    """Whether ``pred`` states the same mathematical answer as the LaTeX gold answer ``gold``, decided by
    math-verify: ``verify(parse(gold), parse(pred))`` on both texts as written (``parse_latex_answer``).

    Equivalent forms therefore match: ``\\dfrac{1}{2}``/``0.5``, ``2\\sqrt{5}``/``\\sqrt{20}``,
    ``(-\\infty, 3]`` (and not ``(-\\infty, 3)``), ``\\{1,2,3\\}``/``3,2,1``, ``50\\%``/``50``/``0.5``,
    ``10,000``/``1,\\!000`` with ``10000``/``1000``, ``x = 3``/``3``, ``\\text{(C)}``/``C``,
    ``5\\text{ cm}``/``5``, ``90^\\circ``/``90``, while the pair ``(1,234)`` stays a pair. Two plain-text
    rescues: a prediction that is a number followed only by words (``18 dollars``, from a ``The answer
    is ...`` line) is also tried as the number, and a plain-text prediction against a word answer
    (``June 20`` against ``\\text{June 20}``) is also tried as ``\\text{...}``. When math-verify cannot
    read the gold at all, only a prediction written identically (up to whitespace and delimiters)
    matches. Two tiny non-zero numbers more than 0.01% apart never match (``_numbers_far_apart``:
    math-verify alone would equate ``0.0000001`` and ``0.00000001``). Thread-safe; never raises.
    """
    try:
        g_text, p_text = strip_math_delimiters(gold), strip_math_delimiters(pred)
        if not g_text or not p_text:
            return False
        gold_parsed = list(_parse_gold_latex(g_text))
        if not gold_parsed:
            return "".join(g_text.split()) == "".join(p_text.split())
        candidates = [p_text]
        m = _PLAIN_NUMBER_THEN_WORDS.fullmatch(p_text)
        if m:
            candidates.append(m.group(1))
        if _TEXT_ONLY.fullmatch(g_text) and not any(c in p_text for c in "\\${}"):
            candidates.append(f"\\text{{{p_text}}}")  # a word answer (\text{June 20}) written plainly
        for cand in candidates:
            pred_parsed = parse_latex_answer(cand)
            if pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None) and \
                    not _numbers_far_apart(gold_parsed, pred_parsed):
                return True
        return False
    except Exception:  # noqa: BLE001 - a checker of model output must not crash the pipeline
        return False
