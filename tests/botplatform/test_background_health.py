"""Worker, scheduler and queue age on /healthz: a broker that answers is not enough."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from botplatform import heartbeat
from botplatform.celery import app
from botplatform.models import Heartbeat
from botplatform.periodic import InProcessBeat

ROOT = Path(__file__).resolve().parents[2]
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(autouse=True)
def _no_throttle(monkeypatch):
    monkeypatch.setattr(heartbeat, "_last_write", {})


def test_embedded_default_warns_until_the_in_process_scheduler_runs(client, db):
    body = client.get("/healthz").json()
    assert body["background"]["scheduler"]["ok"] is False
    assert body["degraded"] is True
    assert any("never run" in w and "runbot" in w for w in body["background"]["warnings"])
    assert body["background"]["worker"]["mode"] == "in-process"

    InProcessBeat(schedule={}).run_due()  # what the bot runner does every second

    body = client.get("/healthz").json()
    assert body["background"]["scheduler"]["ok"] is True
    assert body["background"]["warnings"] == []
    assert body["degraded"] is False and body["ok"] is True


def test_a_scheduler_silent_too_long_is_reported_in_minutes(client, db):
    Heartbeat.objects.create(name="scheduler", at=timezone.now() - timedelta(minutes=12))
    warnings = client.get("/healthz").json()["background"]["warnings"]
    assert any("has not run for 12 minutes" in w for w in warnings), warnings


def _send(queue: str) -> None:
    """Publish to the test Redis explicitly: the app's producer pool may still hold an
    earlier test's broker."""
    with app.connection_for_write(REDIS) as connection:
        app.send_task("telegram.deferred_sends_sweep", queue=queue, connection=connection)


def _broker(queue: str):
    return override_settings(
        CELERY_TASK_ALWAYS_EAGER=False,
        CELERY_BROKER_URL=REDIS,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        HEALTH_QUEUE_AGE_SECONDS=0,
    )


def test_no_worker_the_queue_ages_and_healthz_says_so(client, db):
    queue = f"q-{uuid.uuid4().hex[:8]}"
    Heartbeat.objects.create(name="scheduler", at=timezone.now())
    app.conf.broker_url = REDIS
    try:
        with _broker(queue):
            _send(queue)
            time.sleep(1.1)
            body = client.get("/healthz").json()
    finally:
        app.conf.broker_url = "memory://"
        import redis

        redis.Redis.from_url(REDIS).delete(queue)
    background = body["background"]
    assert background["queue"]["length"] == 1
    assert background["queue"]["oldest_age_seconds"] >= 1
    assert background["worker"]["ok"] is False
    assert any("No Celery worker has taken a task yet" in w for w in background["warnings"])
    assert any("task queue is 0 min" in w for w in background["warnings"])
    assert body["degraded"] is True
    assert body["ok"] is True  # serving still works: no 503 for a stopped worker


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_taking_a_task_records_its_heartbeat():
    queue = f"q-{uuid.uuid4().hex[:8]}"
    db = django_settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "botplatform.settings_test",
        "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{connection.settings_dict['NAME']}",
        "TEST_CELERY_BROKER_URL": REDIS,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "botplatform", "worker", "-P", "solo", "-Q", queue],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    app.conf.broker_url = REDIS
    try:
        with _broker(queue):
            _send(queue)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not Heartbeat.objects.filter(name="worker").exists():
            time.sleep(0.3)
    finally:
        app.conf.broker_url = "memory://"
        worker.terminate()
        worker.wait(20)
    beat = Heartbeat.objects.get(name="worker")
    assert beat.detail["task"] == "telegram.deferred_sends_sweep"
    assert timezone.now() - beat.at < timedelta(minutes=1)
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False, CELERY_BROKER_URL=REDIS):
        report = heartbeat.background_report()
    assert report["worker"]["ok"] is True
