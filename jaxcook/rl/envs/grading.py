"""Answer extraction and grading: `\\boxed{...}`, plain answers, numeric normalisation.

Numbers compare exactly as fractions after normalisation: "1,000" = "1000", "12.0" = "12",
"\\frac{3}{4}" = "3/4" = "0.75", "$5$" = "5", "50\\%" = "50". Non-numeric answers compare as
normalised strings (whitespace, `$`, `\\text{}`, trailing period removed).
"""

from __future__ import annotations

import re
from fractions import Fraction

BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."
PLAIN_INSTRUCTION = "Answer with only the final answer, nothing else."


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if absent."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        # `\boxed 5` (no braces) is valid LaTeX for a single token.
        m = list(re.finditer(r"\\boxed\s+([^\s$]+)", text))
        return m[-1].group(1) if m else None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None  # unbalanced: the answer was cut off


def _unwrap_command(s: str, command: str) -> str:
    """Replace `\\command{x}` by `x` (one level of nested braces allowed inside x)."""
    return re.sub(r"\\" + command + r"\s*\{((?:[^{}]|\{[^{}]*\})*)\}", r"\1", s)


def normalize_answer(s: str) -> str:
    """A canonical string for comparison (LaTeX decorations, spaces and thousands commas removed)."""
    s = s.strip()
    for command in ("text", "textbf", "mathrm", "mbox", "boxed"):
        s = _unwrap_command(s, command)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\1/\2", s)  # \frac12
    for junk in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "$", "^\\circ", "^{\\circ}", "\\%", "%"):
        s = s.replace(junk, "")
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # 1,000,000 -> 1000000
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    return s


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"


def parse_number(s: str) -> Fraction | None:
    """An exact value for a normalised numeric answer ("12", "-0.5", "3/4", "(3)/(4)"), else None."""
    s = normalize_answer(s)
    m = re.fullmatch(rf"\(?({_NUMBER})\)?(?:/\(?({_NUMBER})\)?)?", s)
    if m is None:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            value /= Fraction(m.group(2))
    except (ValueError, ZeroDivisionError):
        return None
    return value


def answers_match(given: str | None, reference: str) -> bool:
    """Numerically equal when both parse as numbers, else equal as normalised strings."""
    if given is None:
        return False
    a, b = parse_number(given), parse_number(reference)
    if a is not None and b is not None:
        return a == b
    if (a is None) != (b is None):
        return False
    return normalize_answer(given).lower() == normalize_answer(reference).lower()


def grade_boxed(response: str, reference: str) -> bool:
    """True when the last `\\boxed{}` of `response` matches `reference`."""
    return answers_match(extract_boxed(response), reference)


def extract_plain(response: str) -> str:
    """A bare answer: the response stripped of spaces and a trailing period ("42." -> "42")."""
    return response.strip().rstrip(".").strip()


def extract_last_number(response: str) -> str | None:
    """The last number written in `response` (thousands commas allowed), None if there is none."""
    found = re.findall(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+", response)
    return found[-1].rstrip(",") if found else None
