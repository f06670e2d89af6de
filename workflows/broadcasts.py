"""Broadcasts: one message (or a workflow) to a segment of a project's users.

Exactly-once-or-never per user: starting a broadcast freezes its recipients as
:class:`~workflows.models.BroadcastDelivery` rows (unique per broadcast and user);
a worker claims a batch with ``SELECT ... FOR UPDATE SKIP LOCKED`` and a conditional
UPDATE to "sending" before it sends, so two workers never take one row. A worker
that dies after claiming leaves rows in "sending"; they are later marked failed,
never sent again, so nobody gets a broadcast twice.

Replies to users go first: a broadcast uses at most ``BROADCAST_RATE_SHARE`` of its
bot's send rate (one batch a second, paced through the cache), its tasks are queued
with the lowest priority (and on ``BROADCAST_QUEUE`` when set), and every message
still takes a slot of the bot's shared rate limit in the Telegram sender.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from botplatform.cache import BROADCAST_PACE_TTL, broadcast_pace_key
from botplatform.conversation import Button, SendMessage
from botplatform.models import Bot
from botplatform.queueing import BrokerSafeTask
from users.models import BotUser
from workflows.delivery import actions_deliver
from workflows.engine.conditions import ConditionError, condition_evaluate, condition_parse
from workflows.engine.steps.base import TELEGRAM_TEXT_LIMIT
from workflows.engine.templating import TemplateError, template_check, template_render
from workflows.engine.userdata import UserData
from workflows.models import Broadcast, BroadcastDelivery, BroadcastMessage
from workflows.services import session_key_default, workflow_start_for_user

logger = logging.getLogger(__name__)
BStatus = Broadcast.Status
DStatus = BroadcastDelivery.Status
STALE_SENDING = timedelta(minutes=10)
LOWEST_PRIORITY = 9


# --- Segments -----------------------------------------------------------------------


def condition_problem(condition: str) -> str | None:
    """Why a segment condition cannot be used (None when it can)."""
    try:
        condition_parse(condition)
    except ConditionError as exc:
        return str(exc)
    return None


def broadcast_text_problem(text: str) -> str | None:
    """Why a broadcast's text cannot be sent (None when it can).

    The length is checked first: a message longer than Telegram accepts is refused
    before any template work, so a pasted megabyte costs nothing.
    """
    if len(text) > TELEGRAM_TEXT_LIMIT:
        return (
            f"The message is {len(text)} characters long; Telegram accepts at most "
            f"{TELEGRAM_TEXT_LIMIT}. Shorten it or split it into two broadcasts."
        )
    return template_check(text)


def _condition_context(user: BotUser, variables: dict) -> dict:
    return {
        "user": {
            "id": user.pk,
            "telegram_id": user.telegram_id,
            "username": user.username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "language_code": user.language_code,
            "balance": user.balance,
            "level": user.level,
            "referrals": getattr(user, "referral_count", 0),
            "is_blocked": user.is_blocked,
        },
        "vars": variables,
    }


def _segment_queryset(broadcast: Broadcast) -> QuerySet[BotUser]:
    users = BotUser.objects.filter(
        project_id=broadcast.project_id, is_test=False, telegram_id__isnull=False
    )
    if broadcast.segment == Broadcast.Segment.NOT_BLOCKED:
        users = users.filter(is_blocked=False)
    elif broadcast.segment == Broadcast.Segment.LEVEL:
        users = users.filter(level=broadcast.level)
    return users.order_by("pk")


def broadcast_recipient_ids(*, broadcast: Broadcast) -> list[int]:
    """Ids of the users the broadcast goes to (test users never)."""
    users = _segment_queryset(broadcast)
    if broadcast.segment != Broadcast.Segment.CONDITION:
        return list(users.values_list("pk", flat=True))
    if condition_problem(broadcast.condition):
        return []
    matching = []
    batch = users.annotate(referral_count=Count("referrals")).prefetch_related("variables")
    for user in batch.iterator(chunk_size=500):
        variables = {variable.key: variable.value for variable in user.variables.all()}
        if condition_evaluate(broadcast.condition, _condition_context(user, variables)):
            matching.append(user.pk)
    return matching


def broadcast_bot(broadcast: Broadcast) -> Bot | None:
    if broadcast.bot_id:
        return Bot.objects.filter(pk=broadcast.bot_id, is_active=True).first()
    return (
        Bot.objects.filter(project_id=broadcast.project_id, is_active=True).order_by("pk").first()
    )


# --- Lifecycle ----------------------------------------------------------------------


def broadcast_schedule(*, broadcast_id: int, when: datetime) -> bool:
    """A draft goes out at ``when`` (the periodic task starts it)."""
    return bool(
        Broadcast.objects.filter(pk=broadcast_id, status=BStatus.DRAFT).update(
            status=BStatus.SCHEDULED, scheduled_at=when, updated_at=timezone.now()
        )
    )


def broadcast_cancel(*, broadcast_id: int) -> bool:
    """Stop a draft, scheduled or sending broadcast; what was sent stays sent."""
    now = timezone.now()
    done = Broadcast.objects.filter(
        pk=broadcast_id, status__in=[BStatus.DRAFT, BStatus.SCHEDULED, BStatus.SENDING]
    ).update(status=BStatus.CANCELLED, finished_at=now, updated_at=now)
    return bool(done)


def broadcast_start(*, broadcast_id: int) -> bool:
    """Claim the broadcast (draft or scheduled → sending), freeze its recipients, queue it.

    A conditional UPDATE: pressing "send now" twice, or the periodic task racing the
    button, starts it once.
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = Broadcast.objects.filter(
            pk=broadcast_id, status__in=[BStatus.DRAFT, BStatus.SCHEDULED]
        ).update(status=BStatus.SENDING, started_at=now, updated_at=now)
        if not claimed:
            return False
        broadcast = Broadcast.objects.get(pk=broadcast_id)
        ids = broadcast_recipient_ids(broadcast=broadcast)
        BroadcastDelivery.objects.bulk_create(
            [BroadcastDelivery(broadcast_id=broadcast_id, user_id=user_id) for user_id in ids],
            batch_size=1000,
            ignore_conflicts=True,
        )
        broadcast_counters_refresh(broadcast_id=broadcast_id)
        transaction.on_commit(lambda: broadcast_send_queue(broadcast_id))
    return True


