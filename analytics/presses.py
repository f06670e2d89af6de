"""Button presses per broadcast: callback queries on the messages a broadcast sent.

The update journal (``TelegramUpdate``) holds every callback query as Telegram sent
it: the chat and the id of the message whose button was pressed. A broadcast keeps
the ids of the messages it sent (``BroadcastMessage``, unique per bot, chat and
message), so a press belongs to a broadcast when (bot, chat, message) matches; any
other press (a workflow's button, another broadcast's) is not counted for it.

Each rollup run reads the callback queries recorded since the last one and keeps the
matching ones as ``BroadcastPress`` rows (the journal is pruned after some days).
Idempotent: a press is unique per (bot, update), so reading an update again adds
nothing. The watermark stays 10 minutes behind the journal, so an update committed
late, or a press read before its broadcast batch stored its message ids, is read
again by the next runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Max

from analytics.models import BroadcastPress
from botplatform.models import TelegramUpdate
from workflows.models import BroadcastMessage

SCAN_BATCH = 5000
SETTLE_MARGIN = timedelta(minutes=10)
_CHAT = "payload__callback_query__message__chat__id"
_MESSAGE = "payload__callback_query__message__message_id"


def presses_collect(*, since_id: int, now: datetime) -> tuple[int, set[int]]:
    """Store the broadcast presses among the updates after ``since_id``; returns the
    watermark to keep (the last update received before ``now`` less the margin) and
    the broadcasts pressed."""
    mark = since_id
    pressed: set[int] = set()
    while True:
        rows = list(
            TelegramUpdate.objects.filter(pk__gt=mark, payload__has_key="callback_query")
            .order_by("pk")
            .values_list("pk", "bot_id", "update_id", "received_at", _CHAT, _MESSAGE)[:SCAN_BATCH]
        )
        if not rows:
            break
        pressed |= _presses_store(rows)
        mark = rows[-1][0]
        if len(rows) < SCAN_BATCH:
            break
    settled = TelegramUpdate.objects.filter(
        pk__gt=since_id, received_at__lt=now - SETTLE_MARGIN
    ).aggregate(top=Max("pk"))["top"]
    return max(since_id, settled or 0), pressed


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _presses_store(rows: list[tuple]) -> set[int]:
    wanted = {
        (bot_id, chat_id, message_id)
        for _pk, bot_id, _update, _at, chat_id, message_id in rows
        if _whole(chat_id) and _whole(message_id)
    }
    if not wanted:
        return set()
    sent = {
        (bot_id, chat_id, message_id): (broadcast_id, project_id, user_id)
        for bot_id, chat_id, message_id, broadcast_id, project_id, user_id in (
            BroadcastMessage.objects.filter(
                bot_id__in={key[0] for key in wanted},
                chat_id__in={key[1] for key in wanted},
                message_id__in={key[2] for key in wanted},
            ).values_list(
                "bot_id",
                "chat_id",
                "message_id",
                "broadcast_id",
                "broadcast__project_id",
                "user_id",
            )
        )
    }
    presses = []
    for _pk, bot_id, update_id, received_at, chat_id, message_id in rows:
        found = sent.get((bot_id, chat_id, message_id))
        if found is None:
            continue
        broadcast_id, project_id, user_id = found
        presses.append(
            BroadcastPress(
                project_id=project_id,
                broadcast_id=broadcast_id,
                user_id=user_id,
                bot_id=bot_id,
                update_id=update_id,
                message_id=message_id,
                pressed_at=received_at,
            )
        )
    BroadcastPress.objects.bulk_create(presses, batch_size=2000, ignore_conflicts=True)
    return {press.broadcast_id for press in presses}
