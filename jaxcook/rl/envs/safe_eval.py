"""A safe arithmetic evaluator for model-written expressions (the calculator tool), without `eval`.

The expression is parsed with `ast.parse(mode="eval")` (parsing runs no code) and the tree is
walked by hand; only number literals, + - * / // % **, unary +/- and parentheses are allowed.
Names, calls, attributes, subscripts, comparisons, strings, etc. are refused. Sizes are bounded
so a hostile expression cannot exhaust memory or time: at most `MAX_CHARS` characters, powers
only with |exponent| <= `MAX_EXPONENT` and a result below 10^`MAX_DIGITS`.

Convenience spellings accepted: `^` for power, `×`/`·` for *, `÷` for /.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_CHARS = 200
MAX_EXPONENT = 64
MAX_DIGITS = 100


class UnsafeExpressionError(ValueError):
    """The expression uses something other than arithmetic, or is too large."""


_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check_size(value: int | float) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsafeExpressionError("result is not finite")
    if abs(value) >= 10**MAX_DIGITS:
        raise UnsafeExpressionError(f"result has more than {MAX_DIGITS} digits")
    return value


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise UnsafeExpressionError(f"only numbers are allowed, got {node.value!r}")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise UnsafeExpressionError(f"exponent {right} is larger than {MAX_EXPONENT}")
            if left != 0 and abs(right) * math.log10(abs(left)) >= MAX_DIGITS:
                raise UnsafeExpressionError(f"result has more than {MAX_DIGITS} digits")
        try:
            result = _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError as e:
            raise ZeroDivisionError("division by zero") from e
        if isinstance(result, complex):
            raise UnsafeExpressionError("result is not a real number")
        return _check_size(result)
    raise UnsafeExpressionError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def safe_eval(expression: str) -> int | float:
    """The value of an arithmetic expression. Raises `UnsafeExpressionError`, `ZeroDivisionError`
    or `SyntaxError` (as `UnsafeExpressionError`) on anything else."""
    if not isinstance(expression, str):
        raise UnsafeExpressionError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_CHARS:
        raise UnsafeExpressionError(f"expression is longer than {MAX_CHARS} characters")
    text = expression.replace("^", "**").replace("×", "*").replace("·", "*").replace("÷", "/")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError) as e:
        raise UnsafeExpressionError(f"not an arithmetic expression: {expression!r}") from e
    return _eval(tree)


def format_number(value: int | float) -> str:
    """A number as a calculator shows it: integers exactly, other values to 12 significant digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"
