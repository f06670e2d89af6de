"""The operator home on the admin index, and the Diagnostics split of the app list."""

from __future__ import annotations

from django import template

from analytics.home import app_list_split, home_context

register = template.Library()


@register.inclusion_tag("admin/analytics/home.html", takes_context=True)
def operator_home(context) -> dict:
    request = context["request"]
    return {**home_context(request.user, request.GET.get("project")), "request": request}


@register.simple_tag(takes_context=True)
def split_apps(context, app_list) -> dict:
    apps, diagnostics = app_list_split(app_list or [], context["request"].user)
    return {"apps": apps, "diagnostics": diagnostics}
