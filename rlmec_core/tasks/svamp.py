"""SVAMP (Patel et al. 2021): one-equation arithmetic word problems with systematic variations.

The source is one JSON list of records ``{"ID", "Body", "Question", "Equation", "Answer", "Type"}``;
``Equation`` is a bracketed expression such as ``( 76.0 - 25.0 )`` and ``Answer`` a float (``51.0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlmec_core.errors import DataError
from rlmec_core.tasks.answers import MathTask
from rlmec_core.tasks.base import Problem, require_text


def format_number(value: float) -> str:
    """``51.0`` -> ``51``; non-integral floats keep their shortest exact form (``0.5``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))



class SVAMPTask(MathTask):
    """SVAMP: numeric answers, judged by ``math_equal``."""

    name = "svamp"

    def problem_from_record(self, record: Mapping[str, Any], where: str) -> Problem:
        """A SVAMP record ``{"ID", "Body", "Question", "Equation", "Answer"}``.

        question = ``Body + " " + Question`` with whitespace collapsed; reference solution = the line
        ``<Equation> = <Answer>`` then ``The answer is <Answer>``; answer = ``Answer`` without a trailing
        ``.0`` when integral. Raises ``DataError`` naming ``where`` (and the record's ``ID``) for a missing
        or mistyped field, an empty ``Question`` or ``Equation`` or a non-numeric answer.
        """
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        where += f" (ID {record.get('ID')!r})"
        body = " ".join(require_text(record, "Body", where, allow_empty=True).split())
        asked = " ".join(require_text(record, "Question", where).split())
        question = f"{body} {asked}".strip()
        equation = " ".join(require_text(record, "Equation", where).split())
        raw = record.get("Answer")
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise DataError(f"{where}: Answer must be a finite number, got {raw!r}")
        answer = format_number(raw)
        return Problem(id="", question=question, reference_solution=f"{equation} = {answer}\nThe answer is {answer}",
                       answer=answer, task=self.name)

    def load_source(self, path: str | Path, *, split: str) -> list[Problem]:
        """Read a SVAMP JSON file (one list of records); errors name the file and ``record <index>``."""
        return self.load_json_list(path, split=split, family="SVAMP")
