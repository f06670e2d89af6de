"""The admin login, with django-ratelimit in front of it (password guessing).

Three budgets, all counted on every sign-in POST:

- per username and client address (``ADMIN_LOGIN_RATE``): a typo-prone admin locks
  out only themselves, not the colleague behind the same proxy;
- per username over all addresses (``ADMIN_LOGIN_USERNAME_RATE``): one account
  hammered from many addresses is throttled too;
- per client address over all usernames (``ADMIN_LOGIN_ADDRESS_RATE``): one address
  trying many accounts.

The client address is the peer's, or behind ``TRUSTED_PROXY_COUNT`` proxies the
X-Forwarded-For entry the outermost trusted proxy wrote; entries left of it are the
client's own words and are never used.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django_ratelimit.core import is_ratelimited

USERNAME_MAX = 150  # Django's username length; longer input is cut, not trusted


def client_address(request: HttpRequest) -> str:
    """The client's IP address as far as the trusted proxies vouch for it.

    With ``TRUSTED_PROXY_COUNT = n`` each of the n proxies appended the address it
    saw, so the n-th entry from the right is the client as seen by the outermost
    trusted proxy. Anything unparsable falls back to the peer address. IPv6 clients
    are counted per /64 (one host usually holds a whole /64).
    """
    remote = request.META.get("REMOTE_ADDR", "")
    chosen = remote
    count = settings.TRUSTED_PROXY_COUNT
    if count > 0:
        header = request.META.get("HTTP_X_FORWARDED_FOR", "")[:2000]
        hops = [hop.strip() for hop in header.split(",") if hop.strip()]
        if hops:
            chosen = hops[-count] if len(hops) >= count else hops[0]
    try:
        address = ipaddress.ip_address(chosen)
    except ValueError:
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def _username(request: HttpRequest) -> str:
    return str(request.POST.get("username", "")).strip().casefold()[:USERNAME_MAX]


def _by_username_and_address(group: str, request: HttpRequest) -> str:
    return f"{_username(request)}\x00{client_address(request)}"


def _by_username(group: str, request: HttpRequest) -> str:
    return _username(request)


def _by_address(group: str, request: HttpRequest) -> str:
    return client_address(request)


def login_throttled(request: HttpRequest) -> bool:
    """Count this sign-in attempt in every budget; True when any budget is spent."""
    budgets = (
        ("admin_login:user+address", _by_username_and_address, settings.ADMIN_LOGIN_RATE),
        ("admin_login:user", _by_username, settings.ADMIN_LOGIN_USERNAME_RATE),
        ("admin_login:address", _by_address, settings.ADMIN_LOGIN_ADDRESS_RATE),
    )
    spent = [
        is_ratelimited(request, group=group, key=key, rate=rate, method="POST", increment=True)
        for group, key, rate in budgets
    ]
    return any(spent)


def admin_login(request: HttpRequest, extra_context=None) -> HttpResponse:
    """Too many sign-in POSTs: a readable 429 instead of another try."""
    if request.method == "POST" and login_throttled(request):
        return HttpResponse(
            "Too many sign-in attempts for this account or from your address. "
            "Please wait a minute and try again.",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
    return admin.site.login(request, extra_context=extra_context)
