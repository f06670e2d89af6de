"""Perform the engine's actions against the Bot API, within Telegram's rules.

- Every message takes a slot of the bot's shared send rate and of the chat's rate
  (``botplatform.ratelimit``) before it goes out; an update's first reply spends the
  slot taken with its incoming check (``ratelimit.send_credit_take``).
- A 429 is honoured: the call waits ``retry_after`` and is retried; 5xx and network
  errors back off and retry. Past ``TELEGRAM_SEND_MAX_WAIT`` the caller gets
  :class:`SendDeferred` and re-delivers later (nothing is dropped).
- A 403 (the user blocked the bot) is reported to the handler (``chat_blocked``); the
  handler's ``chat_is_blocked`` then makes later sends to that chat skip.
- Texts over 4096 characters are split; edits of messages that are gone fall back to
  a new message; "message is not modified" and stale callback queries are ignored.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from telebot import types

from botplatform import metrics, ratelimit
from botplatform.conversation import (
    Action,
    AnswerCallback,
    AnswerPreCheckout,
    EditMessage,
    SendInvoice,
    SendLocation,
    SendMedia,
    SendMessage,
    actions_from_json,
    actions_to_json,
)
from botplatform.models import Bot, DeferredSend
from botplatform.queueing import task_named
from botplatform.telegram.botstatus import bot_mark_unauthorized
from botplatform.telegram.client import ApiError, api, error_classify
from botplatform.telegram.handler import handler_get
from botplatform.telegram.media import MediaUnavailable, location_send, media_send, message_ids
from botplatform.telegram.payments import invoice_send, pre_checkout_answer

logger = logging.getLogger(__name__)

TEXT_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64


class TelegramCallError(Exception):
    """A Bot API call failed for good (the error says why; no token inside)."""

    def __init__(self, error: ApiError):
        super().__init__(f"Telegram answered {error.code}: {error.description}")
        self.error = error


class BotUnauthorized(TelegramCallError):
    """401: the token was revoked or is wrong. Stop using this bot."""


class SendDeferred(TelegramCallError):
    """Transient failure (429/5xx/network) that outlasted the allowed wait; retry later."""

    def __init__(self, error: ApiError, retry_in: float):
        super().__init__(error)
        self.retry_in = retry_in


# --- Telegram's rules ---------------------------------------------------------------


def text_split(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split at line breaks or spaces, never inside an HTML tag or entity."""
    chunks: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = window.rfind("\n", limit // 2)
        if cut <= 0:
            cut = window.rfind(" ", limit // 2)
        if cut <= 0:
            cut = limit
        cut = _cut_outside_markup(text, cut)
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    chunks.append(text)
    return [chunk for chunk in chunks if chunk] or [""]


_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)[^>]*>")


def _cut_outside_markup(text: str, cut: int) -> int:
    """Move a cut point left so it is not inside a tag, an entity or an open element."""
    head = text[:cut]
    if head.rfind("<") > head.rfind(">"):
        cut = head.rfind("<")
    amp = head.rfind("&")
    if amp > head.rfind(";") and cut - amp < 12:
        cut = min(cut, amp)
    open_tags: list[int] = []
    for match in _TAG_RE.finditer(text[:cut]):
        if match.group(1):
            if open_tags:
                open_tags.pop()
        else:
            open_tags.append(match.start())
    if open_tags and open_tags[0] > 0:
        cut = open_tags[0]  # keep a whole <b>...</b> element together
    return max(cut, 1)


def markup_build(action: SendMessage | EditMessage | SendMedia | SendLocation):
    """The reply_markup for an action (inline keyboard, reply keyboard, removal, None).

    A "share my phone" button (``contact_button``) is a reply keyboard of its own first
    row, shown once (``one_time_keyboard``: it hides after the press)."""
    if action.buttons:
        markup = types.InlineKeyboardMarkup()
        for row in action.buttons:
            buttons = []
            for button in row:
                if button.url:
                    buttons.append(types.InlineKeyboardButton(button.text, url=button.url))
                    continue
                data = button.callback_data or button.text
                if len(data.encode()) > CALLBACK_DATA_LIMIT:
                    logger.error(
                        "Button %r dropped: callback data is %d bytes, Telegram allows 64",
                        button.text,
                        len(data.encode()),
                    )
                    continue
                buttons.append(types.InlineKeyboardButton(button.text, callback_data=data))
            if buttons:
                markup.row(*buttons)
        return markup
    if isinstance(action, SendMessage):
        if action.reply_keyboard or action.contact_button:
            markup = types.ReplyKeyboardMarkup(
                resize_keyboard=True, one_time_keyboard=bool(action.contact_button)
            )
            if action.contact_button:
                markup.row(types.KeyboardButton(action.contact_button, request_contact=True))
            for row in action.reply_keyboard:
                markup.row(*[types.KeyboardButton(text) for text in row])
            return markup
        if action.remove_reply_keyboard:
            return types.ReplyKeyboardRemove()
    return None


# --- Calls with rate limits and retries ------------------------------------------------


def _call(bot: Bot, fn: Callable[[], object], *, chat_id: int | None, is_message: bool):
    """Run one API call, honouring rate limits, 429 and transient errors."""
    deadline = time.monotonic() + settings.TELEGRAM_SEND_MAX_WAIT
    backoff = 0.5
    while True:
        if is_message:
            ratelimit.send_slot_acquire(
                bot_id=bot.pk,
                chat_id=chat_id,
                per_second=bot.project.bot_send_rate_per_second,
                project_id=bot.project_id,
            )
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            metrics.network_add(time.perf_counter() - started)
            error = error_classify(exc)
            metrics.inc("bp_send_failures_total", reason=error.kind)
            if error.kind == "unauthorized":
                raise BotUnauthorized(error) from None
            if not error.transient:
                raise TelegramCallError(error) from None
            if error.kind == "retry_after":
                wait = max(error.retry_after, 0.05)
            else:
                wait, backoff = backoff, min(backoff * 2, 10)
            if time.monotonic() + wait > deadline:
                raise SendDeferred(error, wait) from None
            logger.warning(
                "Bot %s: Telegram %s (%s); retrying in %.1fs",
                bot.pk,
                error.kind,
                error.description,
                wait,
            )
            time.sleep(wait)
        else:
            metrics.network_add(time.perf_counter() - started)
            metrics.inc("bp_sends_total", kind="message" if is_message else "other")
            return result


def _send_message(bot: Bot, action: SendMessage) -> list[int]:
    """Send a text (split when long); returns the ids of the messages Telegram made."""
    chunks = text_split(action.text)
    sent: list[int] = []
    for index, chunk in enumerate(chunks):
        markup = markup_build(action) if index == len(chunks) - 1 else None

        def send(chunk=chunk, markup=markup, parse_mode=action.parse_mode or None):
            return _call(
                bot,
                lambda: api().send_message(
                    bot.token, action.chat_id, chunk, reply_markup=markup, parse_mode=parse_mode
                ),
                chat_id=action.chat_id,
                is_message=True,
            )

        try:
            sent += message_ids(send())
        except TelegramCallError as exc:
            if not (action.parse_mode and "parse entities" in exc.error.description):
                raise
            # Broken markup (an operator's "a < b"): better plain text than nothing.
            logger.warning("Bot %s: message markup rejected, sent as plain text", bot.pk)
            sent += message_ids(send(parse_mode=None))
    return sent


def _edit_message(bot: Bot, action: EditMessage) -> None:
    chunks = text_split(action.text)
    markup = markup_build(action) if len(chunks) == 1 else None
    try:
        _call(
            bot,
            lambda: api().edit_message_text(
                bot.token,
                chunks[0],
                chat_id=action.chat_id,
                message_id=action.message_id,
                parse_mode=action.parse_mode or None,
                reply_markup=markup,
            ),
            chat_id=action.chat_id,
            is_message=True,
        )
    except TelegramCallError as exc:
        description = exc.error.description.lower()
        if exc.error.kind != "bad_request":
            raise
        if "not modified" in description:
            chunks = chunks[:1]  # the message already says this; nothing to do
        elif "not found" in description or "can't be edited" in description:
            logger.info("Bot %s: message to edit is gone; sending it anew", bot.pk)
            chunks = ["", *chunks]  # send every chunk as a new message below
        else:
            raise
    rest = chunks[1:]
    if rest:
        _send_message(
            bot,
            SendMessage(
                chat_id=action.chat_id,
                text="\n".join(rest) if len(rest) > 1 else rest[0],
                parse_mode=action.parse_mode,
                buttons=action.buttons,
            ),
        )


def _answer_callback(bot: Bot, action: AnswerCallback) -> None:
    try:
        _call(
            bot,
            lambda: api().answer_callback_query(
                bot.token,
                action.callback_query_id,
                text=action.text or None,
                show_alert=action.show_alert or None,
            ),
            chat_id=None,
            is_message=False,
        )
    except TelegramCallError as exc:
        if exc.error.kind != "bad_request":
            raise
        # "query is too old" and friends: the button is not spinning any more anyway.
        logger.info("Bot %s: callback answer not accepted: %s", bot.pk, exc.error.description)


def action_send(*, bot: Bot, action: Action) -> list[int]:
    """Perform one action; returns the ids of the new messages it made (texts, media,
    locations; an edit, an invoice or an answer makes none that count here).
    Raises BotUnauthorized, SendDeferred or TelegramCallError."""
    if isinstance(action, SendMessage):
        return _send_message(bot, action)
    if isinstance(action, EditMessage):
        _edit_message(bot, action)
    elif isinstance(action, SendMedia):
        try:
            return media_send(
                bot,
                action,
                call=lambda fn: _call(bot, fn, chat_id=action.chat_id, is_message=True),
                api=api(),
                markup_build=markup_build,
                send_message=_send_message,
            )
        except MediaUnavailable as exc:
            logger.error("Bot %s: media not sent: %s", bot.pk, exc)
    elif isinstance(action, SendInvoice):
        invoice_send(
            bot, action, call=lambda fn: _call(bot, fn, chat_id=action.chat_id, is_message=True)
        )
    elif isinstance(action, AnswerPreCheckout):
        pre_checkout_answer(
            bot, action, call=lambda fn: _call(bot, fn, chat_id=None, is_message=False)
        )
    elif isinstance(action, SendLocation):
        return location_send(
            bot,
            action,
            call=lambda fn: _call(bot, fn, chat_id=action.chat_id, is_message=True),
            api=api(),
            markup=markup_build(action),
        )
    else:
        _answer_callback(bot, action)
    return []


def actions_send(
    *,
    bot: Bot,
    chat_id: int,
    actions: list[Action],
    start: int = 0,
    on_sent: Callable[[int], None] | None = None,
    sent: list[tuple[int, int]] | None = None,
) -> None:
    """Perform ``actions[start:]`` in order; ``on_sent(i + 1)`` after each one.

    A 403 marks the user blocked and skips the remaining messages (callback answers
    still go out). Permanent errors of one action are logged and skipped, so one bad
    message does not hold up the chat. Transient ones propagate as SendDeferred.
    ``sent``: (chat id, message id) of every new message is appended to it, as it goes
    (so the caller keeps what went out before an error).
    """
    blocked: set[int] = set()
    for index in range(start, len(actions)):
        action = actions[index]
        target = getattr(action, "chat_id", chat_id)
        if isinstance(action, AnswerCallback) or target not in blocked:
            try:
                ids = action_send(bot=bot, action=action) or []
                if sent is not None:
                    sent.extend((target, message_id) for message_id in ids)
            except (BotUnauthorized, SendDeferred):
                raise
            except TelegramCallError as exc:
                if exc.error.kind == "forbidden":
                    handler_get().chat_blocked(bot=bot, chat_id=target)
                    blocked.add(target)
                else:
                    logger.error(
                        "Bot %s: %s to chat %s rejected: %s",
                        bot.pk,
                        type(action).__name__,
                        target,
                        exc.error.description,
                    )
        if on_sent is not None:
            on_sent(index + 1)


def actions_deliver(
    *, bot_id: int | None, chat_id: int, actions: list[Action]
) -> list[tuple[int, int]]:
    """Send actions produced outside an update (delays, timers, broadcasts); the workflows
    app registers this with ``workflows.delivery`` at start-up. Returns (chat id,
    message id) of the messages sent now (a broadcast keeps them to count its button
    presses; what a deferred send delivers later is not in it).

    Sends to users who blocked the bot are skipped. If Telegram keeps answering 429 or
    5xx beyond the allowed wait, the rest is handed to a Celery task with a countdown,
    so it is sent later rather than dropped.
    """
    sent: list[tuple[int, int]] = []
    if bot_id is None or not actions:
        return sent
    bot = Bot.objects.select_related("project").filter(pk=bot_id, is_active=True).first()
    if bot is None:
        logger.warning("Actions for inactive or unknown bot %s dropped", bot_id)
        return sent
    if handler_get().chat_is_blocked(bot=bot, chat_id=chat_id):
        actions = [action for action in actions if isinstance(action, AnswerCallback)]
        if not actions:
            return sent
    progress = {"sent": 0}

    def _progress(count: int) -> None:
        progress["sent"] = count

    try:
        actions_send(bot=bot, chat_id=chat_id, actions=actions, on_sent=_progress, sent=sent)
    except SendDeferred as exc:
        deferred_send_schedule(
            bot_id=bot.pk,
            chat_id=chat_id,
            actions=actions[progress["sent"] :],
            retry_in=exc.retry_in,
        )
    except BotUnauthorized as exc:
        bot_mark_unauthorized(bot=bot, description=exc.error.description)
    return sent


# --- Deferred sends (a 429 or 5xx outlasted the in-process wait) ---------------------

DEFERRED_SEND_MAX_ATTEMPTS = 10


def deferred_send_schedule(
    *, bot_id: int, chat_id: int, actions: list[Action], retry_in: float
) -> DeferredSend:
    """Keep the actions in the database, then queue their send for ``retry_in`` seconds."""
    countdown = max(int(retry_in) + 1, 1)
    deferred = DeferredSend.objects.create(
        bot_id=bot_id,
        chat_id=chat_id,
        actions=actions_to_json(actions),
        due_at=timezone.now() + timedelta(seconds=countdown),
    )
    transaction.on_commit(
        lambda: task_named("telegram.deferred_send").apply_async(
            kwargs={"deferred_id": deferred.pk}, countdown=countdown
        )
    )
    return deferred


def deferred_send_run(*, deferred_id: int) -> bool:
    """Send one deferred row; True when it was sent (or handed on) and removed.

    The row stays locked while it is sent and is deleted in the same transaction, so a
    task and the sweep never both send it, and a worker killed mid-send leaves it for
    the sweep (Telegram may then get a message it already accepted; the Bot API offers
    no way to tell).
    """
    try:
        with transaction.atomic():
            deferred = (
                DeferredSend.objects.select_for_update(skip_locked=True)
                .filter(pk=deferred_id)
                .first()
            )
            if deferred is None:
                return False
            actions_deliver(
                bot_id=deferred.bot_id,
                chat_id=deferred.chat_id,
                actions=actions_from_json(deferred.actions),
            )
            deferred.delete()
            return True
    except Exception:
        attempts = DeferredSend.objects.filter(pk=deferred_id).values_list("attempts", flat=True)
        if attempts and attempts[0] + 1 >= DEFERRED_SEND_MAX_ATTEMPTS:
            DeferredSend.objects.filter(pk=deferred_id).delete()
            logger.exception(
                "Deferred send %s dropped after %s attempts", deferred_id, attempts[0] + 1
            )
        else:
            DeferredSend.objects.filter(pk=deferred_id).update(
                attempts=F("attempts") + 1, due_at=timezone.now() + timedelta(minutes=1)
            )
            logger.exception("Deferred send %s failed; the sweep retries it", deferred_id)
        return False


def deferred_sends_due(*, now=None) -> list[int]:
    """Ids of deferred rows whose time has come (their task was lost or is late)."""
    now = now or timezone.now()
    return list(DeferredSend.objects.filter(due_at__lte=now).values_list("pk", flat=True)[:500])
