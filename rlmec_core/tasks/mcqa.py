"""Multiple-choice QA with free-text options: ECQA, QASC, ARC and OpenBookQA in the RLMEC format.

Source rows are JSON lines ``{"problem", "solution", "answer"}``: ``problem`` is the question, a line
``Options:`` and one option per line; ``solution`` ends with the line ``The answer is <option>`` (for
ARC and OpenBookQA it is only that line); ``answer`` is the gold option's text, whose case may differ
from the option list (``Sunlight ...`` vs ``sunlight ...``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.tasks.base import Problem, TaskAdapter, require_text

_ANSWER_IS = re.compile(r"the answer is", re.IGNORECASE)
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_EDGE_PUNCT = " \t\n.,;:!?\"'`"


def normalize_option(text: str) -> str:
    """Canonical form of an option text for comparison.

    Unicode NFKC, case-folded, curly quotes made straight, whitespace collapsed (and removed before
    ``, . ; : ! ?``), surrounding quotes and sentence punctuation stripped. Inner punctuation is kept,
    so ``+1``/``-1`` and ``-10°c``/``10°c`` (ARC options) stay distinct.
    """
    s = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES)
    s = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(s.split()))
    return s.strip(_EDGE_PUNCT)


def options(question: str) -> list[str]:
    """The option lines (stripped, non-blank) after the last ``Options:`` line; [] when there is none."""
    lines = question.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip().casefold() == "options:":
            return [line.strip() for line in lines[i + 1 :] if line.strip()]
    return []



class MCQATask(TaskAdapter):
    """Multiple choice with option texts as answers, compared after ``normalize_option``."""

    name = "mcqa"

    def extract_answer(self, text: str) -> str | None:
        """The rest of the line after the last ``The answer is`` (a leading ``:`` dropped), or None."""
        matches = list(_ANSWER_IS.finditer(text))
        if not matches:
            return None
        ans = text[matches[-1].end() :].split("\n", 1)[0].strip().lstrip(":").strip()
        return ans or None

    def answers_match(self, pred_answer: str, gold_answer: str) -> bool:
        gold = normalize_option(gold_answer)
        return bool(gold) and normalize_option(pred_answer) == gold

    def options(self, question: str) -> list[str]:
        """The options listed in a question (see the module-level ``options``)."""
        return options(question)

    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        """An RLMEC-format multiple-choice row ``{"problem", "solution", "answer"}``.

        question = ``problem`` as is; reference solution = ``solution``; answer = the gold option as
        written in the option list. Raises ``DataError`` naming ``where`` for a missing, mistyped or empty
        field, a problem without a question or options, or a gold answer that is not one of the options.
        """
        question = require_text(record, "problem", where)
        opts = options(question)
        stem = re.split(r"^\s*Options:\s*$", question, flags=re.MULTILINE | re.IGNORECASE)[0]
        if not stem.strip():
            raise DataError(f"{where}: empty question")
        if not opts:
            raise DataError(f"{where}: problem has no 'Options:' line followed by options")
        solution = require_text(record, "solution", where)
        gold = require_text(record, "answer", where)
        by_norm = {normalize_option(o): o for o in opts}
        if normalize_option(gold) not in by_norm:
            raise DataError(f"{where}: gold answer {gold!r} is not one of the options {opts}")
        return Problem(id="", question=question, reference_solution=solution,
                       answer=by_norm[normalize_option(gold)], task=self.name)
