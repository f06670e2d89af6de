"""Settings load from the environment as documented; production refuses a dev key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'db': settings.DATABASES['default']['ENGINE'], "
    "'cache': settings.CACHES['default']['BACKEND'], "
    "'eager': settings.CELERY_TASK_ALWAYS_EAGER, 'broker': settings.CELERY_BROKER_URL, "
    "'api': settings.TELEGRAM_API_URL, 'debug': settings.DEBUG}))"
)


def _settings_with(env: dict) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE", "REDIS", "CELERY", "SECURE_"))
    }
    clean.pop("SECRET_KEY", None)
    clean.pop("DEBUG", None)
    clean.update(env, DJANGO_SETTINGS_MODULE="botplatform.settings")
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_zero_setup_default_is_sqlite_locmem_and_in_process_tasks():
    result = _settings_with({"DEBUG": "true"})
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["db"] == "django.db.backends.sqlite3"
    assert loaded["cache"].endswith("LocMemCache")
    assert loaded["eager"] is True
    assert loaded["broker"] == "memory://"
    assert loaded["api"] == "https://api.telegram.org"


def test_full_stack_from_urls():
    result = _settings_with(
        {
            "DEBUG": "true",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/botplatform",
            "REDIS_URL": "redis://127.0.0.1:6379/2",
            "TELEGRAM_API_URL": "http://127.0.0.1:8081/",
        }
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["db"] == "botplatform.postgresql"
    assert loaded["cache"] == "botplatform.cache_backend.ResilientRedisCache"
    assert loaded["broker"] == "redis://127.0.0.1:6379/2"  # broker defaults to REDIS_URL
    assert loaded["eager"] is False
    assert loaded["api"] == "http://127.0.0.1:8081"


def test_production_refuses_the_development_secret_key():
    result = _settings_with({"DEBUG": "false"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_check_deploy_is_clean_with_production_settings():
    env = {
        "DEBUG": "false",
        "SECRET_KEY": "p" + "roduction-secret-key-with-enough-entropy-0123456789abcdefXYZ",
        "ALLOWED_HOSTS": "bots.example.com",
    }
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE", "REDIS", "CELERY", "SECURE_"))
    }
    clean.update(env, DJANGO_SETTINGS_MODULE="botplatform.settings")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_no_setting_is_assigned_twice():
    """A value written in one place and overwritten further down hides what is in force;
    each setting gets one assignment (dicts are built in one literal)."""
    import ast
    from collections import Counter

    tree = ast.parse((ROOT / "botplatform" / "settings.py").read_text())
    names: Counter = Counter()
    for node in tree.body:
        for child in ast.walk(node):
            targets = []
            if isinstance(child, ast.Assign):
                targets = child.targets
            elif isinstance(child, ast.AnnAssign | ast.AugAssign):
                targets = [child.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    names[target.id] += 1
                elif isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                    base = target.value
                    if isinstance(base, ast.Name):
                        names[f"{base.id}[{target.slice.value!r}]"] += 1
    assert [name for name, count in names.items() if count > 1] == []
