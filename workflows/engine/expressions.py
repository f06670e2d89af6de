"""Expressions for conditions, ``set_variable`` calculations and template placeholders.

Grammar (parsed by hand, never ``eval``)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := sum [ OP sum | "contains" sum | ["not"] "in" sum | "is" ["not"] "set" ]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | primary
    primary    := number | "string" | true | false | null | path | NAME "(" args ")"
                | "(" expr ")" | "[" expr, ... "]"
    OP         := == | != | < | <= | > | >=

Why bounded, and how:

- the text is at most :data:`MAX_EXPRESSION` characters and is read in one pass
  (every token regex is linear, each position is read once);
- brackets, lists, calls, ``not`` and unary minus count towards :data:`MAX_DEPTH`;
  the parser counts the depth itself, so no expression reaches Python's recursion
  limit; ``and``/``or``/``+``/``*`` chains are flat nodes;
- numbers are bounded Decimals (numbers.py): every arithmetic result is rounded to
  :data:`~workflows.engine.numbers.MAX_DIGITS` digits and a result beyond the bounds
  is "no value", never a hundred-million-digit integer;
- text results are at most :data:`MAX_STRING` characters, checked *before* they
  are built (``replace`` counts first);
- every evaluation has a budget of :data:`MAX_STEPS` units: a node costs one, text
  work costs one more per 100 characters.

A user's odd value is not an error: ``"abc" * 2``, a division by zero or a missing
variable give ``null`` (nothing), and a comparison that makes no sense is false, so a
conversation never dies on what a user typed. Only the operator's own text (does not
parse, too deep, too long) and the cost bounds raise :class:`ExpressionError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from workflows.engine import expression_values as ev
from workflows.engine.expression_values import Budget, ExpressionError
from workflows.engine.numbers import NumberError, number_parse
from workflows.engine.paths import PATH_RE, path_check, value_resolve

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION",
    "ExpressionError",
    "expression_check",
    "expression_evaluate",
    "expression_parse",
    "expression_plain",
    "truthy",
]

TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\+|-|\*|/|%)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    )""",
    re.VERBOSE,
)
# A path segment after the root may be a number: ``trigger.match.1``.
SEGMENT_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_]*|\d{1,3})$")
MAX_EXPRESSION = 1000  # characters
MAX_DEPTH = 20  # nested brackets, lists, calls, "not"s and minus signs
MAX_STRING = ev.MAX_STRING
MAX_STEPS = ev.MAX_STEPS
KEYWORDS = {"and", "or", "not", "in", "contains", "is", "set", "true", "false", "null"}
COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # literal op kw name
    value: Any


def _tokenize(source: str) -> list[Token]:
    tokens, position = [], 0
    source = source.rstrip()
    while position < len(source):
        match = TOKEN_RE.match(source, position)
        if not match or match.end() == position:
            raise ExpressionError(
                f"cannot read the expression near '{source[position:].strip()[:40]}'"
            )
        position = match.end()
        kind = match.lastgroup
        raw = match.group(kind)
        if kind == "number":
            try:
                tokens.append(Token("literal", number_parse(raw)))
            except NumberError as exc:
                raise ExpressionError(f"the number {raw[:20]} {exc}") from None
        elif kind == "string":
            text = re.sub(r"\\(.)", r"\1", raw[1:-1])
            if len(text) > MAX_STRING:
                raise ExpressionError(f"a text is longer than {MAX_STRING} characters")
            tokens.append(Token("literal", text))
        elif kind == "op":
            tokens.append(Token("op", raw))
        elif raw in KEYWORDS:
            literal = {"true": True, "false": False, "null": None}
            tokens.append(Token("literal", literal[raw]) if raw in literal else Token("kw", raw))
        else:
            tokens.append(Token("name", raw))
    return tokens


