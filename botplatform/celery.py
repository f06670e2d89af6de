"""The Celery application. Configuration comes from Django settings (CELERY_*)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")

app = Celery("botplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from botplatform.heartbeat import signals_connect  # noqa: E402 - needs the app's settings

signals_connect()
