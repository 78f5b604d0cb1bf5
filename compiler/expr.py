"""Evaluation of `.nas` expressions, partial where the value depends on context.

Op bodies may mention `C` (the channels an edge asks for), `C_in` (the
channels it receives), `stride` and `searching`. Those are only known when an
op is placed on an edge of a cell instance, so the compiler evaluates
everything else and keeps a small symbolic tree (plain JSON lists) for the
rest; `eval_sym` finishes the job once the context is known. The runtime uses
the same function, so compiler costs and runtime modules can never disagree.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import attrs

from nasc.errors import NasSemanticError, did_you_mean
from nasc.grammar import ast as A

CONTEXT_VARS = ("C", "C_in", "stride", "searching")
INT64_MAX = 2**63 - 1  # what a size can be in torch; a larger integer is a typo, never a size


def too_large(value: Any) -> bool:
    """An integer beyond 64 bits or a float that overflowed to infinity."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) > INT64_MAX
    return isinstance(value, float) and math.isinf(value)


def _too_large_error(expr: A.Expr) -> NasSemanticError:
    return NasSemanticError("number too large", span=expr.span,
                            hint="integers are limited to 64 bits (about ±9.2e18); floats to about 1.8e308")


@attrs.frozen(repr=False)
class CallValue:
    """A call written as a value, e.g. `sgd(lr = 0.025)` in a search block."""

    name: str
    args: tuple
    kwargs: tuple[tuple[str, Any], ...]

    def __repr__(self) -> str:
        """As written (`int(24.0)`), since error messages show the value a user wrote where a number belongs."""
        parts = [repr(a) for a in self.args] + [f"{k} = {v!r}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"

    def to_json(self) -> dict:
        return {"call": self.name, "args": [to_json(a) for a in self.args],
                "kwargs": {k: to_json(v) for k, v in self.kwargs}}


def call_hint(value: Any) -> str | None:
    """Why a call is not a number: the language has no functions, a call is a value only for settings."""
    if not isinstance(value, CallValue):
        return None
    return (f"`{value.name}(...)` is not a function: a call is only a value for settings such as "
            "`sgd(lr = 0.025)`; round with `//` (e.g. `C * 3 // 2`)")


@attrs.frozen
class Ramp:
    """`start -> end`: a value annealed over the search (a temperature, a drop rate)."""

    start: Any
    end: Any

    def to_json(self) -> dict:
        return {"from": to_json(self.start), "to": to_json(self.end)}


def to_json(value: Any) -> Any:
    """A JSON-able form of an evaluated value (tuples become lists)."""
    if isinstance(value, (CallValue, Ramp)):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def is_sym(value: Any) -> bool:
    """Symbolic trees are lists whose head is an operator or `var`; real lists are tuples."""
    return isinstance(value, list)


_BINOPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


def _apply(op: str, left: Any, right: Any) -> Any:
    if op == "and":
        return bool(left) and bool(right)
    if op == "or":
        return bool(left) or bool(right)
    if op == "not":
        return not left
    if op == "neg":
        return -left
    if op == "**" and isinstance(right, (int, float)) and abs(right) > 1024 and abs(left) > 1:
        raise OverflowError("number too large")  # 10 ** 10 ** 10 would never finish
    result = _BINOPS[op](left, right)
    if isinstance(result, float) and result.is_integer() and op == "/" and isinstance(left, int) and isinstance(right, int):
        return int(result)
    return result


def evaluate(expr: A.Expr, env: Mapping[str, Any], syms: frozenset[str] = frozenset()) -> Any:
    """Evaluate `expr`; names in `syms` stay symbolic and make the result a tree.

    Raises `NasSemanticError` at the expression's span for unknown names,
    type errors and division by zero.
    """
    if isinstance(expr, A.Num):
        if too_large(expr.value):
            raise _too_large_error(expr)
        return expr.value
    if isinstance(expr, (A.Str, A.Bool)):
        return expr.value
    if isinstance(expr, A.Name):
        if expr.id in env:
            return env[expr.id]
        if expr.id in syms:
            return ["var", expr.id]
        known = sorted(set(env) | set(syms))
        raise NasSemanticError(f"unknown name {expr.id!r}", span=expr.span,
                               hint=did_you_mean(expr.id, known) or (f"names in scope: {', '.join(known)}" if known else None))
    if isinstance(expr, A.ListExpr) or isinstance(expr, A.TupleExpr):
        return tuple(evaluate(i, env, syms) for i in expr.items)
    if isinstance(expr, A.Arrow):
        return Ramp(evaluate(expr.start, env, syms), evaluate(expr.end, env, syms))
    if isinstance(expr, A.CallExpr):
        return CallValue(expr.name, tuple(evaluate(a, env, syms) for a in expr.args),
                         tuple((k, evaluate(v, env, syms)) for k, v in expr.kwargs))
    if isinstance(expr, A.Unary):
        value = evaluate(expr.operand, env, syms)
        op = "neg" if expr.op == "-" else "not"
        if is_sym(value):
            return [op, value]
        return _checked(op, value, None, expr)
    if isinstance(expr, A.BinOp):
        left, right = evaluate(expr.left, env, syms), evaluate(expr.right, env, syms)
        if is_sym(left) or is_sym(right):
            return [expr.op, left, right]
        return _checked(expr.op, left, right, expr)
    raise NasSemanticError(f"cannot evaluate {type(expr).__name__}", span=getattr(expr, "span", None))


def _checked(op: str, left: Any, right: Any, expr: A.Expr) -> Any:
    numeric = (int, float)
    if op in ("and", "or", "not"):
        return _apply(op, left, right)
    operands = (left,) if op == "neg" else (left, right)
    if not all(isinstance(v, numeric) and not isinstance(v, bool) for v in operands):
        if op == "+" and isinstance(left, str) and isinstance(right, str):
            return left + right
        kinds = " and ".join(type(v).__name__ for v in operands)
        raise NasSemanticError(f"operator {op!r} does not apply to {kinds}", span=expr.span)
    try:
        result = _apply(op, left, right)
    except ZeroDivisionError:
        raise NasSemanticError("division by zero", span=expr.span) from None
    except OverflowError:
        raise _too_large_error(expr) from None
    if too_large(result):
        raise _too_large_error(expr)
    return result


def eval_sym(value: Any, env: Mapping[str, Any]) -> Any:
    """Finish a partially evaluated value once the context (`C`, `C_in`, ...) is known."""
    if not is_sym(value):
        return value
    head = value[0]
    if head == "var":
        return env[value[1]]
    if head in ("neg", "not"):
        return _apply(head, eval_sym(value[1], env), None)
    left, right = eval_sym(value[1], env), eval_sym(value[2], env)
    if head in ("/", "//", "%") and right == 0:
        raise ZeroDivisionError(f"division by zero in {value}")
    return _apply(head, left, right)


def sym_vars(value: Any) -> set[str]:
    """Context variables a (possibly symbolic) value depends on."""
    if not is_sym(value):
        return set()
    if value[0] == "var":
        return {value[1]}
    return set().union(*(sym_vars(v) for v in value[1:]))


def as_int(value: Any) -> int | None:
    """An integral number as int (so `2 * C / 2` works), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def bind(value: Any, env: Mapping[str, Any]) -> Any:
    """Substitute the context variables known in `env`, folding what becomes constant."""
    if not is_sym(value):
        return value
    head = value[0]
    if head == "var":
        return env.get(value[1], value)
    parts = [bind(v, env) for v in value[1:]]
    if any(is_sym(p) for p in parts):
        return [head, *parts]
    if head in ("neg", "not"):
        return _apply(head, parts[0], None)
    return _apply(head, parts[0], parts[1])
