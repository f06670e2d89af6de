"""Settings for the test suite: real PostgreSQL and Redis on localhost.

The suite never falls back to SQLite or the in-process cache. Override the targets
with TEST_DATABASE_URL and TEST_REDIS_URL (pytest-django prefixes the database
name with ``test_``).
"""

from __future__ import annotations

import os

os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/botplatform"
)
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ["CELERY_BROKER_URL"] = os.environ.get("TEST_CELERY_BROKER_URL", "")
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 50)
os.environ.setdefault("DEBUG", "false")
# A fixed test key (never used outside the suite): tokens written by one test process
# are read by the runbot subprocesses it starts.
os.environ.setdefault("BOT_TOKEN_KEYS", "G3QmWLuyRCFjdV-poGVa8dKu0C5v4zBkVDaj7IL05Eg=")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")

from botplatform.settings import *  # noqa: F403

# Tasks run in-process unless a test broker is named: settings.py would otherwise
# fall back to REDIS_URL as the broker.
CELERY_TASK_ALWAYS_EAGER = not os.environ["CELERY_BROKER_URL"]
CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"] or "memory://"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
# Schemathesis calls the WSGI app as "localhost" (tests/api/test_schemathesis.py).
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "localhost"]  # noqa: F405
