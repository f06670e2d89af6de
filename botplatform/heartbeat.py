"""Background work you can see: the worker, the scheduler and the queue's age.

A broker that answers says nothing about whether anyone takes tasks from it: with no
worker running, a broadcast stays at "Sending 0 of 2" while the broker is fine. So:

- every Celery worker process records "worker" when it starts a task (``task_prerun``);
- the scheduler records "scheduler" when it sends a periodic task (Celery beat's
  ``before_task_publish`` in the beat process, or the bot runner's in-process beat);
- every task message carries the time it was sent (a header), so the age of the
  oldest message still in the queue tells how far behind the workers are.

Writes are throttled per process (one row update per part every ``THROTTLE`` seconds).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

WORKER = "worker"
SCHEDULER = "scheduler"
SENT_AT_HEADER = "bp_sent_at"
THROTTLE = 10.0  # seconds between two writes of one part by one process

_last_write: dict[str, float] = {}
_lock = threading.Lock()
_in_beat = threading.local()
_beat_process = False


def beat(name: str, *, detail: dict | None = None, force: bool = False) -> bool:
    """Record that ``name`` is alive now; False when throttled or the write failed.

    Never raises: a heartbeat must not fail the task it rides on.
    """
    now = time.monotonic()
    with _lock:
        if not force and now - _last_write.get(name, -1e9) < THROTTLE:
            return False
        _last_write[name] = now
    try:
        from botplatform.models import Heartbeat

        Heartbeat.objects.bulk_create(
            [Heartbeat(name=name, at=timezone.now(), detail=detail or {})],
            update_conflicts=True,
            unique_fields=["name"],
            update_fields=["at", "detail"],
        )
        return True
    except Exception as exc:  # the database is down: health says so elsewhere
        logger.debug("Heartbeat %s not recorded: %s", name, exc)
        return False


def last_seen() -> dict[str, datetime]:
    """{part: when it last showed it works}; parts never seen are absent."""
    from botplatform.models import Heartbeat

    return dict(Heartbeat.objects.values_list("name", "at"))


def queue_state(queue: str | None = None) -> dict:
    """Length of the Celery queue and the age (seconds) of its oldest message.

    Only the Redis broker can be looked into; other brokers give ``None`` figures.
    """
    queue = queue or settings.CELERY_TASK_DEFAULT_QUEUE
    broker = settings.CELERY_BROKER_URL or ""
    if settings.CELERY_TASK_ALWAYS_EAGER or not broker.startswith(("redis://", "rediss://")):
        return {"length": None, "oldest_age_seconds": None}
    import redis

    from botplatform.cache import celery_queue_key

    client = redis.Redis.from_url(broker, socket_timeout=1, socket_connect_timeout=1)
    try:
        key = celery_queue_key(queue)
        length = int(client.llen(key))
        oldest = client.lindex(key, -1) if length else None
    finally:
        client.close()
    age = None
    if oldest:
        try:
            sent = float(json.loads(oldest)["headers"][SENT_AT_HEADER])
            age = max(0.0, round(time.time() - sent, 1))
        except (ValueError, KeyError, TypeError):
            age = None  # sent by a process without the header: length only
    return {"length": length, "oldest_age_seconds": age}


def _minutes(delta: timedelta) -> int:
    return max(int(delta.total_seconds() // 60), 0)


def background_report(*, now: datetime | None = None) -> dict:
    """Worker, scheduler and queue, with warnings in plain words for the home page."""
    now = now or timezone.now()
    eager = settings.CELERY_TASK_ALWAYS_EAGER
    seen = last_seen()
    stale_worker = timedelta(seconds=settings.HEALTH_WORKER_STALE_SECONDS)
    stale_scheduler = timedelta(seconds=settings.HEALTH_SCHEDULER_STALE_SECONDS)
    warnings: list[str] = []
    worker_at, scheduler_at = seen.get(WORKER), seen.get(SCHEDULER)
    if eager:
        worker = {"mode": "in-process", "last_task_at": None, "ok": True}
    else:
        worker_ok = worker_at is not None and now - worker_at <= stale_worker
        worker = {"mode": "celery", "last_task_at": worker_at, "ok": worker_ok}
        if worker_at is None:
            warnings.append(
                "No Celery worker has taken a task yet: broadcasts, delays and HTTP steps "
                "wait. Start one: celery -A botplatform worker"
            )
        elif not worker_ok:
            warnings.append(
                f"No worker has taken a task for {_minutes(now - worker_at)} minutes: "
                "broadcasts, delays and HTTP steps wait. Is celery worker running?"
            )
    scheduler_ok = scheduler_at is not None and now - scheduler_at <= stale_scheduler
    scheduler = {
        "mode": "bot runner (in-process)" if eager else "celery beat",
        "last_run_at": scheduler_at,
        "ok": scheduler_ok,
    }
    starter = "manage.py runbot --all" if eager else "celery -A botplatform beat"
    if scheduler_at is None:
        warnings.append(
            "The periodic scheduler has never run: timeouts, delays and scheduled "
            f"broadcasts do not come due. Start it: {starter}"
        )
    elif not scheduler_ok:
        warnings.append(
            f"The periodic scheduler has not run for {_minutes(now - scheduler_at)} minutes: "
            f"timeouts, delays and scheduled broadcasts wait. Is {starter} running?"
        )
    try:
        queue = {**queue_state(), "ok": True}
    except Exception as exc:
        queue = {"length": None, "oldest_age_seconds": None, "ok": False, "error": str(exc)[:200]}
    age = queue.get("oldest_age_seconds")
    if age is not None and age > settings.HEALTH_QUEUE_AGE_SECONDS:
        queue["ok"] = False
        warnings.append(
            f"The task queue is {int(age // 60)} min {int(age % 60)} s behind "
            f"({queue['length']} waiting): add workers or look for a stuck one."
        )
    return {
        "ok": worker["ok"] and scheduler["ok"] and queue["ok"],
        "worker": worker,
        "scheduler": scheduler,
        "queue": queue,
        "warnings": warnings,
    }


# --- Celery signal receivers -------------------------------------------------------------


def _on_publish(sender=None, headers=None, **kwargs) -> None:
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())
    if _beat_process:
        beat(SCHEDULER, detail={"task": str(sender)[:200]})


def _on_prerun(sender=None, task=None, **kwargs) -> None:
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return  # in-process: no worker to watch
    beat(WORKER, detail={"task": str(getattr(task, "name", ""))[:200]})


def _on_beat_init(**kwargs) -> None:
    global _beat_process
    _beat_process = True


def signals_connect() -> None:
    """Hook the receivers into Celery (called once by the Celery app module)."""
    from celery import signals

    signals.before_task_publish.connect(_on_publish, weak=False)
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.beat_init.connect(_on_beat_init, weak=False)
