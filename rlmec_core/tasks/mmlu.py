"""MMLU (Hendrycks et al. 2021): four-option multiple choice; the RLMEC paper evaluates its STEM subsets.

Source: a JSON list (or, for a ``.jsonl`` file, JSON lines) of records ``{"question", "subject",
"choices": [4 strings], "answer": index 0-3}``.

Problem table row:

- question: the question, then one lettered option per line (``A. ...`` to ``D. ...``);
- answer: the gold letter and its option text, ``"B. <option text>"``;
- reference solution: ``The answer is B. <option text>``.

Why the gold answer carries the text. Every stage judges with ``adapter.judge(solution, gold_answer)``
(sample, evaluate, teacher, GRM, GRPO rewards): the question is not passed, and a GRPO reward function only
sees the ``answer`` column. A prediction may name the letter (``The answer is B``, ``(B)``, ``B.``) or the
option's text; with ``"B. <text>"`` as the gold answer both can be checked from the answer alone, with no
change to the judging interface, and the column stays readable in tables and teacher prompts.

Matching rule (``answers_match``): a prediction that starts with an upper-case letter ``A``-``D`` standing
alone (``B``, ``B.``, ``B)``, ``(B)``, ``B: ...``, ``Option B``) names that letter, and the letter decides,
whatever text follows, except that a prediction equal to the whole gold option text is right even when
that text starts like a letter (the option ``(A), (B), and (C)``). Otherwise the prediction is an option
text, equal to the gold option after the multiple-choice normalisation
(``rlmec_core.tasks.mcqa.normalize_option``: case, quotes, spacing, edge punctuation; ``$`` and markdown
emphasis dropped on both sides), or, when the gold option is a number, equal to it by ``math_equal``
(``3,000`` = ``3000``, ``-5`` = ``\u22125``). A few MMLU options are themselves single capital letters
(``['A', '~A', 'B', '~B']``): for them ``The answer is B`` is read as the letter, the usual convention for
MMLU.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.tasks.answers import last_boxed, math_equal
from rlmec_core.tasks.base import Problem, TaskAdapter, require_text
from rlmec_core.tasks.mcqa import normalize_option

__all__ = ["LETTERS", "MMLUTask", "format_mmlu_question", "parse_choice"]

LETTERS = "ABCD"
N_CHOICES = len(LETTERS)

_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\b", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^[^\S\n]*[*_#>]*[^\S\n]*(?:final\s+)?answer[^\S\n]*[*_]*:(.*)$",
                          re.IGNORECASE | re.MULTILINE)
_LETTER = re.compile(
    r"(?:(?i:option|choice)\s+)?"
    r"(?:\(([A-D])\)|([A-D])(?=$|[.):,;]|\s+[-\u2013\u2014:]\s))"  # (B) | B | B. | B) | B: | B - text
    r"[.):,;]?\s*(.*)",
    re.DOTALL,
)
_GOLD = re.compile(r"([A-D])\.\s*(.*)", re.DOTALL)
_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|boxed)\s*\{([^{}]*)\}")
_DASHES = str.maketrans({"\u2212": "-", "\u2013": "-"})
_NUMBER = re.compile(r"[-+\u2212\u2013]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?%?")


def format_mmlu_question(question: str, choices: list[str]) -> str:
    """The question shown to the policy: the question text (surrounding whitespace stripped), then one
    line per option, ``A. <choice>`` .. ``D. <choice>``."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {c.strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def _clean(pred: str) -> str:
    """A stated answer without markdown emphasis, ``\\text{}``/``\\boxed{}`` wrappers and ``$``."""
    s = pred.strip().replace("**", "").replace("__", "")
    for _ in range(3):
        s, n = _WRAPPER.subn(r"\1", s)
        if not n:
            break
    return s.replace("$", "").strip()


def parse_choice(pred: str) -> tuple[str | None, str]:
    """``(letter, text)`` of a stated answer: the letter ``A``-``D`` it names (None when it names none)
    and the text after the letter (the whole answer when there is no letter). ``"(B) 42"`` ->
    ``("B", "42")``, ``"B."`` -> ``("B", "")``, ``"A virus"`` -> ``(None, "A virus")``."""
    s = _clean(pred)
    m = _LETTER.fullmatch(s)
    if m:
        return (m.group(1) or m.group(2)), m.group(3).strip()
    return None, s


