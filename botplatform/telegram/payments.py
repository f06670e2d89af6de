"""Telegram Payments on the wire: invoices, pre-checkout answers, Stars refunds.

Telegram gives a bot 10 seconds to answer a pre-checkout query; the answer is an
action of the update that carried the query (``AnswerPreCheckout``), so it goes out
on the update's own path right after the handler decided, like a callback answer.
"""

from __future__ import annotations

from collections.abc import Callable

from telebot import types

from botplatform.conversation import AnswerPreCheckout, SendInvoice
from botplatform.models import Bot
from botplatform.telegram.client import api


def invoice_send(bot: Bot, action: SendInvoice, *, call: Callable) -> None:
    prices = [types.LabeledPrice(action.label or action.title[:32], action.amount)]
    call(
        lambda: api().send_invoice(
            bot.token, action.chat_id, action.title[:32], action.description[:255],
            action.payload, "", action.currency, prices,
        )
    )  # fmt: skip


def pre_checkout_answer(bot: Bot, action: AnswerPreCheckout, *, call: Callable) -> None:
    call(
        lambda: api().answer_pre_checkout_query(
            bot.token,
            action.pre_checkout_query_id,
            action.ok,
            error_message=None if action.ok else (action.error_message or "Not available")[:200],
        )
    )


def star_refund(*, bot: Bot, telegram_id: int, charge_id: str) -> None:
    """Refund a Stars payment (``refundStarPayment``); raises on Telegram's refusal."""
    api().refund_star_payment(bot.token, telegram_id, charge_id)
