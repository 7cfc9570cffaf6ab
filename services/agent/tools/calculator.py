"""A calculator that is safe by construction: a restricted AST evaluator.

Only numbers, + - * / // % **, unary +/-, parentheses, the constants pi, e
and tau, and an allowlist of math functions are accepted; everything else
(names, attributes, subscripts, comprehensions, strings, lambdas) is
rejected before anything runs. Sizes are bounded while evaluating, so
`9**9**9` or `10**10**10` fail at once instead of hanging the process.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_EXPRESSION_CHARS = 500
MAX_NODES = 200
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4_096  # about 1,233 decimal digits

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_MAX_FUNCTION_ARGS = 16


class CalculatorError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression, or CalculatorError."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise CalculatorError(f"not a valid expression: {error.msg}") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise CalculatorError(f"expression has {nodes} parts; the limit is {MAX_NODES}")
    try:
        return _eval(tree.body)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("the result is too large") from None
    except (ValueError, TypeError) as error:
        if isinstance(error, CalculatorError):
            raise
        raise CalculatorError(f"math error: {error}") from None


def format_number(value: Number) -> str:
    """Integers exactly; floats to 15 significant digits, integral floats without '.0'."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".15g")


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        # bool is an int subclass; True + True is not arithmetic anyone meant.
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"only numbers are allowed, not {type(node.value).__name__} {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _power(left, right)
        operation = _BINARY.get(type(node.op))
        if operation is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed; use + - * / // % **")
        return _checked(operation(left, right))
    if isinstance(node, ast.UnaryOp):
        unary = _UNARY.get(type(node.op))
        if unary is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed")
        return unary(_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}; allowed constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.Call):
        return _call(node)
    raise CalculatorError(f"{type(node).__name__} is not allowed; use numbers, operators and math functions")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        allowed = ", ".join(sorted(_FUNCTIONS))
        raise CalculatorError(f"only these functions may be called: {allowed}")
    if node.keywords or len(node.args) > _MAX_FUNCTION_ARGS:
        raise CalculatorError(f"{node.func.id}() takes up to {_MAX_FUNCTION_ARGS} positional numbers")
    arguments = [_eval(argument) for argument in node.args]
    return _checked(_FUNCTIONS[node.func.id](*arguments))


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {format_number(exponent)} is above the limit of {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        # Estimate the size before computing: bit_length(base) * exponent bounds the result.
        if base.bit_length() * exponent > MAX_INT_BITS:
            raise CalculatorError("the result is too large")
        return base**exponent
    return _checked(math.pow(base, exponent))


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError("the result is too large")
    if isinstance(value, float) and math.isnan(value):
        raise CalculatorError("the result is not a number")
    if isinstance(value, float) and math.isinf(value):
        raise CalculatorError("the result is too large")
    return value