# AST nodes are tuples: ("or", a, b, ...) ("and", a, b, ...) ("not", a) ("cmp", op, l, r)
# ("isset", operand, negated) ("truthy", operand) ("arith", first, ((op, node), ...))
# ("neg", a) ("call", name, (args...)) ("path", p) ("lit", v) ("list", [items]).


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def deeper(self) -> None:
        """Called on every nesting step; refuses depth before Python's stack would."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(
                f"the expression is nested more than {MAX_DEPTH} levels deep; "
                "split it or remove brackets"
            )

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.i + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, kind: str | None = None, value: Any = None) -> Token:
        token = self.peek()
        if token is None or (kind and token.kind != kind) or (value and token.value != value):
            want = value or kind or "more"
            got = "the end" if token is None else f"'{_show(token)}'"
            raise ExpressionError(f"expected {want} but found {got}")
        self.i += 1
        return token

    def accept(self, kind: str, value: Any) -> bool:
        token = self.peek()
        if token is not None and token.kind == kind and token.value == value:
            self.i += 1
            return True
        return False

    def parse(self, *, condition: bool) -> tuple:
        if not self.tokens:
            raise ExpressionError("the expression is empty")
        node = self.expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected '{_show(self.peek())}'")
        if condition and node[0] not in {"or", "and", "not", "cmp", "isset"}:
            node = ("truthy", node)
        return node

    def expr(self) -> tuple:
        nodes = [self.and_expr()]
        while self.accept("kw", "or"):
            nodes.append(self.and_expr())
        return nodes[0] if len(nodes) == 1 else ("or", *nodes)

    def and_expr(self) -> tuple:
        nodes = [self.not_expr()]
        while self.accept("kw", "and"):
            nodes.append(self.not_expr())
        return nodes[0] if len(nodes) == 1 else ("and", *nodes)

    def not_expr(self) -> tuple:
        if self.accept("kw", "not"):
            self.deeper()
            node = ("not", self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.sum()
        token = self.peek()
        if token is None:
            return left
        if token.kind == "op" and token.value in COMPARISONS:
            self.i += 1
            return ("cmp", token.value, left, self.sum())
        if token.kind == "kw" and token.value in {"contains", "in"}:
            self.i += 1
            return ("cmp", token.value, left, self.sum())
        if token.kind == "kw" and token.value == "not":
            nxt = self.peek(1)
            if nxt is not None and nxt.kind == "kw" and nxt.value == "in":
                self.i += 2
                return ("not", ("cmp", "in", left, self.sum()))
        if token.kind == "kw" and token.value == "is":
            self.i += 1
            negated = self.accept("kw", "not")
            self.take("kw", "set")
            return ("isset", left, negated)
        return left

    def sum(self) -> tuple:
        first = self.product()
        rest = []
        while (token := self.peek()) is not None and token.kind == "op" and token.value in "+-":
            self.i += 1
            rest.append((token.value, self.product()))
        return ("arith", first, tuple(rest)) if rest else first

    def product(self) -> tuple:
        first = self.unary()
        rest = []
        while (token := self.peek()) is not None and token.kind == "op" and token.value in "*/%":
            self.i += 1
            rest.append((token.value, self.unary()))
        return ("arith", first, tuple(rest)) if rest else first

    def unary(self) -> tuple:
        if self.accept("op", "-"):
            self.deeper()
            node = self.unary()
            self.depth -= 1
            if node[0] == "lit" and isinstance(node[1], Decimal):
                return ("lit", -node[1])  # "-3.5" is a literal, as it always was
            return ("neg", node)
        return self.primary()

    def primary(self) -> tuple:
        token = self.take()
        if token.kind == "literal":
            return ("lit", token.value)
        if token.kind == "name":
            return self.name(token.value)
        if token.kind == "op" and token.value == "(":
            self.deeper()
            node = self.expr()
            self.take("op", ")")
            self.depth -= 1
            return node
        if token.kind == "op" and token.value == "[":
            self.deeper()
            items = []
            if not self.accept("op", "]"):
                items.append(self.expr())
                while self.accept("op", ","):
                    items.append(self.expr())
                self.take("op", "]")
            self.depth -= 1
            return ("list", items)
        raise ExpressionError(f"expected a value but found '{_show(token)}'")

    def name(self, raw: str) -> tuple:
        nxt = self.peek()
        if nxt is not None and nxt.kind == "op" and nxt.value == "(":
            if raw not in ev.FUNCTIONS:
                known = ", ".join(sorted(ev.FUNCTIONS))
                shown = raw if PATH_RE.match(raw) else raw[:40]
                if not PATH_RE.match(raw) or "." in raw:
                    raise ExpressionError(f"'{shown}' is not a variable name or a function")
                raise ExpressionError(f"unknown function '{shown}' (known: {known})")
            self.i += 1
            self.deeper()
            args = []
            if not self.accept("op", ")"):
                args.append(self.expr())
                while self.accept("op", ","):
                    args.append(self.expr())
                self.take("op", ")")
            self.depth -= 1
            low, high = ev.FUNCTIONS[raw][1:3]
            if not low <= len(args) <= high:
                wanted = str(low) if low == high else f"{low} to {high}"
                raise ExpressionError(f"{raw}() takes {wanted} values, not {len(args)}")
            return ("call", raw, tuple(args))
        segments = raw.split(".")
        if not PATH_RE.match(segments[0]) or not all(SEGMENT_RE.match(s) for s in segments[1:]):
            raise ExpressionError(f"'{raw[:40]}' is not a variable name")
        return ("path", tuple(segments))


def _show(token: Token) -> str:
    return str(token.value)[:40]


def expression_parse(source: str, *, condition: bool = False) -> tuple:
    """Parse (cached) and check every variable name; raises :class:`ExpressionError` only.

    ``condition`` wraps a bare value in a truth test (what a condition branch wants).
    """
    if not isinstance(source, str):
        raise ExpressionError("the expression must be a text")
    if len(source) > MAX_EXPRESSION:
        raise ExpressionError(
            f"the expression is {len(source)} characters long; at most {MAX_EXPRESSION}"
        )
    return _parse(source, condition)


@lru_cache(maxsize=2048)
def _parse(source: str, condition: bool) -> tuple:
    tree = _Parser(_tokenize(source)).parse(condition=condition)
    for path in _paths(tree):
        problem = path_check(path)
        if problem:
            raise ExpressionError(problem)
    return tree


def _paths(node: Any):
    """Every path in the tree; iterative (the tree is at most MAX_DEPTH deep anyway)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple) and current and current[0] == "path":
            yield current[1]
        elif isinstance(current, tuple | list):
            stack.extend(child for child in current if isinstance(child, tuple | list))


