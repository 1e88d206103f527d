"""Answer extraction and grading: boxed answers, numeric normalisation; the calculator evaluator."""

import pytest

from jaxcook.rl.envs.calculator import run_calculator
from jaxcook.rl.envs.grading import (
    answers_match,
    extract_boxed,
    extract_last_number,
    grade_boxed,
    parse_number,
)
from jaxcook.rl.envs.safe_eval import UnsafeExpressionError, format_number, safe_eval


@pytest.mark.parametrize(
    "text, want",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last box counts
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed 7", "7"),
        ("\\fbox{x}", "x"),
        ("no box here", None),
        ("\\boxed{12", None),  # cut off
    ],
)
def test_extract_boxed(text, want):
    assert extract_boxed(text) == want


@pytest.mark.parametrize(
    "given, reference",
    [
        ("1,000", "1000"),
        ("12.0", "12"),
        ("12.", "12"),
        ("$5$", "5"),
        ("\\frac{3}{4}", "0.75"),
        ("\\dfrac{6}{8}", "3/4"),
        ("-0.5", "-1/2"),
        ("50\\%", "50"),
        ("18 \\text{ }", "18"),
        ("\\text{Paris}", "paris"),
        ("1,234,567", "1234567"),
    ],
)
def test_answers_match(given, reference):
    assert answers_match(given, reference)


@pytest.mark.parametrize(
    "given, reference",
    [("13", "12"), ("1/3", "0.33"), ("12", "twelve"), (None, "1"), ("1,00", "100"), ("", "0")],
)
def test_answers_differ(given, reference):
    assert not answers_match(given, reference)


def test_grade_boxed_and_numbers():
    assert grade_boxed("3 * 4 = 12, so \\boxed{12}", "12")
    assert not grade_boxed("the answer is 12", "12")  # no box: not graded as correct
    assert parse_number("(3)/(4)") == parse_number("0.75")
    assert parse_number("x + 1") is None
    assert extract_last_number("23 + 45 = 68.") == "68"
    assert extract_last_number("it is 1,200 apples") == "1,200"
    assert extract_last_number("none") is None


@pytest.mark.parametrize(
    "expression, value",
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-3 ** 2", -9),  # Python precedence: -(3**2)
        ("2^10", 1024),
        ("6 × 7", 42),
        ("17 % 5", 2),
        ("1.5 * 4", 6.0),
    ],
)
def test_safe_eval_arithmetic(expression, value):
    assert safe_eval(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('echo hi')",
        "open('/etc/passwd').read()",
        "x + 1",
        "(1).__class__",
        "[1, 2][0]",
        "'a' * 3",
        "1 if 1 else 2",
        "lambda: 1",
        "2 ** 1000",  # exponent above the bound
        "9 ** 9 ** 9",
        "10 ** 60 * 10 ** 60",  # result above 10^100
        "1 < 2",
        "True + 1",
        "1" * 201,  # too long
        "1 +",
    ],
)
def test_safe_eval_refuses_unsafe_or_huge(expression):
    with pytest.raises(UnsafeExpressionError):
        safe_eval(expression)


def test_calculator_tool_replies():
    assert run_calculator('{"expression": "12 * 11"}') == "132"
    assert run_calculator('{"expression": "1 / 0"}') == "error: division by zero"
    assert run_calculator('{"expression": "__import__(\\"os\\")"}').startswith("error: Call is not allowed")
    assert run_calculator('{"expr": "1"}').startswith("error: call calculator with")
    assert run_calculator("not json").startswith("error")
    assert (
        format_number(2.5) == "2.5" and format_number(6.0) == "6" and format_number(1 / 3) == "0.333333333333"
    )
