"""Events in: an API event (``POST /api/v1/customers/{id}/events``) starts the
workflow whose ``event`` trigger has its name, for that customer, in the project's
first active bot; the replies go out after commit. The payload is ``event.*`` in the
templates of that run (a later step after a delay no longer sees it)."""

from __future__ import annotations

import json
import logging
import uuid

from django.db import transaction

from botplatform.conversation import InputEvent
from botplatform.models import Bot
from users.models import BotUser
from workflows.delivery import actions_deliver
from workflows.engine.triggers import trigger_candidates, trigger_match
from workflows.services import event_process

logger = logging.getLogger(__name__)


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


PURCHASE_EVENT = "purchase"


def purchase_event(purchase) -> bool:
    """A purchase was recorded (once per order, never for a replay): start the
    workflow listening to the ``purchase`` event, e.g. a stamp card's "add a stamp".
    Customers can never send it themselves, so stamps follow real purchases only."""
    user = purchase.customer
    if user.telegram_id is None:
        return False
    try:
        return customer_event(
            user=user,
            name=PURCHASE_EVENT,
            payload={
                "order_id": purchase.order_id,
                "amount": str(purchase.amount),
                "currency": purchase.currency,
                "accrued": purchase.accrued,
                "store": purchase.store,
            },
        )
    except Exception:  # the purchase stands; a broken workflow must not undo it
        logger.exception("purchase event for order %s failed", purchase.order_id)
        return False
