"""Celery discovers tasks in ``<app>.tasks``; the Telegram transport keeps its own."""

from __future__ import annotations

from botplatform.telegram.tasks import (
    deferred_send_task,
    deferred_sends_sweep_task,
    update_run_task,
    updates_prune_task,
)

__all__ = [
    "deferred_send_task",
    "deferred_sends_sweep_task",
    "update_run_task",
    "updates_prune_task",
]