def broadcast_counters_refresh(*, broadcast_id: int) -> dict[str, int]:
    """Recount the delivery figures from the delivery rows (the truth)."""
    figures = BroadcastDelivery.objects.filter(broadcast_id=broadcast_id).aggregate(
        total=Count("pk"),
        sent=Count("pk", filter=Q(status=DStatus.SENT)),
        failed=Count("pk", filter=Q(status=DStatus.FAILED)),
        blocked=Count("pk", filter=Q(status=DStatus.BLOCKED)),
        open=Count("pk", filter=Q(status__in=[DStatus.PENDING, DStatus.SENDING])),
    )
    Broadcast.objects.filter(pk=broadcast_id).update(
        total=figures["total"],
        sent=figures["sent"],
        failed=figures["failed"],
        blocked=figures["blocked"],
        updated_at=timezone.now(),
    )
    return figures


def _claim(broadcast_id: int, limit: int) -> list[BroadcastDelivery]:
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            BroadcastDelivery.objects.filter(broadcast_id=broadcast_id, status=DStatus.PENDING)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        BroadcastDelivery.objects.filter(pk__in=ids, status=DStatus.PENDING).update(
            status=DStatus.SENDING, claimed_at=now
        )
    return list(
        BroadcastDelivery.objects.filter(pk__in=ids, status=DStatus.SENDING).select_related("user")
    )


def _finish(delivery_id: int, status: str, error: str = "") -> None:
    BroadcastDelivery.objects.filter(pk=delivery_id, status=DStatus.SENDING).update(
        status=status, error=error[:500], finished_at=timezone.now()
    )


