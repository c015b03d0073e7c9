"""The ``math`` (MATH) and ``mmlu`` adapters: answer extraction, equivalence through math-verify, the prose
step splitter, MMLU letter/text matching, malformed input, and the real files in ``../shared/data``
(skipped when absent)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from rlmec_core.errors import DataError
from rlmec_core.tasks import ADAPTER_NAMES, Problem, get_adapter
from rlmec_core.tasks.answers import brace_frac_arguments, last_boxed, latex_equal, strip_math_delimiters
from rlmec_core.tasks.math import MATHTask, extract_latex_answer, math_step_spans
from rlmec_core.tasks.mmlu import MMLUTask, format_mmlu_question, parse_choice

MATH_FILE = "math/test.jsonl"
MMLU_FILES = [("mmlu/biology.json", 454), ("mmlu/chemistry.json", 303), ("mmlu/mathematics.json", 974),
              ("mmlu/physics.json", 253)]
SAMPLE = 300  # MATH rows pushed through math-verify per test (~2 ms a check)


def test_registered() -> None:
    assert {"math", "mmlu"} <= set(ADAPTER_NAMES)
    assert isinstance(get_adapter("math"), MATHTask) and isinstance(get_adapter("mmlu"), MMLUTask)


# -- MATH: extraction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\left\\{ 1, \\frac{2}{3} \\right\\}}", "\\left\\{ 1, \\frac{2}{3} \\right\\}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not count
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{1} and \\fbox{3}", "3"),
        ("\\fbox{3} and then \\boxed{\\text{(C)}}", "\\text{(C)}"),
        ("\\boxed{7} then \\boxed{8", "7"),  # an unclosed box is skipped
        ("\\boxed {x = 3}", "x = 3"),
        ("\\boxedfoo{1} \\boxed{2} \\boxedfoo{3}", "2"),
        ("Thus the answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
        ("The final answer is: $(-\\infty, 3]$.\nDone.", "(-\\infty, 3]"),
        ("It is 42.", None),  # a bare number is not an answer
        ("\\boxed{}", None),
    ],
)
def test_extract_latex_answer(text: str, expected: str | None) -> None:
    assert extract_latex_answer(text) == expected
    assert get_adapter("math").extract_answer(text) == expected


def test_helpers() -> None:
    assert last_boxed("no box") is None
    assert strip_math_delimiters(" $\\frac12$. ") == "\\frac12"
    assert strip_math_delimiters("\\[ 3 \\]") == "3"
    assert strip_math_delimiters("$x$ or $y$") == "$x$ or $y$"
    assert strip_math_delimiters("\\$5") == "\\$5"
    assert brace_frac_arguments("\\frac \\pi4 + \\dfrac12") == "\\frac{\\pi}{4} + \\frac{1}{2}"
    assert brace_frac_arguments("\\frac{\\frac12}{3}") == "\\frac{\\frac{1}{2}}{3}"
    assert brace_frac_arguments("\\frac{1}") == "\\frac{1}"


# -- MATH: equivalence -----------------------------------------------------------------------------

EQUIVALENT = [
    ("0.5", "\\frac{1}{2}"),
    ("\\frac12", "\\dfrac{1}{2}"),
    ("1/2", "\\tfrac{1}{2}"),
    ("\\frac{\\pi}{4}", "\\frac \\pi4"),
    ("\\sqrt{20}", "2\\sqrt{5}"),
    ("\\frac{1}{2}\\sqrt{3}", "\\frac{\\sqrt{3}}{2}"),
    ("(-\\infty,3]", "(-\\infty, 3]"),
    ("\\left(-\\infty, 3\\right]", "(-\\infty, 3]"),
    ("[2, 5)", "[2,5)"),
    ("\\{3,2,1\\}", "\\{1,2,3\\}"),
    ("3, 2, 1", "1,2,3"),
    ("50", "50\\%"),
    ("0.5", "50\\%"),
    ("50\\%", "50"),
    ("10000", "10,000"),
    ("1000", "1,\\!000"),
    ("111111111", "111, \\! 111, \\! 111"),
    ("1000", "1{,}000"),
    ("\\frac{12}{5525}", "\\frac{12}{5,\\!525}"),
    ("3", "x = 3"),
    ("x=3", "3"),
    ("2x+3", "y = 2x + 3"),
    ("C", "\\text{(C)}"),
    ("(C)", "\\text{(C)}"),
    ("\\text{C}", "\\text{(C)}"),
    ("1599", "1599 \\text{ dollars}"),
    ("18 dollars", "18"),
    ("90", "90^\\circ"),
    ("\\$18.90", "18.9"),
    ("June 20", "\\text{June 20}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\dfrac{1}{2004!}", "\\frac{1}{2004!}"),
    ("$\\frac{2}{3}$.", "\\frac{2}{3}"),
]
DIFFERENT = [
    ("0.49", "\\frac{1}{2}"),
    ("(-\\infty,3)", "(-\\infty, 3]"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("(1234)", "(1,234)"),  # an ordered pair, not a number with a thousands separator
    ("3", "a=2, b=3"),
    ("4", "x = 3"),
    ("D", "\\text{(C)}"),
    ("\\text{WV}", "\\text{VW}"),
    ("0.00000001", "0.0000001"),  # math-verify alone rounds both to 0
    ("\\frac{1}{2003!}", "\\frac{1}{2004!}"),
    ("2\\sqrt{3}", "2\\sqrt{5}"),
    ("", "3"),
    ("3", ""),
    ("\\frac{", "3"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT)
def test_latex_equivalent(pred: str, gold: str) -> None:
    assert latex_equal(pred, gold)
    assert get_adapter("math").is_correct(f"So the answer is $\\boxed{{{pred}}}$.", gold)


@pytest.mark.parametrize(("pred", "gold"), DIFFERENT)
def test_latex_different(pred: str, gold: str) -> None:
    assert not latex_equal(pred, gold)


def test_latex_equal_survives_junk() -> None:
    for junk in ["2^{2^{2^{2^{2^2}}}}", "100000000!", "\\frac{1}{0}", "}{", "x" * 5000, "\\boxed{\\boxed{"]:
        assert latex_equal(junk, "18") is False


# -- MATH: steps -----------------------------------------------------------------------------------


def _steps(text: str) -> list[str]:
    return [text[a:b] for a, b in math_step_spans(text)]


def test_steps_sentences_and_math() -> None:
    text = ("We have $x = 3.5$ and $y = 2.$ Then $x + y = 5.5$, e.g. by adding.  So the sum is 5.5. "
            "Also, i.e. trivially, we are done!")
    assert _steps(text) == ["We have $x = 3.5$ and $y = 2.$", "Then $x + y = 5.5$, e.g. by adding.",
                            "So the sum is 5.5.", "Also, i.e. trivially, we are done!"]


def test_steps_display_math_and_paragraphs() -> None:
    text = ("Expanding,\n\\[(a+b)^2 = a^2 + 2ab + b^2. \\]So we get\n$$c = 1. Not a cut.$$\nThen \\$5. is money"
            ".\n\n- OR -\n\nBy symmetry, \\begin{align*}\nx &= 1. \\\\\ny &= 2\n\\end{align*} Hence done.")
    assert _steps(text) == [
        "Expanding,\n\\[(a+b)^2 = a^2 + 2ab + b^2. \\]",
        "So we get\n$$c = 1. Not a cut.$$",  # display math ending in a period, then a capital
        "Then \\$5. is money.",  # \$ is money, not math; a lower-case word goes on
        "- OR -",
        "By symmetry, \\begin{align*}\nx &= 1. \\\\\ny &= 2\n\\end{align*}",
        "Hence done.",
    ]


def test_steps_paragraph_break_always_splits() -> None:
    text = "An unclosed $x = 1\n\nnew paragraph. And more (see Fig. 2) here.\n1. one\n2. two"
    assert _steps(text) == ["An unclosed $x = 1", "new paragraph.", "And more (see Fig. 2) here.", "1. one",
                            "2. two"]


def test_steps_asy_is_one_step() -> None:
    text = "The area is $\\boxed{3}$.\n[asy]\ndraw((0,0)--(1,1));\n\nlabel(\"$A$. B\", (0,0));\n[/asy] Done."
    assert _steps(text) == ["The area is $\\boxed{3}$.",
                            "[asy]\ndraw((0,0)--(1,1));\n\nlabel(\"$A$. B\", (0,0));\n[/asy]", "Done."]


def test_steps_edge_cases() -> None:
    assert math_step_spans("") == [] and math_step_spans(" \n\n ") == []
    assert _steps("  One.  ") == ["One."]
    assert _steps("Wait... no. Yes") == ["Wait... no.", "Yes"]


def _check_spans(text: str, spans: list[tuple[int, int]]) -> None:
    prev = 0
    for a, b in spans:
        assert prev <= a < b <= len(text)
        assert text[a:b] == text[a:b].strip()
        prev = b
    assert re.sub(r"\s", "", "".join(text[a:b] for a, b in spans)) == re.sub(r"\s", "", text)


def test_kept_prefix_on_prose() -> None:
    adapter = get_adapter("math")
    sol = "First, $a=1.$ Second, $b=2$.\n\nThird: $\\boxed{3}$."
    assert adapter.split_steps(sol) == ["First, $a=1.$", "Second, $b=2$.", "Third: $\\boxed{3}$."]
    assert adapter.kept_prefix(sol, 1) == "First, $a=1.$ "
    assert adapter.kept_prefix(sol, 2) == "First, $a=1.$ Second, $b=2$.\n\n"
    assert adapter.step_separator(sol) == " "


# -- MATH: loading and bad input ---------------------------------------------------------------------

GOOD_MATH = {"id": "algebra/1", "problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra",
             "solution": "We add: $1+1=\\boxed{2}$."}


def _jsonl(tmp_path: Path, rows: list[object], name: str = "source.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_math_good_rows(tmp_path: Path) -> None:
    other = {**GOOD_MATH, "id": "x/2", "solution": "So $\\boxed{\\dfrac{1}{2}}$.", "answer": "\\frac12",
             "subject": "Geometry", "type": None, "level": 4}
    path = _jsonl(tmp_path, [GOOD_MATH, other])
    adapter = get_adapter("math")
    assert adapter.load_source(path, split="test") == [
        Problem("math-test-000000", "What is $1+1$?", "We add: $1+1=\\boxed{2}$.", "2", "math",
                (("source_id", "algebra/1"), ("level", "Level 1"), ("type", "Algebra"))),
        Problem("math-test-000001", "What is $1+1$?", "So $\\boxed{\\dfrac{1}{2}}$.", "\\frac12", "math",
                (("source_id", "x/2"), ("level", "Level 4"), ("type", "Geometry"))),
    ]  # level and type travel in the problem table's attributes column
    assert adapter.load_metadata(path) == [
        {"source_id": "algebra/1", "level": "Level 1", "type": "Algebra"},
        {"source_id": "x/2", "level": "Level 4", "type": "Geometry"},
    ]
    assert MATHTask.metadata({}) == {"source_id": None, "level": None, "type": None}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**GOOD_MATH, "solution": "We add: $1+1=2$."}, "no \\boxed{...} final answer"),
        ({**GOOD_MATH, "solution": "We add: \\boxed{}"}, "no \\boxed{...} final answer"),
        ({**GOOD_MATH, "solution": "We add: \\boxed{2"}, "no \\boxed{...} final answer"),
        ({**GOOD_MATH, "problem": "   "}, "empty problem"),
        ({k: v for k, v in GOOD_MATH.items() if k != "problem"}, "missing field 'problem'"),
        ({k: v for k, v in GOOD_MATH.items() if k != "solution"}, "missing field 'solution'"),
        ({**GOOD_MATH, "solution": 2}, "must be a string"),
        ({**GOOD_MATH, "answer": " "}, "empty answer"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_math_bad_rows(tmp_path: Path, row: object, message: str) -> None:
    path = _jsonl(tmp_path, [GOOD_MATH, row])
    with pytest.raises(DataError, match=r"source\.jsonl:2") as info:
        get_adapter("math").load_source(path, split="test")
    assert message in str(info.value)


def test_math_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "source.jsonl"
    path.write_text(json.dumps(GOOD_MATH) + '\n{"problem": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"source\.jsonl:2"):
        get_adapter("math").load_source(path, split="test")


# -- MMLU ------------------------------------------------------------------------------------------

GOLD = "B. Mitochondria"


@pytest.mark.parametrize(
    ("solution", "correct"),
    [
        ("The answer is B", True),
        ("The answer is B.", True),
        ("The answer is (B).", True),
        ("The answer is B) Mitochondria", True),
        ("The answer is B. Mitochondria", True),
        ("The answer is: option B", True),
        ("The answer is mitochondria.", True),
        ("The answer is  **Mitochondria**", True),
        ("the correct answer is B", True),
        ("Reasoning...\n**Answer:** (B)", True),
        ("Thus $\\boxed{B}$", True),
        ("The answer is A", False),
        ("The answer is (C) Mitochondria", False),  # the letter decides
        ("The answer is Ribosome", False),
        ("The answer is", False),
        ("I think it is B", False),  # no stated answer
    ],
)
def test_mmlu_letter_or_text(solution: str, correct: bool) -> None:
    assert get_adapter("mmlu").is_correct(solution, GOLD) is correct


def test_mmlu_matching_details() -> None:
    adapter = get_adapter("mmlu")
    assert parse_choice("(B) 42") == ("B", "42")
    assert parse_choice("B.") == ("B", "")
    assert parse_choice("A virus") == (None, "A virus")
    assert parse_choice("b") == (None, "b")  # lower case is text: physics has an option "c"
    assert adapter.answers_match("A virus", "C. a virus")
    assert not adapter.answers_match("A virus", "A. bacteria")
    assert adapter.answers_match("c", "B. c") and not adapter.answers_match("2c", "B. c")
    assert adapter.answers_match("3000", "D. 3,000") and adapter.answers_match("-5", "A. \u22125")
    assert adapter.answers_match("$32.93", "C. $32.93") and adapter.answers_match("32.93", "C. $32.93")
    assert not adapter.answers_match("32.9", "C. $32.93")
    assert adapter.answers_match("(A), (B), and (C)", "D. (A), (B), and (C)")
    assert not adapter.answers_match("(A)", "D. (A), (B), and (C)")
    assert adapter.answers_match("B", "B") and not adapter.answers_match("B", "nonsense")
    assert format_mmlu_question(" Q? ", ["a", " b", "c", "d"]) == "Q?\nA. a\nB. b\nC. c\nD. d"


GOOD_MMLU = {"question": "Which organelle makes ATP?", "subject": "college_biology",
             "choices": ["Ribosome", "Mitochondria", "Golgi body", "Lysosome"], "answer": 1}


def test_mmlu_good_records(tmp_path: Path) -> None:
    path = tmp_path / "mmlu.json"
    path.write_text(json.dumps([GOOD_MMLU]), encoding="utf-8")
    expected = Problem("mmlu-test-000000",
                       "Which organelle makes ATP?\nA. Ribosome\nB. Mitochondria\nC. Golgi body\nD. Lysosome",
                       "The answer is B. Mitochondria", "B. Mitochondria", "mmlu", (("subject", "college_biology"),))
    assert get_adapter("mmlu").load_source(path, split="test") == [expected]
    jsonl = _jsonl(tmp_path, [GOOD_MMLU], "mmlu.jsonl")
    assert get_adapter("mmlu").load_source(jsonl, split="test") == [expected]
    assert MMLUTask.metadata(GOOD_MMLU) == {"subject": "college_biology"}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**GOOD_MMLU, "answer": 4}, "answer index 4 out of range"),
        ({**GOOD_MMLU, "answer": -1}, "answer index -1 out of range"),
        ({**GOOD_MMLU, "answer": "B"}, "answer must be an integer"),
        ({**GOOD_MMLU, "answer": 1.0}, "answer must be an integer"),
        ({**GOOD_MMLU, "answer": True}, "answer must be an integer"),
        ({k: v for k, v in GOOD_MMLU.items() if k != "answer"}, "answer must be an integer"),
        ({**GOOD_MMLU, "choices": ["a", "b", "c"]}, "choices must be a list of 4 strings"),
        ({**GOOD_MMLU, "choices": "abcd"}, "choices must be a list of 4 strings"),
        ({**GOOD_MMLU, "choices": ["a", "b", 3, "d"]}, "choices must be a list of 4 strings"),
        ({**GOOD_MMLU, "choices": ["a", "b", " ", "d"]}, "empty choice"),
        ({**GOOD_MMLU, "question": ""}, "empty question"),
        ("not an object", "expected a JSON object"),
    ],
)
def test_mmlu_bad_records(tmp_path: Path, record: object, message: str) -> None:
    path = tmp_path / "mmlu.json"
    path.write_text(json.dumps([GOOD_MMLU, record]), encoding="utf-8")
    with pytest.raises(DataError, match=r"mmlu\.json: record 1") as info:
        get_adapter("mmlu").load_source(path, split="test")
    assert message in str(info.value)


def test_mmlu_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "mmlu.json"
    path.write_text(json.dumps(GOOD_MMLU), encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON list"):
        get_adapter("mmlu").load_source(path, split="test")
    path.write_text('[\n{"question": }\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"mmlu\.json:2"):
        get_adapter("mmlu").load_source(path, split="test")
    jsonl = _jsonl(tmp_path, [GOOD_MMLU, {**GOOD_MMLU, "answer": 7}], "mmlu.jsonl")
    with pytest.raises(DataError, match=r"mmlu\.jsonl:2: answer index 7"):
        get_adapter("mmlu").load_source(jsonl, split="test")


# -- the real files ----------------------------------------------------------------------------------

_cache: dict[str, object] = {}


def _math_rows(shared_data: Path) -> tuple[list[dict[str, object]], list[Problem]]:
    if "math" not in _cache:
        path = shared_data / MATH_FILE
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        _cache["math"] = (rows, get_adapter("math").load_source(path, split="test"))
    return _cache["math"]  # type: ignore[return-value]


def test_real_math_loads(shared_data: Path) -> None:
    rows, problems = _math_rows(shared_data)
    assert len(problems) == len(rows) == 5000
    assert len({p.id for p in problems}) == 5000
    for row, p in zip(rows, problems, strict=True):
        assert p.question == row["problem"].strip() and p.reference_solution == row["solution"].strip()
        assert p.answer == last_boxed(row["solution"]) and p.task == "math"
    meta = get_adapter("math").load_metadata(shared_data / MATH_FILE)
    assert [m["source_id"] for m in meta] == [r["id"] for r in rows]
    assert {m["level"] for m in meta} == {f"Level {k}" for k in range(1, 6)}
    assert len({m["type"] for m in meta}) == 7
    assert problems[0].answer == "2" and meta[0] == {"source_id": "algebra/1", "level": "Level 3",
                                                     "type": "Algebra"}


def test_real_math_steps(shared_data: Path) -> None:
    """On every real solution: spans disjoint, ordered, non-empty, covering all non-whitespace text;
    no step cuts inline math in two (each has an even number of unescaped ``$``, figures aside)."""
    rows, _ = _math_rows(shared_data)
    n_steps = []
    for row in rows:
        text = row["solution"]
        spans = math_step_spans(text)
        _check_spans(text, spans)
        for a, b in spans:
            step = text[a:b]
            if "[asy]" not in step:
                assert len(re.findall(r"(?<!\\)\$", step)) % 2 == 0, (row["id"], step)
                opens, closes = (len(re.findall(r"(?<!\\)\\" + re.escape(b), step)) for b in "[]")
                assert opens == closes, (row["id"], step)
        n_steps.append(len(spans))
    assert 4 <= sum(n_steps) / len(n_steps) <= 6  # sentences, not whole solutions
    by_id = {row["id"]: row["solution"] for row in rows}
    assert _steps(by_id["algebra/1271"]) == [
        "Adding the two equations gives $6x = 6$, so $x=1$.",
        "Substituting this into the first equation gives $2 - 3y = 8$.",
        "Solving for $y$ gives $y=-2$, so $xy = \\boxed{-2}$.",
    ]
    assert _steps(by_id["algebra/37"])[-2:] == [
        "If we subtract two times the first equation from the second equation, we obtain $x - y = 31.$",
        "We can then substitute for $x + y$ and $x - y$ to obtain $7\\cdot 31 = \\boxed{217}.$",
    ]


def test_real_math_judged_through_math_verify(shared_data: Path) -> None:
    """A seeded sample: the reference solution is judged correct; the gold restated (``\\dfrac``, a
    ``The answer is $...$`` line) still is; an integer gold plus one is not."""
    adapter = get_adapter("math")
    _, problems = _math_rows(shared_data)
    failures = []
    for p in random.Random(0).sample(problems, SAMPLE):
        restated = p.answer.replace("\\frac", "\\dfrac")
        for text in (p.reference_solution, f"Hence $\\boxed{{{restated}}}$.", f"The answer is ${p.answer}$."):
            if not adapter.is_correct(text, p.answer):
                failures.append((p.id, p.answer, text[-80:]))
        if re.fullmatch(r"-?\d+", p.answer) and adapter.is_correct(f"\\boxed{{{int(p.answer) + 1}}}", p.answer):
            failures.append((p.id, p.answer, "gold + 1 accepted"))
    assert failures == []


@pytest.mark.parametrize(("rel", "n_rows"), MMLU_FILES, ids=[f[0] for f in MMLU_FILES])
def test_real_mmlu(shared_data: Path, rel: str, n_rows: int) -> None:
    adapter = get_adapter("mmlu")
    problems = adapter.load_source(shared_data / rel, split="test")
    records = json.loads((shared_data / rel).read_text(encoding="utf-8"))
    assert len(problems) == len(records) == n_rows
    for p, r in zip(problems, records, strict=True):
        letter = "ABCD"[r["answer"]]
        assert p.answer == f"{letter}. {r['choices'][r['answer']].strip()}"
        assert p.question.splitlines()[-4:] == [f"{x}. {c.strip()}" for x, c in zip("ABCD", r["choices"])]
        assert adapter.is_correct(p.reference_solution, p.answer)
        assert adapter.is_correct(f"The answer is ({letter}).", p.answer)
        assert not any(adapter.is_correct(f"The answer is {x}", p.answer) for x in "ABCD" if x != letter)
        assert len(adapter.split_steps(p.reference_solution)) == 1
