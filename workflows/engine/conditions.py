"""Condition expressions for the ``condition`` step and broadcasts' audiences.

A condition is an expression (expressions.py) read as true or false: comparisons,
``and``/``or``/``not``, ``contains``, ``in``, ``is set``, and since the expressions
grew arithmetic and functions, ``vars.price * 0.9 > 100`` or
``age(vars.birthday) >= 18`` as well.

Numbers written as text (an answer typed by the user, "25") compare as numbers.
A comparison that makes no sense (``"abc" > 3``) is false instead of an error, so a
conversation never dies on a user's odd input. Numbers go through the bounded parser
(numbers.py): a value such as ``1e99999999`` is not a number here, only text.

Operators' input is bounded: at most :data:`MAX_CONDITION` characters and
:data:`MAX_DEPTH` levels of brackets, calls or ``not``; the parser counts the depth
itself, so no expression can reach Python's recursion limit. ``and``/``or`` chains are
flat nodes, so evaluation depth is the bracket depth, not the chain length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflows.engine.expressions import (
    MAX_DEPTH,
    MAX_EXPRESSION,
    ExpressionError,
    expression_parse,
    tree_evaluate,
    truthy,
)

# One error class for both: a condition *is* an expression.
ConditionError = ExpressionError
MAX_CONDITION = MAX_EXPRESSION  # characters

__all__ = ["MAX_CONDITION", "MAX_DEPTH", "ConditionError", "condition_evaluate", "condition_parse"]


def condition_parse(source: str) -> tuple:
    """Parse (cached) and check every variable name; raises :class:`ConditionError` only."""
    if not isinstance(source, str):
        raise ConditionError("the condition must be a text")
    if len(source) > MAX_CONDITION:
        raise ConditionError(
            f"the condition is {len(source)} characters long; at most {MAX_CONDITION}"
        )
    return expression_parse(source, condition=True)


def condition_evaluate(source: str, context: Mapping[str, Any]) -> bool:
    """True when the expression holds for ``context`` (the same tree templates see)."""
    return truthy(tree_evaluate(condition_parse(source), context))
