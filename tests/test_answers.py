"""Math answer extraction, normalisation and equivalence (``rlmec_core.tasks.answers``)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmec_core.tasks.answers import extract_math_answer, math_equal, normalize_math_answer, parse_gold

# -- extraction ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18", "18"),
        ("#### 18", "18"),
        ("\\boxed{18}", "18"),
        ("$18.00", "18.00"),
        ("18 dollars", "18"),  # last number
        ("18.0", "18.0"),
        ("She makes 9 * 2 = $18 every day.\nThe answer is $18.00.", "$18.00"),
        ("The answer is 18 dollars", "18 dollars"),
        ("the ANSWER is: 1,234.", "1,234"),
        ("The answer is 3.\nWait.\nThe answer is 4", "4"),  # the last statement wins
        ("The answer is 5\n#### 6", "5"),  # 'The answer is' beats '####'
        ("#### 5\n#### 6", "6"),
        ("The answer is 7, so \\boxed{8}", "8"),  # \boxed beats everything
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # last, balanced braces
        ("\\boxed{2} and an unclosed \\boxed{3", "2"),
        ("\\boxed {42}", "42"),
        ("The answer is\n12 apples", "12"),  # nothing after 'The answer is' on its line: fall through
        ("I have 3 apples and 1,250 pears.", "1,250"),
        ("It fell to -4 degrees", "-4"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_math_answer(text: str, expected: str | None) -> None:
    assert extract_math_answer(text) == expected


# -- normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("$18.00", "18.00"),
        ("\\$18", "18"),
        ("18 dollars", "18"),
        ("18 dollars per hour.", "18"),
        ("1,234", "1234"),
        ("1,234,567.5", "1234567.5"),
        ("1{,}234", "1234"),
        ("1\\,234\\,567", "1234567"),
        ("1 234", "1 234"),  # a space is not taken for a thousands separator
        ("1,2", "1,2"),  # not a thousands separator: left alone
        (" 18. ", "18"),
        (".5", ".5"),  # a leading period is part of the number
        ("\\text{18 apples}", "18"),
        ("\\textbf{\\text{7}}", "7"),
        ("\\boxed{5}", "5"),
        ("25\\%", "25"),
        ("25%", "25"),
        ("9 * 2 = 18", "18"),
        ("1/2 cup", "1/2"),
        ("30 °C", "30"),
        ("\u22123", "-3"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("x + 1", "x + 1"),
    ],
)
def test_normalize_math_answer(raw: str, expected: str) -> None:
    assert normalize_math_answer(raw) == expected


# -- equivalence -----------------------------------------------------------------------------------

_CORRECT_FOR_18 = ["The answer is 18", "#### 18", "\\boxed{18}", "$18.00", "18 dollars", "18.0"]


@pytest.mark.parametrize("solution", _CORRECT_FOR_18)
def test_predictions_equal_to_18(solution: str) -> None:
    pred = extract_math_answer(solution)
    assert pred is not None
    assert math_equal(pred, "18")


@pytest.mark.parametrize("solution", ["17", "180", "The answer is 1.8", "#### -18", "\\boxed{81}"])
def test_predictions_not_equal_to_18(solution: str) -> None:
    pred = extract_math_answer(solution)
    assert pred is not None
    assert not math_equal(pred, "18")


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("51", "51.0"),  # SVAMP golds are floats
        ("51.0", "51"),
        ("1,234", "1234"),
        ("1234", "1,234"),
        ("$1,234.00", "1234"),
        ("0.5", "1/2"),
        ("1/2", "0.5"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{3}{4}", "0.75"),
        ("-3", "-3.0"),
        ("25%", "25"),
        ("2^{10}", "1024"),
        ("x + 1", "1 + x"),
    ],
)
def test_math_equal(pred: str, gold: str) -> None:
    assert math_equal(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [("17", "18"), ("180", "18"), ("1.2", "12"), ("1/3", "0.3"), ("2\\pi", "2"), ("-5", "5"), ("1234", "123")],
)
def test_math_not_equal(pred: str, gold: str) -> None:
    assert not math_equal(pred, gold)


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        ".",
        "}{",
        "\\boxed{",
        "\\frac{",
        "$$",
        "((((",
        "= =",
        "\x00\x01",
        "🙂",
        "NaN",
        "1" * 5000,
        "\\frac{1}{0}",
        "2^{2^{2^{2^{2^{2}}}}}",  # verify() on this never returns: rejected before verifying
        "100000000!",
        "(10^9)!!",
        "(10^{500})^{10000}",
    ],
)
def test_junk_never_raises_and_is_not_18(junk: str) -> None:
    start = time.monotonic()
    assert math_equal(junk, "18") is False
    assert math_equal("18", junk) is False
    assert time.monotonic() - start < 5


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_math_equal_never_raises(pred: str, gold: str) -> None:
    assert isinstance(math_equal(pred, gold), bool)
    assert isinstance(parse_gold(gold), bool)
    extract_math_answer(pred)


@pytest.mark.parametrize("gold", ["18", "51.0", "1,234", "-3", "0.5", "1/2", "\\frac{1}{2}", "70000"])
def test_parse_gold_accepts_numbers(gold: str) -> None:
    assert parse_gold(gold)


@pytest.mark.parametrize("gold", ["", "  ", "}{", "2^{2^{2^{2^{2^{2}}}}}"])
def test_parse_gold_rejects_junk(gold: str) -> None:
    assert not parse_gold(gold)


def test_thread_safe() -> None:
    """math-verify's default signal.alarm timeouts raise outside the main thread; ours are disabled.

    The pairs are textually different after normalisation, so they go through parse + verify.
    """
    pairs = [("0.5", "1/2"), ("18.0", "18"), ("$1,234.00", "1234"), ("\\frac{3}{4}", "0.75")]
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.extend(math_equal(p, g) for p, g in pairs)
            results.append(parse_gold("51.0"))
            results.append(not math_equal("17", "18"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == [True] * (len(pairs) + 2) * len(threads)