def _is_number(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text.strip()))


class MMLUTask(TaskAdapter):
    """MMLU: the gold answer is ``"<letter>. <option text>"``; a prediction may give the letter or the
    text (see the module docstring)."""

    name = "mmlu"

    def extract_answer(self, text: str) -> str | None:
        """The answer a solution states, as written (``B``, ``(B) mitosis``, ``mitosis``): the rest of the
        line after the last ``The answer is`` (also ``The final/correct answer is``; a leading ``:``
        dropped); failing that the last ``\\boxed{...}``; failing that the last line starting ``Answer:``
        (markdown ``**Answer:**`` too).
        None when there is none of these, or it is empty."""
        matches = list(_ANSWER_IS.finditer(text))
        candidates: list[str] = []
        if matches:
            candidates.append(text[matches[-1].end():].split("\n", 1)[0])
        boxed = last_boxed(text)
        if boxed:
            candidates.append(boxed)
        lines = _ANSWER_LINE.findall(text)
        if lines:
            candidates.append(lines[-1])
        for cand in candidates:
            ans = cand.strip().lstrip(":").strip(" \t*_")
            if _clean(ans):
                return ans
        return None

    def answers_match(self, pred_answer: str, gold_answer: str) -> bool:
        """Whether ``pred_answer`` names the gold option ``gold_answer`` (``"B. <text>"``, or a bare
        ``"B"``): by letter when it names one, else by option text (module docstring)."""
        gold = _GOLD.fullmatch(gold_answer.strip()) or re.fullmatch(r"([A-D])()", gold_answer.strip())
        if not gold:
            return False
        gold_letter, gold_text = gold.group(1), _clean(gold.group(2))
        letter, text = parse_choice(pred_answer)
        same_text = bool(gold_text) and normalize_option(_clean(pred_answer)) == normalize_option(gold_text)
        if letter is not None:  # "(A), (B), and (C)" may be an option's whole text, not the letter A
            return letter == gold_letter or (bool(text) and same_text)
        if not gold_text or not normalize_option(text):
            return False
        if same_text:
            return True
        if _is_number(gold_text) and _is_number(text):
            return math_equal(text.translate(_DASHES), gold_text.translate(_DASHES))
        return False

    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        """An MMLU record ``{"question", "choices", "answer", "subject"?}`` (see the module docstring for the
        row it becomes). Raises ``DataError`` naming ``where`` for a record that is not an object, a
        missing or empty question, ``choices`` that are not a list of 4 non-empty strings, or an
        ``answer`` that is not an integer index 0-3."""
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        question = require_text(record, "question", where)
        choices = record.get("choices")
        if not isinstance(choices, list) or len(choices) != N_CHOICES or \
                not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: choices must be a list of {N_CHOICES} strings, got {choices!r}")
        if any(not c.strip() for c in choices):
            raise DataError(f"{where}: empty choice in {choices!r}")
        index = record.get("answer")
        if isinstance(index, bool) or not isinstance(index, int):
            raise DataError(f"{where}: answer must be an integer index 0-{N_CHOICES - 1}, got {index!r}")
        if not 0 <= index < N_CHOICES:
            raise DataError(f"{where}: answer index {index} out of range 0-{N_CHOICES - 1}")
        gold = f"{LETTERS[index]}. {choices[index].strip()}"
        return Problem(id="", question=format_mmlu_question(question, choices),
                       reference_solution=f"The answer is {gold}", answer=gold, task=self.name)

    @staticmethod
    def metadata(record: Mapping[str, Any]) -> dict[str, str | None]:
        """``{"subject": ...}`` of a record (``"college_biology"``), None when it has none; kept in the
        problem table's ``attributes``."""
        subject = record.get("subject")
        return {"subject": str(subject).strip() if subject is not None and str(subject).strip() else None}

    def load_source(self, path: str | Path, *, split: str) -> list[Problem]:
        """Read an MMLU file: a JSON list of records (errors name the file and ``record <index>``), or JSON
        Lines when the name ends in ``.jsonl`` (errors name ``file:line``)."""
        if str(path).endswith(".jsonl"):
            return super().load_source(path, split=split)
        return self.load_json_list(path, split=split, family="MMLU")
