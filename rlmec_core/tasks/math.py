"""MATH (Hendrycks et al. 2021): competition mathematics with LaTeX prose solutions.

Source rows are JSON lines ``{"id", "problem", "level", "type", "solution"}``: ``solution`` is LaTeX prose
whose final answer is the last ``\\boxed{...}`` (braces may nest: ``\\boxed{\\frac{1}{2}}``), ``level`` is
``"Level 1"`` .. ``"Level 5"`` and ``type`` the subject (``"Algebra"``, ``"Number Theory"``, ...). A row
may also carry an ``answer`` field (the MATH-500 layout, where ``subject`` stands for ``type``); it then
is the gold answer, otherwise the gold answer is the content of the solution's last ``\\boxed{...}``.

Answers are compared by math-verify only (``rlmec_core.tasks.answers.latex_equal``): ``\\dfrac{1}{2}`` and
``0.5``, ``(-\\infty, 3]``, ``\\{1,2\\}``, ``50\\%``, ``10,000``, ``x = 3`` and ``3``, ``\\text{(C)}`` and
``C`` are all read as mathematical objects, never compared as strings.

Steps (what the teacher rewrites from and the GRM scores) are sentences, see ``math_step_spans``.

Level and type (``MATHTask.metadata``) travel with each problem in the problem table's ``attributes``
column, and ``evaluate`` breaks accuracy down by them; ``MATHTask.load_metadata(path)`` reads them
straight from a source file, in the order ``load_source`` numbers the problems.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.tasks.answers import last_boxed, latex_equal, strip_math_delimiters
from rlmec_core.tasks.base import Problem, TaskAdapter, require_text

__all__ = ["MATHTask", "extract_latex_answer", "math_step_spans"]

# -- answers ---------------------------------------------------------------------------------------

_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b\s*:?", re.IGNORECASE)


def extract_latex_answer(text: str) -> str | None:
    """The final answer of a MATH-style solution: the content of the last ``\\boxed{...}`` or
    ``\\fbox{...}`` with balanced braces; failing that, the rest of the line after the last ``The answer
    is`` / ``The final answer is`` (math delimiters and trailing periods dropped: ``$\\frac12$.`` ->
    ``\\frac12``). None when the text states neither (a bare last number is not taken as an answer)."""
    boxed = last_boxed(text)
    if boxed:
        return boxed
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        ans = strip_math_delimiters(text[matches[-1].end():].split("\n", 1)[0])
        return ans or None
    return None


# -- steps -----------------------------------------------------------------------------------------

# Math environments whose contents are never split (tabular too: a table is one piece).
_MATH_ENVS = frozenset({
    "equation", "equation*", "align", "align*", "aligned", "alignat", "alignat*", "gather", "gather*",
    "gathered", "multline", "multline*", "eqnarray", "eqnarray*", "split", "array", "cases", "matrix",
    "pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix", "smallmatrix", "tabular",
})
# Words whose period does not end a sentence (compared lower-case, without the final period).
_ABBREVIATIONS = frozenset({"e.g", "i.e", "vs", "cf", "viz", "mr", "mrs", "ms", "dr", "prof", "st", "fig",
                            "eq", "eqs", "approx", "resp", "al", "ca"})
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_LIST_MARKER = re.compile(r"[^\S\n]*(?:[-*+\u2022]\s|\d{1,2}[.)]\s|(?:step|Step|STEP)\s*\d+\b)")
_BEGIN_ENV = re.compile(r"\\begin\s*\{([^{}]*)\}")
_SENTENCE_PUNCT = ".!?"
_CLOSERS = ")]\"'\u2019\u201d"


def _new_sentence_at(text: str, j: int) -> bool:
    """Whether the text from ``j`` can start a new sentence: ``j`` is the end, or whitespace follows and
    the next visible character is not a lower-case letter (``e.g. the`` and ``approx. equal`` go on)."""
    if j >= len(text):
        return True
    if not text[j].isspace():
        return False
    k = j
    while k < len(text) and text[k].isspace():
        k += 1
    return k == len(text) or not text[k].islower()


def _text_sentence_end(text: str, i: int) -> int | None:
    """Where the step after a ``.``/``!``/``?`` at ``text[i]`` (outside math) begins, or None when it does
    not end a sentence: ellipses, decimals (``3.5``), abbreviations (``e.g.``), list numbers at the start
    of a line (``1.``) and a lower-case continuation do not. Closing brackets and quotes after the
    punctuation stay in the sentence."""
    j = i + 1
    if text[i] == "." and ((j < len(text) and text[j] == ".") or (i > 0 and text[i - 1] == ".")):
        return None  # an ellipsis
    while j < len(text) and text[j] in _SENTENCE_PUNCT + _CLOSERS:
        j += 1
    if not _new_sentence_at(text, j):
        return None
    if text[i] == ".":
        k = i
        while k > 0 and not text[k - 1].isspace():
            k -= 1
        token = text[k:i].lstrip("([{\"'").lower()
        if token in _ABBREVIATIONS:
            return None
        line_start = text.rfind("\n", 0, k) + 1
        if token.isdigit() and len(token) <= 2 and not text[line_start:k].strip():
            return None  # "1. " enumerating a list
    return j


def _math_closes_sentence(text: str, inner_end: int, after: int, display: bool) -> bool:
    """Whether a math region whose content ends at ``inner_end`` (its closing delimiter ends at ``after``)
    finishes a sentence: MATH writes ``we obtain $x - y = 31.$ We then ...`` and ``\\[x = 3.\\]So ...``
    with the period inside. After display math (``display``) no whitespace is needed before the next
    sentence, after inline math it is; and display math followed by a capitalised word ends a sentence
    even without punctuation (``\\end{align*} Now, ...``)."""
    k = inner_end
    while k > 0 and text[k - 1].isspace():
        k -= 1
    if k == 0 or text[k - 1] not in _SENTENCE_PUNCT or _escaped_at(text, k - 1):
        if not display:
            return False
        j = after  # display math then a capitalised word ("\end{align*} Now, ...") starts a sentence
        while j < len(text) and text[j].isspace():
            j += 1
        return j < len(text) and text[j].isupper()
    if display and after < len(text) and not text[after].isspace():
        return not text[after].islower()
    return _new_sentence_at(text, after)


def _escaped_at(text: str, i: int) -> bool:
    n = 0
    while i - n - 1 >= 0 and text[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def math_step_spans(solution: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the steps of a prose (MATH-style) solution: its sentences.

    The text is cut

    - at every paragraph break (a blank line), always, whatever came before (an unclosed ``$`` does not
      carry past one);
    - after a sentence's ``.``, ``!`` or ``?`` (with any closing brackets or quotes after it) when
      whitespace follows and the next visible character is not a lower-case letter, outside math; not
      after an abbreviation (``e.g.``, ``i.e.``, ``vs.``, ``cf.``, ``Fig.``, ...), an ellipsis, inside a
      decimal (``3.5``: no whitespace follows) or after a list number at the start of a line (``1.``);
    - after a math region whose content ends with such punctuation (``$x = 31.$ We``, ``\\[ ... .\\]``),
      and after display math (``\\[..\\]``, ``$$..$$``, an environment) that a capitalised word follows;
    - before a line that starts a list item (``- ``, ``* ``, ``1. ``, ``2) ``, ``Step 3``);
    - around an ``[asy]...[/asy]`` figure, which is one step whole (blank lines in it included).

    Math is never cut inside (except by a blank line): ``$...$``, ``$$...$$``, ``\\(...\\)``,
    ``\\[...\\]`` and ``\\begin{align*}``-style environments (and ``tabular``); ``\\$`` is a dollar sign,
    not a delimiter. Each piece is stripped of surrounding whitespace and empty pieces are dropped, so the
    spans are disjoint, in order, non-empty, and together cover every non-whitespace character.
    """
    text = solution
    n = len(text)
    cuts: list[int] = []
    mode: str | None = None  # None (prose) or the closing delimiter of the open math region
    i = 0
    while i < n:
        c = text[i]
        if mode != "[/asy]" and c == "\n":
            m = _PARAGRAPH_BREAK.match(text, i)
            if m:
                cuts.append(i)
                mode = None
                i = m.end()
                continue
        if mode is None:
            if c == "\\":
                if text.startswith("\\[", i) or text.startswith("\\(", i):
                    mode = "\\]" if text[i + 1] == "[" else "\\)"
                    i += 2
                    continue
                m = _BEGIN_ENV.match(text, i)
                if m and m.group(1).strip() in _MATH_ENVS:
                    mode = f"\\end{{{m.group(1).strip()}}}"
                    i = m.end()
                    continue
                i += 2  # an escaped character (\$, \%, \\) or a macro's first letter
                continue
            if c == "$":
                mode = "$$" if text.startswith("$$", i) else "$"
                i += len(mode)
                continue
            if text.startswith("[asy]", i):
                cuts.append(i)
                mode = "[/asy]"
                i += len("[asy]")
                continue
            if c in _SENTENCE_PUNCT:
                j = _text_sentence_end(text, i)
                if j is not None:
                    cuts.append(j)
                    i = j
                    continue
            if c == "\n" and _LIST_MARKER.match(text, i + 1):
                cuts.append(i + 1)
            i += 1
            continue
        # inside math, or an [asy] figure
        if mode == "[/asy]":
            end = text.find("[/asy]", i)
            if end == -1:
                break  # an unclosed figure runs to the end
            i = end + len("[/asy]")
            cuts.append(i)
            mode = None
            continue
        if text.startswith(mode, i) and not (mode.startswith("$") and _escaped_at(text, i)):
            after = i + len(mode)
            if _math_closes_sentence(text, i, after, display=mode != "$" and mode != "\\)"):
                cuts.append(after)
            mode = None
            i = after
            continue
        i += 2 if c == "\\" else 1
    spans: list[tuple[int, int]] = []
    start = 0
    for cut in [*sorted(set(cuts)), n]:
        piece = text[start:cut]
        stripped = piece.strip()
        if stripped and cut > start:
            a = start + (len(piece) - len(piece.lstrip()))
            spans.append((a, a + len(stripped)))
        start = max(start, cut)
    return spans


