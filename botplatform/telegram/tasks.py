"""Celery tasks of the Telegram transport. They take ids and JSON, and are idempotent."""

from __future__ import annotations

from celery import shared_task

from botplatform.outbox import InlineFallbackTask


@shared_task(name="telegram.actions_deliver", ignore_result=True)
def actions_deliver_task(*, bot_id: int, chat_id: int, actions: list[dict]) -> None:
    """Send actions that had to wait (a 429 outlasted the in-process wait)."""
    from botplatform.telegram.sender import actions_deliver, actions_from_json

    actions_deliver(bot_id=bot_id, chat_id=chat_id, actions=actions_from_json(actions))


@shared_task(name="telegram.update_run", base=InlineFallbackTask, ignore_result=True)
def update_run_task(*, update_pk: int) -> None:
    """Handle a recorded webhook update (TELEGRAM_WEBHOOK_ASYNC); a rerun is a no-op."""
    from botplatform.telegram.dispatch import update_run

    update_run(update_pk=update_pk)


@shared_task(name="telegram.updates_prune", ignore_result=True)
def updates_prune_task() -> int:
    """Hourly: keep the update journal small (TELEGRAM_UPDATE_RETENTION_DAYS)."""
    from django.conf import settings

    from botplatform.telegram.dispatch import updates_prune

    return updates_prune(older_than_days=settings.TELEGRAM_UPDATE_RETENTION_DAYS)
