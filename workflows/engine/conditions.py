"""Condition expressions for the ``condition`` step, parsed by hand (no ``eval``).

Grammar::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := operand [ OP operand | "contains" operand | ["not"] "in" operand
                            | "is" ["not"] "set" ]
    operand    := path | number | "string" | true | false | null | "[" operand, ... "]"
    OP         := == | != | < | <= | > | >=

Numbers written as text (an answer typed by the user, "25") compare as numbers.
A comparison that makes no sense (``"abc" > 3``) is false instead of an error, so a
conversation never dies on a user's odd input. Numbers go through the bounded parser
(numbers.py): a value such as ``1e99999999`` is not a number here, only text.

Operators' input is bounded: at most :data:`MAX_CONDITION` characters and
:data:`MAX_DEPTH` levels of brackets or ``not``; the parser counts the depth itself,
so no expression can reach Python's recursion limit. ``and``/``or`` chains are flat
nodes, so evaluation depth is the bracket depth, not the chain length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from workflows.engine.numbers import NumberError, number_parse, number_parse_or_none
from workflows.engine.templating import PATH_RE, path_check, value_resolve


class ConditionError(ValueError):
    """An expression that does not parse or names an unknown variable."""


TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<number>-?\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
MAX_CONDITION = 1000  # characters
MAX_DEPTH = 20  # nested brackets, lists and "not"s
KEYWORDS = {"and", "or", "not", "in", "contains", "is", "set", "true", "false", "null"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    value: Any


def _tokenize(source: str) -> list[Token]:
    tokens, position = [], 0
    source = source.rstrip()
    while position < len(source):
        match = TOKEN_RE.match(source, position)
        if not match or match.end() == position:
            raise ConditionError(f"cannot read the expression near '{source[position:].strip()}'")
        position = match.end()
        kind = match.lastgroup
        raw = match.group(kind)
        if kind == "number":
            try:
                tokens.append(Token("literal", number_parse(raw)))
            except NumberError as exc:
                raise ConditionError(f"the number {raw[:20]} {exc}") from None
        elif kind == "string":
            tokens.append(Token("literal", re.sub(r"\\(.)", r"\1", raw[1:-1])))
        elif kind == "op":
            tokens.append(Token("op", raw))
        elif raw in KEYWORDS:
            literal = {"true": True, "false": False, "null": None}
            if raw in literal:
                tokens.append(Token("literal", literal[raw]))
            else:
                tokens.append(Token("kw", raw))
        else:
            if not PATH_RE.match(raw):
                raise ConditionError(f"'{raw}' is not a variable name")
            tokens.append(Token("path", tuple(raw.split("."))))
    return tokens


# AST nodes are tuples: ("or", a, b, ...) ("and", a, b, ...) ("not", a) ("cmp", op, left, right)
# ("isset", operand, negated) ("truthy", operand); operands: ("path", p) ("lit", v)
# ("list", [operands]).


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def deeper(self) -> None:
        """Called on every nesting step; refuses depth before Python's stack would."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(
                f"the expression is nested more than {MAX_DEPTH} levels deep; "
                "split it or remove brackets"
            )

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str | None = None, value: Any = None) -> Token:
        token = self.peek()
        if token is None or (kind and token.kind != kind) or (value and token.value != value):
            want = value or kind or "more"
            got = "the end" if token is None else f"'{_show(token)}'"
            raise ConditionError(f"expected {want} but found {got}")
        self.i += 1
        return token

    def accept(self, kind: str, value: Any) -> bool:
        token = self.peek()
        if token is not None and token.kind == kind and token.value == value:
            self.i += 1
            return True
        return False

    def parse(self) -> tuple:
        if not self.tokens:
            raise ConditionError("the expression is empty")
        node = self.expr()
        if self.peek() is not None:
            raise ConditionError(f"unexpected '{_show(self.peek())}'")
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
        if self.accept("op", "("):
            self.deeper()
            node = self.expr()
            self.take("op", ")")
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.operand()
        token = self.peek()
        if token is None:
            return ("truthy", left)
        if token.kind == "op" and token.value in {"==", "!=", "<", "<=", ">", ">="}:
            self.i += 1
            return ("cmp", token.value, left, self.operand())
        if token.kind == "kw" and token.value == "contains":
            self.i += 1
            return ("cmp", "contains", left, self.operand())
        if token.kind == "kw" and token.value == "in":
            self.i += 1
            return ("cmp", "in", left, self.operand())
        if token.kind == "kw" and token.value == "not":
            nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
            if nxt is not None and nxt.kind == "kw" and nxt.value == "in":
                self.i += 2
                return ("not", ("cmp", "in", left, self.operand()))
        if token.kind == "kw" and token.value == "is":
            self.i += 1
            negated = self.accept("kw", "not")
            self.take("kw", "set")
            return ("isset", left, negated)
        return ("truthy", left)

    def operand(self) -> tuple:
        token = self.take()
        if token.kind == "path":
            return ("path", token.value)
        if token.kind == "literal":
            return ("lit", token.value)
        if token.kind == "op" and token.value == "[":
            self.deeper()
            items = []
            if not self.accept("op", "]"):
                items.append(self.operand())
                while self.accept("op", ","):
                    items.append(self.operand())
                self.take("op", "]")
            self.depth -= 1
            return ("list", items)
        raise ConditionError(f"expected a value but found '{_show(token)}'")


