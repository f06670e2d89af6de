"""The templates gallery: ready-made workflows an operator adds in one click, then edits.

Each template is a workflow file (the import format) in ``workflows/canvas_templates/``.
Adding one creates a new workflow whose draft is the template; nothing goes live until
the operator publishes it. The canvas lays out a workflow without positions itself.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.db import transaction

from workflows.models import Workflow

TEMPLATES_DIR = Path(__file__).resolve().parent / "canvas_templates"


class UnknownTemplate(LookupError):
    """No template of that name."""


@lru_cache(maxsize=1)
def gallery_templates() -> dict[str, dict[str, Any]]:
    """Every template by key (its file name), in name order."""
    found = {}
    for path in sorted(TEMPLATES_DIR.glob("*.json")):
        found[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return dict(sorted(found.items(), key=lambda item: item[1]["name"]))


def _free_slug(project_id: int, slug: str) -> str:
    taken = set(
        Workflow.objects.filter(project_id=project_id, slug__startswith=slug).values_list(
            "slug", flat=True
        )
    )
    if slug not in taken:
        return slug
    number = 2
    while f"{slug}-{number}" in taken:
        number += 1
    return f"{slug}-{number}"


def gallery_add(*, project_id: int, key: str) -> Workflow:
    """A new workflow (a draft, not live) from the template ``key``."""
    template = gallery_templates().get(key)
    if template is None:
        raise UnknownTemplate(key)
    with transaction.atomic():
        slug = _free_slug(project_id, template["slug"])
        return Workflow.objects.create(
            project_id=project_id,
            name=template["name"] if slug == template["slug"] else f"{template['name']} ({slug})",
            slug=slug,
            description=template["description"],
            triggers=json.loads(json.dumps(template["triggers"])),
            draft=json.loads(json.dumps(template["definition"])),
            is_active=True,
        )