def _actions_for(broadcast: Broadcast, user: BotUser, bot: Bot) -> list:
    if broadcast.workflow_id:
        return workflow_start_for_user(
            user=user,
            workflow_id=broadcast.workflow_id,
            bot=bot,
            session_key=session_key_default(bot=bot, user=user),
            event_id=f"broadcast:{broadcast.pk}:{user.pk}",
        )
    text = template_render(broadcast.text, UserData(user, bot).context())
    rows = tuple(
        tuple(
            Button(text=b["text"], url=b.get("url", ""), callback_data=b.get("data", ""))
            for b in row
        )
        for row in broadcast.buttons or []
    )
    return [SendMessage(chat_id=user.chat_id, text=text, buttons=rows)]


def _messages_of(
    broadcast: Broadcast, bot: Bot, user: BotUser, sent: list[tuple[int, int]]
) -> list[BroadcastMessage]:
    now = timezone.now()
    return [
        BroadcastMessage(
            broadcast=broadcast,
            user=user,
            bot=bot,
            chat_id=chat_id,
            message_id=message_id,
            sent_at=now,
        )
        for chat_id, message_id in sent
    ]


def _bot_rejected(bot_id: int) -> bool:
    """Telegram answered 401 for this bot's token: nothing it sends arrives."""
    return Bot.objects.filter(pk=bot_id, status=Bot.Status.UNAUTHORIZED).exists()


def _release(delivery_ids: list[int]) -> None:
    """Claimed rows that were certainly not sent go back to the queue."""
    BroadcastDelivery.objects.filter(pk__in=delivery_ids, status=DStatus.SENDING).update(
        status=DStatus.PENDING, claimed_at=None
    )


def broadcast_send_batch(*, broadcast_id: int, limit: int) -> int:
    """Claim and send up to ``limit`` deliveries; returns how many were handled.

    If the bot's token is rejected (401), the unsent rows go back to "pending" and the
    batch stops: the broadcast waits (the periodic task retries) until the token is
    fixed, instead of counting messages that never left as sent.
    """
    broadcast = Broadcast.objects.filter(pk=broadcast_id, status=BStatus.SENDING).first()
    if broadcast is None:
        return 0
    bot = broadcast_bot(broadcast)
    if bot is not None and _bot_rejected(bot.pk):
        return 0
    deliveries = _claim(broadcast_id, limit)

    handled = 0
    messages: list[BroadcastMessage] = []
    for index, delivery in enumerate(deliveries):
        user = delivery.user
        handled += 1
        if bot is None:
            _finish(delivery.pk, DStatus.FAILED, "the project has no active bot")
            continue
        if user.is_blocked:
            _finish(delivery.pk, DStatus.BLOCKED, "the user had blocked the bot")
            continue
        try:
            actions = _actions_for(broadcast, user, bot)
            sent = actions_deliver(bot_id=bot.pk, chat_id=user.chat_id, actions=actions)
            messages += _messages_of(broadcast, bot, user, sent)
        except (TemplateError, ValueError) as exc:
            _finish(delivery.pk, DStatus.FAILED, str(exc))
            continue
        except Exception as exc:
            logger.exception("broadcast %s to user %s failed", broadcast_id, user.pk)
            _finish(delivery.pk, DStatus.FAILED, f"{type(exc).__name__}: {exc}")
            continue
        if _bot_rejected(bot.pk):
            logger.error("broadcast %s paused: Telegram rejected the bot's token", broadcast_id)
            _release([d.pk for d in deliveries[index:]])
            handled -= 1
            break
        if BotUser.objects.filter(pk=user.pk, is_blocked=True).exists():
            _finish(delivery.pk, DStatus.BLOCKED, "Telegram answered: the user blocked the bot")
        else:
            _finish(delivery.pk, DStatus.SENT)
    # One INSERT for the batch's messages (their presses are counted by analytics).
    BroadcastMessage.objects.bulk_create(messages, batch_size=1000, ignore_conflicts=True)
    figures = broadcast_counters_refresh(broadcast_id=broadcast_id)
    if figures["open"] == 0:
        Broadcast.objects.filter(pk=broadcast_id, status=BStatus.SENDING).update(
            status=BStatus.DONE, finished_at=timezone.now(), updated_at=timezone.now()
        )
    return handled


