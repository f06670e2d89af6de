"""The cashier menu: staff of a project working the till in the same bot.

A Telegram user marked as a cashier of the project (``users.models.Cashier``, by an
owner in the admin) sends ``/cashier``. The menu then asks, in turn:

1. the customer's card: the code typed, or the card's QR code opened with the phone's
   camera (Telegram then starts the bot with ``/start card_<code>`` from the cashier's
   own account);
2. what to do: record a purchase (bonuses accrued by the project's earn rules) or
   redeem bonuses (a hold the customer approves in their own chat, see
   :mod:`workflows.hold_approval`);
3. the purchase amount, or the bonuses to redeem.

Purchases and holds are made by the loyalty services (``users.purchases``,
``users.holds``) with the cashier and their store recorded, and the cashier's daily
limit checked under the cashier's row lock. Everything runs inside the update's
transaction, so a retried update changes nothing twice (the order id is the update's).

Where the cashier is in the menu lives in Redis (``botplatform.cache.cashier_state_key``,
15 minutes): nothing is written until the last answer, so lost state costs a
``/cashier``. For everyone who is not an active cashier every event passes through
untouched; whether a cashier menu is open is read with the wave's other cache reads
on the polling path (one more key in the same round trip), and costs one Redis read
per text message or command on the webhook path. Any other command closes an open
menu and goes to the workflows.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from functools import partial

from django.core.cache import cache
from django.db import transaction

from botplatform.cache import CASHIER_STATE_TTL, cashier_state_key
from botplatform.conversation import Action, AnswerCallback, Button, InputEvent, SendMessage
from botplatform.models import Bot
from botplatform.queueing import task_named
from users.cards import CARD_START_PREFIX, card_code_display
from users.customers import CardCodeInvalid, customer_find
from users.earn_rules import AmountInvalid
from users.holds import HoldError, hold_create
from users.models import BotUser, Cashier
from users.purchases import PurchaseError, purchase_record
from users.readahead import UsersAhead
from workflows.engine.numbers import NumberError, integer_parse
from workflows.hold_approval import hold_approval_message

logger = logging.getLogger(__name__)

CALLBACK_PREFIX = "till:"
COMMAND = "cashier"


@dataclass
class Turn:
    """One event of a cashier: who, where, what they sent."""

    bot: Bot
    cashier: Cashier
    chat_id: int
    event: InputEvent
    update_id: int

    def say(self, text: str, *rows: tuple[Button, ...]) -> SendMessage:
        return SendMessage(chat_id=self.chat_id, text=text, buttons=tuple(rows))


def cashier_state_keys(*, bot_id: int, updates) -> list[str]:
    """The menu-state keys a wave's updates may ask for, read ahead with the users'
    state (one round trip for the wave instead of one per text or command)."""
    return [
        cashier_state_key(bot_id, parsed.telegram_id)
        for parsed in updates
        if parsed.event.kind in ("text", "command")
    ]


def _state_get(bot_id: int, telegram_id: int, ahead: UsersAhead | None = None) -> dict | None:
    key = cashier_state_key(bot_id, telegram_id)
    if ahead is not None and key in ahead.state_read:
        # Read ahead for the wave (a wave has each user once: nothing changed it since).
        value = ahead.state_values.get(key)
    else:
        value = cache.get(key)
    return value if isinstance(value, dict) else None


def _state_set(turn: Turn, state: dict | None) -> None:
    key = cashier_state_key(turn.bot.pk, turn.cashier.telegram_id)
    if state is None:
        cache.delete(key)
    else:
        cache.set(key, state, CASHIER_STATE_TTL)


def _cashier_get(*, project_id: int, telegram_id: int) -> Cashier | None:
    return Cashier.objects.filter(
        project_id=project_id, telegram_id=telegram_id, is_active=True
    ).first()


def cashier_handle(
    *,
    bot: Bot,
    user: BotUser,
    chat_id: int,
    event: InputEvent,
    update_id: int,
    ahead: UsersAhead | None = None,
) -> list[Action] | None:
    """The cashier menu's answer to this event, or None: not a cashier's menu event
    (the engine handles it as usual)."""
    telegram_id = user.telegram_id
    if telegram_id is None:
        return None
    wanted = (
        (event.kind == "command" and event.command == COMMAND)
        or (
            event.kind == "command"
            and event.command == "start"
            and event.payload.startswith(CARD_START_PREFIX)
        )
        or (event.kind == "callback" and event.callback_data.startswith(CALLBACK_PREFIX))
    )
    state = None
    if not wanted and event.kind in ("text", "command"):
        state = _state_get(bot.pk, telegram_id, ahead)
        if state is not None and event.kind == "command":
            # Another command: the cashier is done with the menu (and is a customer now).
            cache.delete(cashier_state_key(bot.pk, telegram_id))
            return None
        wanted = state is not None
    if not wanted:
        return None
    cashier = _cashier_get(project_id=bot.project_id, telegram_id=telegram_id)
    if cashier is None:
        if event.kind == "callback":
            return [AnswerCallback(event.callback_query_id, "This menu is for cashiers.")]
        if state is not None:
            cache.delete(cashier_state_key(bot.pk, telegram_id))
        return None  # /cashier or a card link from a customer: the workflows decide
    if cashier.bot_user_id != user.pk:
        Cashier.objects.filter(pk=cashier.pk).update(bot_user=user)
    turn = Turn(bot=bot, cashier=cashier, chat_id=chat_id, event=event, update_id=update_id)
    if event.kind == "callback":
        return [AnswerCallback(event.callback_query_id), *_pressed(turn)]
    if event.kind == "command" and event.command == COMMAND:
        return [_menu(turn)]
    if event.kind == "command":  # /start card_<code>: the cashier scanned a card
        return [_card(turn, event.payload[len(CARD_START_PREFIX) :])]
    return _typed(turn, state or {})


def _menu(turn: Turn) -> SendMessage:
    _state_set(turn, {"step": "card"})
    return turn.say(
        f"🧾 Cashier menu, {html.escape(turn.cashier.store_name)}.\n"
        "Scan the customer's card with your phone's camera, or type its code.",
        (Button("✖ Close", callback_data=f"{CALLBACK_PREFIX}close"),),
    )


def _card(turn: Turn, typed: str) -> SendMessage:
    """The customer of a card code: show them and offer what to do."""
    try:
        customer = customer_find(project_id=turn.bot.project_id, card_code=typed)
    except CardCodeInvalid as exc:
        _state_set(turn, {"step": "card"})
        return turn.say(f"That is not a card code: {html.escape(str(exc))}. Type it again.")
    if customer is None:
        _state_set(turn, {"step": "card"})
        return turn.say("No customer has this card. Check the code and type it again.")
    _state_set(turn, {"step": "action", "customer": customer.pk})
    name = html.escape(str(customer))
    level = f", {html.escape(customer.level)}" if customer.level else ""
    return turn.say(
        f"Customer: <b>{name}</b>{level}\nCard {card_code_display(customer.card_code)}\n"
        f"Balance: {customer.balance} bonuses.",
        (
            Button("🛒 Purchase", callback_data=f"{CALLBACK_PREFIX}accrue"),
            Button("🎁 Redeem", callback_data=f"{CALLBACK_PREFIX}redeem"),
        ),
        (Button("✖ Close", callback_data=f"{CALLBACK_PREFIX}close"),),
    )


def _pressed(turn: Turn) -> list[Action]:
    what = turn.event.callback_data[len(CALLBACK_PREFIX) :]
    state = _state_get(turn.bot.pk, turn.cashier.telegram_id) or {}
    if what == "close":
        _state_set(turn, None)
        return [turn.say("Cashier menu closed. /cashier opens it again.")]
    if what == "next":
        return [_menu(turn)]
    if what in ("accrue", "redeem") and state.get("customer"):
        _state_set(turn, {"step": what, "customer": state["customer"]})
        if what == "accrue":
            return [turn.say("Purchase amount? For example 24.90")]
        return [turn.say("How many bonuses does the customer spend?")]
    return [turn.say("This menu has expired."), _menu(turn)]


def _typed(turn: Turn, state: dict) -> list[Action]:
    text = turn.event.text.strip()
    step = state.get("step")
    customer_id = state.get("customer")
    if step == "card":
        return [_card(turn, text)]
    if step == "accrue" and customer_id:
        return [_accrue(turn, customer_id, text)]
    if step == "redeem" and customer_id:
        return _redeem(turn, customer_id, text)
    return [_menu(turn)]


NEXT_ROW = (
    Button("Next customer", callback_data=f"{CALLBACK_PREFIX}next"),
    Button("✖ Close", callback_data=f"{CALLBACK_PREFIX}close"),
)


def _accrue(turn: Turn, customer_id: int, text: str) -> SendMessage:
    amount = text.replace(",", ".").replace(" ", "")
    try:
        result = purchase_record(
            project_id=turn.bot.project_id,
            customer_id=customer_id,
            # The update's own id: a retried update records the same order, once.
            order_id=f"tg-{turn.bot.pk}-{turn.update_id}",
            amount=amount,
            store=turn.cashier.store_name,
            cashier_id=turn.cashier.pk,
        )
    except AmountInvalid as exc:
        return turn.say(f"That is not an amount: {html.escape(str(exc))}. Type it again.")
    except PurchaseError as exc:
        _state_set(turn, {"step": "card"})
        return turn.say(f"Not recorded: {html.escape(str(exc))}.", NEXT_ROW)
    _state_set(turn, {"step": "card"})
    purchase = result.purchase
    if result.created:  # stamp cards: workflows triggered by the "purchase" event
        transaction.on_commit(
            partial(task_named("workflows.tasks.purchase_event").delay, purchase.pk)
        )
    return turn.say(
        f"✅ Purchase of {purchase.amount} recorded: <b>{purchase.accrued}</b> bonuses "
        f"accrued. The customer's balance is {result.balance}.\n"
        "Scan or type the next card.",
        NEXT_ROW,
    )


def _redeem(turn: Turn, customer_id: int, text: str) -> list[Action]:
    try:
        amount = integer_parse(text)
    except NumberError as exc:
        return [turn.say(f"That is not a number of bonuses: it {html.escape(str(exc))}.")]
    if amount <= 0:
        return [turn.say("Type a number of bonuses above zero.")]
    customer = BotUser.objects.filter(pk=customer_id).only("telegram_id", "chat_id").first()
    if customer is None or customer.chat_id is None:
        _state_set(turn, {"step": "card"})
        return [
            turn.say(
                "This customer has no chat with the bot, so they cannot approve here.", NEXT_ROW
            )
        ]
    try:
        hold = hold_create(
            project_id=turn.bot.project_id,
            customer_id=customer_id,
            amount=amount,
            store=turn.cashier.store_name,
            cashier_id=turn.cashier.pk,
            order_id=f"tg-{turn.bot.pk}-{turn.update_id}",
            require_approval=True,  # the customer says Yes in their own chat
        )
    except HoldError as exc:
        return [turn.say(f"Not possible: {html.escape(str(exc))}.", NEXT_ROW)]
    _state_set(turn, {"step": "card"})
    return hold_approval_message(hold, cashier_chat_id=turn.chat_id)
