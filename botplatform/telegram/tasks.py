"""Celery tasks of the Telegram transport. They take ids and JSON, and are idempotent.

The modules they run queue them by name (``queueing.task_named``), so nothing imports
this module back."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from botplatform.queueing import BrokerSafeTask, InlineFallbackTask
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_prune
from botplatform.telegram.sender import deferred_send_run, deferred_sends_due


@shared_task(name="telegram.deferred_send", base=BrokerSafeTask, ignore_result=True)
def deferred_send_task(*, deferred_id: int) -> None:
    """Send replies that had to wait (a 429 outlasted the in-process wait). Idempotent."""
    deferred_send_run(deferred_id=deferred_id)


@shared_task(name="telegram.deferred_sends_sweep", base=BrokerSafeTask, ignore_result=True)
def deferred_sends_sweep_task() -> int:
    """Every minute: queue deferred replies whose task was lost (broker or worker down)."""
    due = deferred_sends_due()
    for deferred_id in due:
        deferred_send_task.delay(deferred_id=deferred_id)
    return len(due)


@shared_task(name="telegram.update_run", base=InlineFallbackTask, ignore_result=True)
def update_run_task(*, update_pk: int) -> None:
    """Handle a recorded webhook update (TELEGRAM_WEBHOOK_ASYNC); a rerun is a no-op."""
    update_run(update_pk=update_pk)


@shared_task(name="telegram.updates_prune", ignore_result=True)
def updates_prune_task() -> int:
    """Hourly: keep the update journal small (TELEGRAM_UPDATE_RETENTION_DAYS)."""
    return updates_prune(older_than_days=settings.TELEGRAM_UPDATE_RETENTION_DAYS)


@worker_ready.connect
def _deferred_sweep_on_worker_start(sender=None, **kwargs) -> None:
    """A worker coming up (e.g. after a broker outage) sends what waited at once."""
    deferred_sends_sweep_task.delay()
