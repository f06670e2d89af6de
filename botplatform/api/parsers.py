"""The API's JSON body parser, bounded: size, nesting, and only text the database can
store (no NUL, no lone surrogates, no NaN/Infinity), so hostile bodies get a 400."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from botplatform.jsoncheck import json_text_problem

MAX_BODY_BYTES = 256_000
MAX_DEPTH = 32


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _storable(value: Any, depth: int = 0) -> None:
    """Raise ValueError for text PostgreSQL's JSON cannot hold, or too deep a tree."""
    if depth > MAX_DEPTH:
        raise ValueError(f"the JSON is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if "\x00" in value or any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
            raise ValueError("the JSON contains a NUL character or broken Unicode text")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key, depth + 1)
            _storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable(item, depth + 1)


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise ParseError(f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("the body is not UTF-8 text") from None
        if not text.strip():
            return {}
        problem = json_text_problem(text)
        if problem:
            raise ParseError(problem)
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
            _storable(data)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"malformed JSON: {str(exc)[:200]}") from None
        return data
