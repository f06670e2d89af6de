"""The suite runs against the real services, never the embedded fallbacks."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django_redis import get_redis_connection


def test_database_is_postgresql(db):
    assert connection.vendor == "postgresql"


def test_cache_is_redis_and_keys_are_stored_as_named():
    assert settings.CACHES["default"]["BACKEND"] == "botplatform.cache_backend.ResilientRedisCache"
    cache.set("user:1:2:variables", {"balance": 5}, timeout=30)
    raw = get_redis_connection("default")
    assert raw.exists("user:1:2:variables") == 1
    assert 0 < raw.ttl("user:1:2:variables") <= 30


def test_the_embedded_default_runs_a_spend_without_redis(tmp_path):
    """The zero-setup first run (SQLite, in-process cache) spends bonuses too."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE", "REDIS", "CELERY", "TEST_", "DJANGO_SETTINGS"))
    }
    env.update(DEBUG="true", DJANGO_SETTINGS_MODULE="botplatform.settings")
    script = (
        "import django, os; django.setup();"
        "from django.conf import settings;"
        f"settings.DATABASES['default']['NAME'] = {str(tmp_path / 'db.sqlite3')!r};"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from tests.factories import bot_user_create;"
        "from users.ledger import bonus_earn, bonus_spend;"
        "from botplatform import ratelimit;"
        "u = bot_user_create();"
        "bonus_earn(user_id=u.pk, amount=150, idempotency_key='e');"
        "print(bonus_spend(user_id=u.pk, amount=100, idempotency_key='s').status,"
        " bonus_spend(user_id=u.pk, amount=100, idempotency_key='t').status,"
        " ratelimit.rate_hit([('rate_limit:t:1:w', 1, 60000)]) == 0,"
        " ratelimit.rate_hit([('rate_limit:t:1:w', 1, 60000)]) == 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-4:] == ["ok", "insufficient", "True", "False"], result.stdout
