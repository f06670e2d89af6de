"""Django's connection health check at most once a second a connection
(botplatform/dbhealth.py), on a real PostgreSQL."""

from __future__ import annotations

import time
from contextlib import contextmanager

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import request_finished, request_started
from django.db import OperationalError, connection
from django.db.utils import InterfaceError
from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.env import env_float


@contextmanager
def _persistent_checked_connection():
    """As in production: persistent connections with Django's health checks on."""
    old = connection.settings_dict["CONN_HEALTH_CHECKS"], connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    connection.settings_dict["CONN_HEALTH_CHECKS"] = True
    connection.settings_dict["CONN_MAX_AGE"] = 600
    connection.ensure_connection()
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["CONN_HEALTH_CHECKS"], connection.settings_dict["CONN_MAX_AGE"] = (
            old
        )


def _request(checks: list) -> int:
    """One request's database work, between the signals a WSGI request sends; returns
    the health checks (Django's ``is_usable``) it cost."""
    before = len(checks)
    request_started.send(sender=None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")
        assert cursor.fetchone() == (2,)
    request_finished.send(sender=None)
    return len(checks) - before


@pytest.fixture
def checks(monkeypatch):
    """Each health check Django makes, counted (the check itself still runs)."""
    made: list[float] = []
    real = connection.is_usable

    def counted() -> bool:
        made.append(time.monotonic())
        return real()

    monkeypatch.setattr(connection, "is_usable", counted)
    return made


@pytest.mark.django_db(transaction=True)
def test_a_connection_is_checked_once_per_interval_not_per_request(checks, settings):
    settings.DATABASE_HEALTH_CHECK_INTERVAL = 0.3
    with _persistent_checked_connection():
        costs = [_request(checks) for _ in range(10)]
        assert costs == [1] + [0] * 9, costs  # only the first of a quick run
        time.sleep(0.35)
        assert _request(checks) == 1  # the interval passed: checked again
        assert _request(checks) == 0


@pytest.mark.django_db(transaction=True)
def test_an_interval_of_zero_checks_before_every_request_as_django_does(checks, settings):
    settings.DATABASE_HEALTH_CHECK_INTERVAL = 0
    with _persistent_checked_connection():
        assert [_request(checks) for _ in range(5)] == [1] * 5


@pytest.mark.django_db(transaction=True)
def test_a_connection_dropped_within_the_interval_fails_one_request_then_is_replaced(
    checks, settings
):
    """The trade-off: the server drops the connection right after a check; the next
    request's first query fails; the request's end closes it (Django checks a
    connection that saw an error, whatever the interval); the one after works."""
    settings.DATABASE_HEALTH_CHECK_INTERVAL = 60
    with _persistent_checked_connection():
        assert _request(checks) == 1
        pid = connection.connection.info.backend_pid
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises((OperationalError, InterfaceError)):
            _request(checks)
        assert _request(checks) == 1  # errors_occurred: Django checks it, finds it dead
        assert connection.connection.info.backend_pid != pid


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 1.0), ("", 1.0), ("0", 0.0), (" 2.5 ", 2.5), ("3600", 3600.0)]
)
def test_a_number_of_seconds(raw, expected):
    environ = {} if raw is None else {"S": raw}
    assert env_float("S", 1.0, environ) == expected


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "3601", "1e309", "soon", "1,5"])
def test_a_bad_number_of_seconds_is_refused_with_the_setting_named(raw):
    with pytest.raises(ImproperlyConfigured, match="S must be a number from 0 to 3600"):
        env_float("S", 1.0, {"S": raw})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000))
def test_any_text_is_seconds_or_a_clear_error(raw):
    """NUL bytes, odd Unicode digits, absurd sizes: a bounded number or a short error."""
    try:
        value = env_float("S", 1.0, {"S": raw})
    except ImproperlyConfigured as exc:
        assert len(str(exc)) < 120
    else:
        assert 0 <= value <= 3600