def expression_check(source: Any) -> str | None:
    """Why ``source`` is not a valid expression, or None."""
    try:
        expression_parse(source)
    except ExpressionError as exc:
        return str(exc)
    return None


# --- Evaluation ---------------------------------------------------------------


def _evaluate(node: tuple, context: Mapping[str, Any], budget: Budget) -> Any:
    budget.charge(1)
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "path":
        return ev.from_context(value_resolve(context, node[1]), budget)
    if kind == "or":
        return any(truthy(_evaluate(child, context, budget)) for child in node[1:])
    if kind == "and":
        return all(truthy(_evaluate(child, context, budget)) for child in node[1:])
    if kind == "not" or kind == "truthy":
        value = truthy(_evaluate(node[1], context, budget))
        return not value if kind == "not" else value
    if kind == "isset":
        value = _evaluate(node[1], context, budget)
        is_set = value is not None and value != "" and value != []
        return not is_set if node[2] else is_set
    if kind == "cmp":
        left = _evaluate(node[2], context, budget)
        return ev.compare(node[1], left, _evaluate(node[3], context, budget))
    if kind == "arith":
        value = _evaluate(node[1], context, budget)
        for op, child in node[2]:
            value = ev.arithmetic(op, value, _evaluate(child, context, budget), budget)
        return value
    if kind == "neg":
        return ev.arithmetic("-", Decimal(0), _evaluate(node[1], context, budget), budget)
    if kind == "list":
        return [_evaluate(item, context, budget) for item in node[1]]
    # "call"
    args = [_evaluate(arg, context, budget) for arg in node[2]]
    return ev.FUNCTIONS[node[1]][0](budget, *args)


def truthy(value: Any) -> bool:
    """A value as a condition: numbers by their value, texts and lists when not empty."""
    number = ev.as_number(value)
    return bool(number) if number is not None else bool(value)


def expression_evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """The value of ``source`` for ``context``, as stored in a variable (plain JSON types)."""
    return expression_plain(_evaluate(expression_parse(source), context, Budget()))


def tree_evaluate(tree: tuple, context: Mapping[str, Any]) -> Any:
    """Evaluate a parsed tree with a fresh budget (the internal value types)."""
    return _evaluate(tree, context, Budget())


def expression_plain(value: Any, depth: int = 0) -> Any:
    """An evaluated value as JSON: numbers as int or float, dates as ISO text."""
    if isinstance(value, Decimal):
        return ev.number_out(value)
    if isinstance(value, datetime):
        return ev.datetime_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return None if depth > 10 else [expression_plain(item, depth + 1) for item in value]
    return value
