"""Events in: an API event (``POST /api/v1/customers/{id}/events``) starts the
workflow whose ``event`` trigger has its name, for that customer, in the project's
first active bot; the replies go out after commit. The payload is ``event.*`` in the
templates of that run (a later step after a delay no longer sees it)."""

from __future__ import annotations

import json
import uuid

from django.db import transaction

from botplatform.conversation import InputEvent
from botplatform.models import Bot
from users.models import BotUser
from workflows.delivery import actions_deliver
from workflows.engine.triggers import trigger_candidates, trigger_match
from workflows.services import event_process


def customer_event(*, user: BotUser, name: str, payload: dict) -> bool:
    """Start the workflow for event ``name``; False when no trigger matches (or the
    customer has no Telegram chat or the project no bot)."""
    event = InputEvent(
        kind="event",
        payload=name,
        text=json.dumps(payload, default=str),
        event_id=f"api:event:{uuid.uuid4().hex}",
    )
    if user.chat_id is None or trigger_match(trigger_candidates(user.project_id), event) is None:
        return False
    bot = Bot.objects.filter(project_id=user.project_id, is_active=True).order_by("pk").first()
    if bot is None:
        return False
    with transaction.atomic():
        result = event_process(user=user, event=event, bot=bot)
        actions = list(result.actions)
        if actions:
            transaction.on_commit(
                lambda: actions_deliver(bot_id=bot.pk, chat_id=user.chat_id, actions=actions)
            )
    return result.handled
