"""A redemption the customer approves in their own chat: "Spend 200 bonuses at Store 5?"

A hold that needs the customer's approval (``users.holds``) is shown to the customer
with Yes/No buttons (callback data ``hold:y:<id>`` / ``hold:n:<id>``). Their press goes
to :func:`hold_answer` (called by the handler before the workflows): only the hold's
own customer may answer, and ``users.holds.hold_approve`` records it once, under the
hold's row lock.

- A hold made in the bot's cashier menu (:mod:`workflows.cashier`; its order id starts
  with ``tg-``) is confirmed as soon as the customer says yes: the bonuses are spent
  (one ledger entry, keyed by the hold) and the cashier is told in their chat. The
  request goes out with the cashier's update (its outbox), not through the sender below.
- A hold made through the API is only approved; the till then confirms it
  (``POST /api/v1/holds/{id}/confirm``). Its request is sent by
  :func:`hold_approval_send`, which ``workflows.apps`` registers with
  ``users.holds.approval_sender_register`` (called after the hold commits).
"""

from __future__ import annotations

import html
import logging

from botplatform.conversation import Action, AnswerCallback, Button, EditMessage, SendMessage
from botplatform.models import Bot
from users.holds import HoldError, hold_approve, hold_confirm
from users.models import BotUser, Hold
from workflows.delivery import actions_deliver

logger = logging.getLogger(__name__)

CALLBACK_PREFIX = "hold:"
BOT_ORDER_PREFIX = "tg-"  # holds and purchases made in the cashier menu


def _where(hold: Hold) -> str:
    return f" at {html.escape(hold.store)}" if hold.store else ""


def hold_request(hold: Hold, *, chat_id: int) -> SendMessage:
    """The question to the customer, with Yes/No buttons."""
    return SendMessage(
        chat_id=chat_id,
        text=f"Spend <b>{hold.amount}</b> bonuses{_where(hold)}?",
        buttons=(
            (
                Button("✅ Yes", callback_data=f"{CALLBACK_PREFIX}y:{hold.pk}"),
                Button("✖ No", callback_data=f"{CALLBACK_PREFIX}n:{hold.pk}"),
            ),
        ),
    )


def hold_approval_message(hold: Hold, *, cashier_chat_id: int) -> list[Action]:
    """For the cashier menu: ask the customer (in their chat) and tell the cashier."""
    customer = BotUser.objects.only("chat_id").get(pk=hold.customer_id)
    return [
        hold_request(hold, chat_id=customer.chat_id),
        SendMessage(
            chat_id=cashier_chat_id,
            text=f"⏳ Asked the customer to approve {hold.amount} bonuses in their chat. "
            "You will see their answer here.",
        ),
    ]


def hold_approval_send(hold: Hold) -> None:
    """``users.holds``'s approval sender: ask the customer of an API hold (after commit),
    through the project's first active bot."""
    if hold.order_id.startswith(BOT_ORDER_PREFIX):
        return  # asked in the cashier's update already
    customer = BotUser.objects.only("chat_id").get(pk=hold.customer_id)
    bot_id = (
        Bot.objects.filter(project_id=hold.project_id, is_active=True)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    if customer.chat_id is None or bot_id is None:
        logger.warning("Hold %s: the customer cannot be asked (no chat or no bot)", hold.pk)
        return
    actions_deliver(
        bot_id=bot_id,
        chat_id=customer.chat_id,
        actions=[hold_request(hold, chat_id=customer.chat_id)],
    )


def hold_answer(
    *,
    bot: Bot,
    user: BotUser,
    chat_id: int,
    callback_data: str,
    query_id: str,
    message_id: int | None,
) -> list[Action] | None:
    """The customer pressed Yes or No; None when the press is not about a hold."""
    if not callback_data.startswith(CALLBACK_PREFIX):
        return None
    verdict, _, raw_id = callback_data[len(CALLBACK_PREFIX) :].partition(":")
    hold = None
    if verdict in ("y", "n") and raw_id.isascii() and raw_id.isdigit() and len(raw_id) < 19:
        hold = Hold.objects.filter(pk=int(raw_id), project_id=bot.project_id).first()
    if hold is None or hold.customer_id != user.pk:
        return [AnswerCallback(query_id, "This request is not yours to answer.", show_alert=True)]
    try:
        hold = hold_approve(hold.pk, verdict == "y")
        if hold.approved_at and hold.order_id.startswith(BOT_ORDER_PREFIX):
            hold = hold_confirm(hold_id=hold.pk, project_id=bot.project_id)
    except HoldError as exc:
        return [AnswerCallback(query_id, f"Not possible: {exc}", show_alert=True)]
    text, to_cashier = _outcome(hold)
    actions: list[Action] = [AnswerCallback(query_id)]
    if message_id:
        actions.append(EditMessage(chat_id=chat_id, message_id=message_id, text=text))
    else:
        actions.append(SendMessage(chat_id=chat_id, text=text))
    if to_cashier and hold.cashier_id is not None and hold.order_id.startswith(BOT_ORDER_PREFIX):
        actions.append(SendMessage(chat_id=hold.cashier.telegram_id, text=to_cashier))
    return actions


def _outcome(hold: Hold) -> tuple[str, str]:
    """(what the customer's message now says, what the cashier is told or "")."""
    amount, where = hold.amount, _where(hold)
    if hold.status == Hold.Status.CONFIRMED:
        balance = BotUser.objects.values_list("balance", flat=True).get(pk=hold.customer_id)
        return (
            f"✅ You spent {amount} bonuses{where}. Your balance: {balance}.",
            f"✅ The customer approved: {amount} bonuses redeemed.",
        )
    if hold.status == Hold.Status.HELD and hold.approved_at:
        return f"✅ Approved: {amount} bonuses{where}. The till completes the payment.", ""
    if hold.declined_at:
        return (
            f"✖ Declined: no bonuses were spent{where}.",
            f"✖ The customer declined spending {amount} bonuses.",
        )
    if hold.status == Hold.Status.EXPIRED:
        return "⌛ This request has expired; nothing was spent.", ""
    return f"This request is closed ({hold.get_status_display().lower()}).", ""
