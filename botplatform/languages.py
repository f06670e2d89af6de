"""Project languages and per-language texts: the one place a text is picked.

A user-facing text in a workflow step is either a plain string or an object with one
version per language code, e.g. ``{"en": "Hello", "ru": "Привет"}``. :func:`pick_text`
chooses the version for a user: their language, then the project's default, then the
project's other languages, then the alphabetically first code. This module is pure (no models, no engine) so the engine, the models'
validators and the simulator all share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError

# "en", "ru", "pt-br", "zh-hans": Telegram's language_code, lower-cased.
LANGUAGE_CODE_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$"
LANGUAGE_CODE_RE = re.compile(LANGUAGE_CODE_PATTERN)
MAX_LANGUAGES = 20


def normalize_code(code: object) -> str:
    """``"ru-RU"`` → ``"ru-ru"``; anything that is not a language code → ``""``."""
    if not isinstance(code, str):
        return ""
    code = code.strip().lower().replace("_", "-")
    return code if LANGUAGE_CODE_RE.fullmatch(code) else ""


def language_list(languages: str, default: str) -> list[str]:
    """The codes of a comma-separated list, the default first, no repeats."""
    found: list[str] = []
    for code in [default, *languages.split(",")]:
        code = normalize_code(code)
        if code and code not in found:
            found.append(code)
    return found


def validate_language_code(value: str) -> None:
    if not normalize_code(value):
        raise ValidationError(
            "“%(value)s” is not a language code. Use two or three letters, e.g. “en” or “ru”.",
            params={"value": value[:40]},
        )


def validate_language_list(value: str) -> None:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    bad = [part for part in parts if not normalize_code(part)]
    if bad:
        raise ValidationError(
            "Not language codes: %(bad)s. Separate codes with commas, e.g. “en, ru”.",
            params={"bad": ", ".join(part[:40] for part in bad[:5])},
        )
    if len(parts) > MAX_LANGUAGES:
        raise ValidationError(f"At most {MAX_LANGUAGES} languages.")


def user_language(chosen: str, telegram_code: str, languages: Iterable[str], default: str) -> str:
    """The language to talk to a user in: their choice, else Telegram's language
    (or its base, "pt" for "pt-br") if the project speaks it, else the default."""
    spoken = list(languages) or [default]
    for code in (normalize_code(chosen), normalize_code(telegram_code)):
        if not code:
            continue
        if code in spoken:
            return code
        base = code.split("-")[0]
        if base in spoken:
            return base
    return normalize_code(default) or (spoken[0] if spoken else "en")


def pick_text(value: Any, language: str, default: str, spoken: Iterable[str] = ()) -> Any:
    """The version of a per-language text for ``language``: that language (or its base),
    then ``default``, then the project's other languages in order, then the
    alphabetically first code (stored JSON does not keep key order). A plain string is
    returned as is."""
    if not isinstance(value, dict):
        return value
    for code in (language, language.split("-")[0], default, *spoken):
        text = value.get(code)
        if isinstance(text, str):
            return text
    for code in sorted(key for key in value if isinstance(key, str)):
        if isinstance(value[code], str):
            return value[code]
    return ""


def system_text(text: str, language: str) -> str:
    """A project's own wording of a system text (rate-limit notice, stale button,
    fallback) in ``language``: the shipped translation while it is still the English
    default, the operator's own text otherwise (gettext returns unknown texts as is)."""
    from django.utils import translation

    with translation.override(language or None):
        return translation.gettext(text) if text else text
