"""The admin login, with django-ratelimit in front of it (password guessing)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django_ratelimit.decorators import ratelimit


def _login_rate(group: str, request: HttpRequest) -> str:
    return settings.ADMIN_LOGIN_RATE


@ratelimit(group="admin_login", key="ip", rate=_login_rate, method="POST", block=False)
def admin_login(request: HttpRequest, extra_context=None) -> HttpResponse:
    """Too many POSTs from one address: a readable 429 instead of another try."""
    if getattr(request, "limited", False):
        return HttpResponse(
            "Too many sign-in attempts from your address. Please wait a minute and try again.",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
    return admin.site.login(request, extra_context=extra_context)
