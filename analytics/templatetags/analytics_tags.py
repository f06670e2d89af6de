"""Template helpers of the analytics pages: a cell as the CSV writes it."""

from __future__ import annotations

from django import template

from analytics.tables import cell_text

register = template.Library()


@register.filter
def cell(value) -> str:
    return cell_text(value)
