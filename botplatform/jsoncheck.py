"""Size and nesting limits for JSON that operators type or paste into a form."""

from __future__ import annotations

MAX_JSON_TEXT = 1_000_000  # characters of JSON typed or pasted into one admin field
MAX_JSON_DEPTH = 64  # nested lists/objects; real workflow drafts need fewer than 10


def json_text_problem(text: str) -> str | None:
    """Why ``text`` is too big or too deeply nested to decode (None when it is fine).

    One linear pass before ``json.loads``: Python's decoder recurses once per level,
    so 100,000 nested brackets end in a RecursionError (a 500) instead of a form error.
    """
    if len(text) > MAX_JSON_TEXT:
        return f"This is {len(text)} characters long; at most {MAX_JSON_TEXT} are allowed."
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return (
                    f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep; "
                    "check for brackets that are opened but never closed."
                )
        elif char in "]}":
            depth -= 1
    return None
