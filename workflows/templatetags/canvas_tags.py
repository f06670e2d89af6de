"""Template tags of the visual editor: the condition builder's variables on other pages
(a broadcast's segment uses the same builder as a condition step)."""

from __future__ import annotations

from django import template

from botplatform.roles import projects_for
from workflows.canvas import canvas_vocabulary

register = template.Library()


@register.simple_tag
def segment_vocabulary(user) -> dict:
    """{project id: variables} for the projects the operator sees, and the user fields."""
    projects = list(projects_for(user).values_list("pk", flat=True)[:50])
    vocabularies = {pk: canvas_vocabulary(project_id=pk) for pk in projects}
    fields = next(iter(vocabularies.values()), {}).get("user_fields", [])
    return {
        "user_fields": fields,
        "vars": {str(pk): vocabulary["vars"] for pk, vocabulary in vocabularies.items()},
    }