def broadcast_stale_fail(*, broadcast_id: int, older_than: timedelta = STALE_SENDING) -> int:
    """Rows a dead worker claimed: failed, never re-sent (they may have gone out)."""
    count = BroadcastDelivery.objects.filter(
        broadcast_id=broadcast_id,
        status=DStatus.SENDING,
        claimed_at__lt=timezone.now() - older_than,
    ).update(
        status=DStatus.FAILED,
        error="the worker stopped while sending; not retried so nobody gets it twice",
        finished_at=timezone.now(),
    )
    if count:
        broadcast_counters_refresh(broadcast_id=broadcast_id)
    return count


def broadcast_batch_size(broadcast: Broadcast) -> int:
    """Messages per second for this broadcast: a share of its bot's send rate."""
    rate = broadcast.project.bot_send_rate_per_second
    share = float(getattr(settings, "BROADCAST_RATE_SHARE", 0.5))
    return max(1, int(rate * share))


# --- Tasks --------------------------------------------------------------------------


def broadcast_send_queue(broadcast_id: int, countdown: float = 0) -> None:
    options: dict = {"priority": LOWEST_PRIORITY}
    queue = getattr(settings, "BROADCAST_QUEUE", "")
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    broadcast_send.apply_async((broadcast_id,), **options)


def _pace_take(broadcast_id: int) -> bool:
    """At most one batch per second per broadcast, across all workers."""
    return bool(cache.add(broadcast_pace_key(broadcast_id), 1, BROADCAST_PACE_TTL))


# With the broker down, queueing is skipped (BrokerSafeTask): the deliveries stay pending in
# the database and the periodic broadcasts_due revives the chain.
@shared_task(base=BrokerSafeTask, ignore_result=True, name="workflows.broadcast_send")
def broadcast_send(broadcast_id: int) -> None:
    """Send one batch, then queue the next one a second later. Idempotent.

    With ``BROADCAST_SEND_INLINE`` (no broker: tasks run in-process) the batches follow
    each other right here, one a second, instead.

    A duplicate task (the periodic sweep racing the chain) finds the pace taken and
    stops; the chain that holds it carries on, and the sweep revives a lost chain.
    """
    broadcast = (
        Broadcast.objects.filter(pk=broadcast_id, status=BStatus.SENDING)
        .select_related("project")
        .first()
    )
    if broadcast is None or not _pace_take(broadcast_id):
        return
    limit = broadcast_batch_size(broadcast)
    claimed = broadcast_send_batch(broadcast_id=broadcast_id, limit=limit)
    if getattr(settings, "BROADCAST_SEND_INLINE", False):
        # No Celery worker (the zero-setup mode): keep going here, at the same pace.
        while claimed == limit:
            time.sleep(BROADCAST_PACE_TTL)
            claimed = broadcast_send_batch(broadcast_id=broadcast_id, limit=limit)
    elif claimed:
        broadcast_send_queue(broadcast_id, countdown=BROADCAST_PACE_TTL)


@shared_task(base=BrokerSafeTask, ignore_result=True, name="workflows.broadcasts_due")
def broadcasts_due() -> dict:
    """Periodic: start due scheduled broadcasts, revive stalled ones, finish drained ones."""
    now = timezone.now()
    started = 0
    for broadcast_id in Broadcast.objects.filter(
        status=BStatus.SCHEDULED, scheduled_at__lte=now
    ).values_list("pk", flat=True):
        started += int(broadcast_start(broadcast_id=broadcast_id))
    revived = 0
    for broadcast_id in Broadcast.objects.filter(status=BStatus.SENDING).values_list(
        "pk", flat=True
    ):
        broadcast_stale_fail(broadcast_id=broadcast_id)
        figures = broadcast_counters_refresh(broadcast_id=broadcast_id)
        if figures["open"] == 0:
            Broadcast.objects.filter(pk=broadcast_id, status=BStatus.SENDING).update(
                status=BStatus.DONE, finished_at=now, updated_at=now
            )
        elif BroadcastDelivery.objects.filter(
            broadcast_id=broadcast_id, status=DStatus.PENDING
        ).exists():
            broadcast_send_queue(broadcast_id)
            revived += 1
    return {"started": started, "revived": revived}
