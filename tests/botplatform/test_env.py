from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from botplatform.env import cache_config, database_config, env_bool, env_int, env_list


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
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 5433, "botplatform")
    assert config["CONN_MAX_AGE"] == 600
    assert config["CONN_HEALTH_CHECKS"] is True


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
