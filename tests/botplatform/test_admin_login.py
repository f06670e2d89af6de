"""The sign-in throttle: per username and client address, the address from trusted proxies."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from botplatform.admin_login import client_address

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.2"  # the TLS proxy in front of the app, as the app sees it


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.ADMIN_LOGIN_RATE = "3/m"
    settings.ADMIN_LOGIN_USERNAME_RATE = "5/m"
    settings.ADMIN_LOGIN_ADDRESS_RATE = "100/m"


def _attempt(client, username: str, forwarded: str) -> int:
    return client.post(
        reverse("admin_login"),
        {"username": username, "password": "wrong"},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded,
    ).status_code


def test_two_admins_behind_the_proxy_do_not_share_a_budget(client, behind_proxy):
    codes = [_attempt(client, "ann", "203.0.113.5") for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # Bob, at another address behind the same proxy, signs in normally.
    get_user_model().objects.create_superuser("bob", "b@example.com", "pw-bob-123456")
    response = client.post(
        reverse("admin_login"),
        {"username": "bob", "password": "pw-bob-123456"},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR="198.51.100.7",
    )
    assert response.status_code == 302


def test_one_username_hammered_from_many_addresses_is_throttled(client, behind_proxy):
    codes = [_attempt(client, "Ann", f"203.0.113.{n}") for n in range(1, 8)]
    assert codes[:5] == [200] * 5
    assert codes[5:] == [429, 429]
    # The same account spelled differently is the same account.
    assert _attempt(client, " ANN ", "203.0.113.99") == 429
    assert _attempt(client, "carl", "203.0.113.99") == 200


def test_a_spoofed_forwarded_entry_does_not_buy_new_attempts(client, behind_proxy):
    """The proxy appends the real client; what the client wrote itself stays left of it."""
    codes = [_attempt(client, "ann", f"1.2.3.{n}, 203.0.113.5") for n in range(4)]
    assert codes == [200, 200, 200, 429]


def test_without_trusted_proxies_the_header_is_ignored(client, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    settings.ADMIN_LOGIN_RATE = "3/m"
    codes = [_attempt(client, "ann", f"203.0.113.{n}") for n in range(4)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize(
    ("count", "header", "expected"),
    [
        (0, "203.0.113.5", "127.0.0.1"),
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "6.6.6.6, 203.0.113.5", "203.0.113.5"),
        (2, "6.6.6.6, 203.0.113.5, 10.9.9.9", "203.0.113.5"),
        (2, "203.0.113.5", "203.0.113.5"),  # fewer hops than proxies: the earliest
        (1, "not-an-address", "127.0.0.1"),
        (1, "", "127.0.0.1"),
        (1, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),  # IPv6 per /64
    ],
)
def test_client_address_trusts_only_the_configured_proxies(settings, count, header, expected):
    settings.TRUSTED_PROXY_COUNT = count
    request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=header)
    assert client_address(request) == expected


@hypothesis_settings(max_examples=150, deadline=None)
@given(header=st.text(max_size=5000), count=st.integers(min_value=0, max_value=5))
def test_any_forwarded_header_gives_an_address_and_no_error(header, count):
    from django.conf import settings

    old = settings.TRUSTED_PROXY_COUNT
    settings.TRUSTED_PROXY_COUNT = count
    try:
        request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1")
        request.META["HTTP_X_FORWARDED_FOR"] = header
        address = client_address(request)
    finally:
        settings.TRUSTED_PROXY_COUNT = old
    assert address == "127.0.0.1" or ":" in address or address.count(".") == 3