def _show(token: Token) -> str:
    if token.kind == "path":
        return ".".join(token.value)
    return str(token.value)


def condition_parse(source: str) -> tuple:
    """Parse (cached) and check every variable name; raises :class:`ConditionError` only."""
    if not isinstance(source, str):
        raise ConditionError("the condition must be a text")
    if len(source) > MAX_CONDITION:
        raise ConditionError(
            f"the condition is {len(source)} characters long; at most {MAX_CONDITION}"
        )
    return _parse(source)


@lru_cache(maxsize=1024)
def _parse(source: str) -> tuple:
    tree = _Parser(_tokenize(source)).parse()
    for path in _paths(tree):
        problem = path_check(path)
        if problem:
            raise ConditionError(problem)
    return tree


def _paths(node: Any):
    if isinstance(node, tuple) and node and node[0] == "path":
        yield node[1]
        return
    if isinstance(node, tuple | list):
        for child in node:
            if isinstance(child, tuple | list):
                yield from _paths(child)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, str):
        value = value.replace(",", ".")
    return number_parse_or_none(value)


def _value(node: tuple, context: Mapping[str, Any]) -> Any:
    if node[0] == "path":
        return value_resolve(context, node[1])
    if node[0] == "lit":
        return node[1]
    return [_value(item, context) for item in node[1]]


def _equal(a: Any, b: Any) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na == nb
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    return a == b


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "contains":
        if isinstance(a, str) and b is not None:
            return str(b).casefold() in a.casefold()
        if isinstance(a, list):
            return any(_equal(item, b) for item in a)
        return False
    if op == "in":
        return _compare("contains", b, a)
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        left, right = na, nb
    elif isinstance(a, str) and isinstance(b, str):
        left, right = a, b
    else:
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _evaluate(node: tuple, context: Mapping[str, Any]) -> bool:
    kind = node[0]
    if kind == "or":
        return any(_evaluate(child, context) for child in node[1:])
    if kind == "and":
        return all(_evaluate(child, context) for child in node[1:])
    if kind == "not":
        return not _evaluate(node[1], context)
    if kind == "isset":
        value = _value(node[1], context)
        is_set = value is not None and value != "" and value != []
        return not is_set if node[2] else is_set
    if kind == "truthy":
        value = _value(node[1], context)
        number = _number(value)
        return bool(number) if number is not None else bool(value)
    return _compare(node[1], _value(node[2], context), _value(node[3], context))


def condition_evaluate(source: str, context: Mapping[str, Any]) -> bool:
    """True when the expression holds for ``context`` (the same tree templates see)."""
    return _evaluate(condition_parse(source), context)
