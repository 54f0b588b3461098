"""A safe arithmetic tool for the ReAct example: `tool calculate = python("examples.tools:calculate")`.

The expression is parsed with `ast` and evaluated node by node; only numbers, + - * / // % **,
unary signs and parentheses are allowed (no names, calls or attributes, so nothing can run).
"""
from __future__ import annotations

import ast
import operator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPONENT = 100
_MAX_LENGTH = 200
_MAX_BITS = 4096              # results larger than this are refused, so nesting powers cannot exhaust memory


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression such as "(1889 - 1832) * 2"; + - * / // % ** and parentheses.

    >>> calculate("(1889 - 1832) * 2")
    114
    >>> calculate("2 ** 0.5 > 1")
    Traceback (most recent call last):
    ...
    ValueError: not arithmetic: '>' is not allowed
    """
    text = str(expression).strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if text.endswith("="):
        text = text[:-1]
    if len(text) > _MAX_LENGTH:
        raise ValueError(f"expression longer than {_MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.replace(",", ""), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    value = _eval(tree.body)
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53 else value


def _eval(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ValueError(f"exponents above {_MAX_EXPONENT} are not allowed")
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and left.bit_length() * abs(right) > _MAX_BITS:
            raise ValueError("the result is too large")
        try:
            return _small(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError(f"not arithmetic: {_describe(node)} is not allowed")


def _small(value):
    if isinstance(value, complex):
        raise ValueError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise ValueError("the result is too large")
    return value


def _describe(node: ast.AST) -> str:
    ops = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}
    if isinstance(node, ast.Compare) and node.ops:
        return repr(ops.get(type(node.ops[0]), type(node.ops[0]).__name__))
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Call):
        return "a function call"
    if isinstance(node, ast.Constant):
        return f"the value {node.value!r}"
    return type(node).__name__
