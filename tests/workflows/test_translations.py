"""The shipped Russian catalogue: complete for the bot's own texts, and its compiled
.mo matches the .po (a forgotten rebuild would ship stale translations)."""

from __future__ import annotations

import ast
import gettext
from pathlib import Path

from botplatform.models import Project

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "locale" / "ru" / "LC_MESSAGES" / "django.po"
MO = ROOT / "locale" / "ru" / "LC_MESSAGES" / "django.mo"
SOURCES = ("workflows/engine/steps/input.py", "workflows/engine/steps/choose_language.py")


def _po_entries() -> dict[str, str]:
    entries, msgid = {}, None
    for line in PO.read_text().splitlines():
        if line.startswith("msgid "):
            msgid = ast.literal_eval(line[6:])
        elif line.startswith("msgstr ") and msgid:
            entries[msgid] = ast.literal_eval(line[7:])
    return entries


def _marked_texts() -> set[str]:
    found = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"gettext", "gettext_noop"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    return found


def test_every_marked_text_and_project_default_has_a_russian_translation():
    entries = _po_entries()
    defaults = {
        Project._meta.get_field(name).default
        for name in ("fallback_message", "rate_limited_message", "stale_button_message")
    }
    wanted = _marked_texts() | defaults
    assert len(wanted) > 20
    missing = sorted(text for text in wanted if not entries.get(text))
    assert missing == []


def test_the_compiled_catalogue_matches_the_po():
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    entries = _po_entries()
    for msgid, msgstr in entries.items():
        assert compiled.gettext(msgid) == msgstr, msgid
    # Placeholders survive translation.
    for msgid, msgstr in entries.items():
        for name in ("%(n)s", "%(kind)s", "%(problem)s", "%(date)s", "%(reason)s"):
            assert (name in msgid) == (name in msgstr), msgid
