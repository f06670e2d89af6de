"""The operators' audit trail: who did what, when and why, in Django's admin log.

Django's ``LogEntry`` is what the admin already shows on every object's History page
and what superusers can list, so audited actions that are not plain model saves
(balance adjustments, publishes, role and secret changes) are written there too,
with the reason in the message.
"""

from __future__ import annotations

from django.contrib.admin.models import CHANGE, LogEntry
from django.db import models

MESSAGE_MAX = 1000


def audit_record(*, actor, obj: models.Model, message: str, action: int = CHANGE) -> LogEntry:
    """One history line on ``obj``: ``message`` says what changed and why."""
    return LogEntry.objects.log_actions(
        user_id=actor.pk,
        queryset=[obj],
        action_flag=action,
        change_message=message[:MESSAGE_MAX],
        single_object=True,
    )
