"""Celery discovers tasks in ``<app>.tasks``; the Telegram transport keeps its own."""

from __future__ import annotations

from botplatform.telegram.tasks import actions_deliver_task, update_run_task, updates_prune_task

__all__ = ["actions_deliver_task", "update_run_task", "updates_prune_task"]