# -- the adapter -----------------------------------------------------------------------------------


class MATHTask(TaskAdapter):
    """MATH: LaTeX answers judged by math-verify (``latex_equal``), prose solutions cut into sentences."""

    name = "math"

    def extract_answer(self, text: str) -> str | None:
        """See ``extract_latex_answer``."""
        return extract_latex_answer(text)

    def answers_match(self, pred_answer: str, gold_answer: str) -> bool:
        """See ``rlmec_core.tasks.answers.latex_equal``."""
        return latex_equal(pred_answer, gold_answer)

    def step_spans(self, solution: str) -> list[tuple[int, int]]:
        """Sentences, see ``math_step_spans``."""
        return math_step_spans(solution)

    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        """A MATH row ``{"problem", "solution", ...}`` (``id``, ``level``, ``type`` optional here).

        question = ``problem`` and reference solution = ``solution``, surrounding whitespace stripped;
        answer = the row's ``answer`` field when it has one, else the content of the solution's last
        ``\\boxed{...}``. Raises ``DataError`` naming ``where`` (and the row's ``id``) for a missing,
        mistyped or empty ``problem``/``solution``/``answer`` or a solution without a ``\\boxed{...}``
        (``\\fbox{...}``) answer.
        """
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if record.get("id") is not None:
            where += f" (id {record.get('id')!r})"
        question = require_text(record, "problem", where).strip()
        solution = require_text(record, "solution", where).strip()
        boxed = last_boxed(solution)
        if not boxed:
            raise DataError(f"{where}: solution has no \\boxed{{...}} final answer")
        answer = require_text(record, "answer", where).strip() if record.get("answer") is not None else boxed
        return Problem(id="", question=question, reference_solution=solution, answer=answer, task=self.name)

    # -- level and type --------------------------------------------------------------------------
    @staticmethod
    def metadata(record: Mapping[str, Any]) -> dict[str, str | None]:
        """What a MATH row says beyond the problem table: ``{"source_id", "level", "type"}`` as strings
        (``"algebra/1"``, ``"Level 3"``, ``"Algebra"``), None where the row lacks one. MATH-500 rows
        (``unique_id``, ``subject``, an integer ``level``) give the same keys (``"Level 2"``)."""

        def text(*keys: str) -> str | None:
            for key in keys:
                value = record.get(key)
                if value is not None and str(value).strip():
                    return str(value).strip()
            return None

        level = text("level")
        if level is not None and level.isdigit():
            level = f"Level {level}"
        return {"source_id": text("id", "unique_id"), "level": level, "type": text("type", "subject")}

    def load_metadata(self, path: str | Path) -> list[dict[str, str | None]]:
        """``metadata`` of every row of a MATH JSON Lines file, in file order: entry ``k`` belongs to the
        problem ``load_source`` numbers ``k`` (id ``...-{k:06d}``)."""
        from rlmec_core.io import iter_jsonl

        return [self.metadata(obj) for _, obj in iter_jsonl(path)]
