from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given, settings
from hypothesis import strategies as st

from botplatform.env import (
    cache_config,
    database_config,
    env_bool,
    env_int,
    env_list,
    env_rate,
    rate_parse,
)


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("yes", True), ("off", False), ("", False)]
)
def test_env_bool_parses_common_spellings(raw, expected):
    assert env_bool("X", default=not expected, environ={"X": raw}) is expected


def test_env_bool_rejects_garbage_with_the_variable_name():
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        env_bool("DEBUG", environ={"DEBUG": "maybe"})


def test_env_int_and_default():
    assert env_int("N", 7, environ={}) == 7
    assert env_int("N", 7, environ={"N": "42"}) == 42
    with pytest.raises(ImproperlyConfigured, match="N must be an integer"):
        env_int("N", 7, environ={"N": "many"})


def test_env_list_drops_blanks():
    assert env_list("H", environ={"H": "a.example, ,b.example"}) == ["a.example", "b.example"]
    assert env_list("H", ["x"], environ={}) == ["x"]


def test_database_default_is_embedded_sqlite(tmp_path):
    config = database_config("", str(tmp_path))
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"].startswith(str(tmp_path))


def test_database_postgres_url_uses_persistent_checked_connections():
    config = database_config("postgres://bp:pw@db.internal:5433/botplatform", "/tmp")
    assert config["ENGINE"] == "botplatform.postgresql"  # Django's, health checks spaced
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 5433, "botplatform")
    assert config["CONN_MAX_AGE"] == 600
    assert config["CONN_HEALTH_CHECKS"] is True


def test_database_health_checks_can_be_turned_off():
    url = "postgres://bp:pw@db.internal:5433/botplatform"
    config = database_config(url, "/tmp", health_checks=False)
    assert config["CONN_HEALTH_CHECKS"] is False
    assert config["CONN_MAX_AGE"] == 600  # still persistent


def test_database_prepared_statements_are_on_unless_turned_off():
    url = "postgres://bp:pw@db.internal:5433/botplatform"
    options = database_config(url, "/tmp")["OPTIONS"]
    assert (options["server_side_binding"], options["prepare_threshold"]) == (True, 5)
    options = database_config(url, "/tmp", prepared=False)["OPTIONS"]
    assert options["server_side_binding"] is False
    assert "prepare_threshold" not in options
    assert "OPTIONS" not in database_config("", "/tmp") or (
        "server_side_binding" not in database_config("", "/tmp")["OPTIONS"]
    )


@pytest.mark.django_db
def test_a_statement_run_often_is_prepared_on_the_server():
    """The hot path's statements are parsed and planned once per connection: after
    psycopg's threshold (5 runs) the server holds the statement as a prepared one."""
    from django.db import connection

    if not connection.settings_dict["OPTIONS"].get("server_side_binding"):
        pytest.skip("DATABASE_PREPARED_STATEMENTS=false in this run")
    marker = "SELECT 41 + %s AS prepared_probe"
    with connection.cursor() as cursor:
        for n in range(6):
            cursor.execute(marker, [n])
            assert cursor.fetchone() == (41 + n,)
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%prepared_probe%"],
        )
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("health_checks", [True, False])
def test_a_dropped_connection_with_and_without_health_checks(health_checks):
    """What DATABASE_HEALTH_CHECKS=false trades: the server drops the connection; with
    checks the next request's SELECT 1 notices and reconnects; without, its first
    query fails, Django closes the connection after the error, and the next request
    works on a new one."""
    from django.db import OperationalError, close_old_connections, connection
    from django.db.utils import InterfaceError

    old = connection.settings_dict["CONN_HEALTH_CHECKS"], connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    connection.settings_dict["CONN_HEALTH_CHECKS"] = health_checks
    connection.settings_dict["CONN_MAX_AGE"] = 600  # persistent, as in production
    connection.ensure_connection()
    try:
        pid = connection.connection.info.backend_pid
        import psycopg
        from django.conf import settings

        params = {**connection.get_connection_params()}
        with psycopg.connect(**params, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        close_old_connections()  # a request starts
        if health_checks:
            with connection.cursor() as cursor:  # SELECT 1 first, fails, reconnects
                cursor.execute("SELECT 1")
        else:
            with pytest.raises((OperationalError, InterfaceError)), connection.cursor() as cur:
                cur.execute("SELECT 1")
        close_old_connections()  # the request ends: a broken connection is closed
        with connection.cursor() as cursor:
            cursor.execute("SELECT 2")
            assert cursor.fetchone() == (2,)
        assert connection.connection.info.backend_pid != pid
        assert settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    finally:
        connection.close()
        connection.settings_dict["CONN_HEALTH_CHECKS"], connection.settings_dict["CONN_MAX_AGE"] = (
            old
        )


def test_database_rejects_unknown_scheme():
    with pytest.raises(ImproperlyConfigured, match="mysql"):
        database_config("mysql://x@y/z", "/tmp")


def test_cache_default_is_in_process_memory():
    assert cache_config("")["BACKEND"].endswith("LocMemCache")


def test_cache_redis_url_uses_django_redis_with_hiredis_and_timeouts():
    config = cache_config("redis://cache:6379/3")
    assert config["BACKEND"] == "botplatform.cache_backend.ResilientRedisCache"  # django-redis
    assert config["LOCATION"] == "redis://cache:6379/3"
    assert "Hiredis" in config["OPTIONS"]["PARSER_CLASS"]
    assert config["OPTIONS"]["SOCKET_TIMEOUT"] <= 2


def test_cache_rejects_non_redis_url():
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        cache_config("memcached://x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6000/m", (6000, 60_000)),
        ("5/10s", (5, 10_000)),
        (" 2/h ", (2, 3_600_000)),
        ("1/D", (1, 86_400_000)),
    ],
)
def test_a_rate_is_events_per_period(text, expected):
    assert rate_parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "6000", "0/m", "5/0s", "-1/m", "5/x", "5/m/s", "five/m", "٣/m", "1" * 11 + "/m"]
)
def test_a_bad_rate_is_refused_at_start_up_with_the_setting_named(text):
    with pytest.raises(ImproperlyConfigured, match=r"TELEGRAM_WEBHOOK_RATE.*not a rate"):
        env_rate("TELEGRAM_WEBHOOK_RATE", "6000/m", {"TELEGRAM_WEBHOOK_RATE": text or " x"})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000))
def test_any_text_is_a_rate_or_a_clear_error(text):
    """NUL bytes, odd Unicode digits, absurd sizes: a (count, window) or a ValueError."""
    try:
        count, window = rate_parse(text)
    except ValueError as exc:
        assert "is not a rate" in str(exc) and len(str(exc)) < 200
    else:
        assert 0 < count <= 10**9 and window >= 1_000
