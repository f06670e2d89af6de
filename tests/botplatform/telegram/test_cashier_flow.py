"""Staff mode end to end through the real Telegram path (Bot API double, journal,
dispatch, handler): a cashier scans a customer's card, records a purchase that earns
by the project's rules, and redeems bonuses the customer approves in their own chat."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from users.cards import card_code_display
from users.customers import card_code_ensure
from users.ledger import bonus_earn
from users.models import BonusTransaction, BotUser, Cashier, EarnRule, Hold, Purchase

CUSTOMER, CASHIER, STRANGER = 740001, 740002, 740003


def _run(bot, update: dict) -> None:
    rows = updates_record(bot_id=bot.pk, updates=[update])
    assert update_run(update_pk=rows[0].pk) == "done"


def _last(double, chat: int) -> dict:
    return double.messages[(chat, double.last_message[chat])]


def _buttons(message: dict) -> dict[str, str]:
    markup = message.get("reply_markup") or {}
    markup = json.loads(markup) if isinstance(markup, str) else markup
    return {
        b["text"]: b.get("callback_data", "")
        for row in markup.get("inline_keyboard", [])
        for b in row
    }


def _press(double, bot, chat: int, label: str, *, user_id: int | None = None) -> None:
    message = _last(double, chat)
    data = next(v for k, v in _buttons(message).items() if label in k)
    _run(
        bot,
        double.callback(bot.token, chat, data, message_id=message["message_id"], user_id=user_id),
    )


@pytest.fixture
def shop(double, tg_bot):
    project = tg_bot.project
    EarnRule.objects.create(project=project, name="Everyone: 5 %", percent=Decimal(5))
    customer = BotUser.objects.create(
        project=project, telegram_id=CUSTOMER, chat_id=CUSTOMER, first_name="Ann"
    )
    bonus_earn(user_id=customer.pk, amount=500, idempotency_key="welcome")
    card_code_ensure(customer)
    Cashier.objects.create(
        project=project, telegram_id=CASHIER, name="Bob", store_name="Store 5", daily_limit=1000
    )
    return tg_bot, customer


def test_a_cashier_accrues_a_purchase_from_a_scanned_card(double, shop):
    bot, customer = shop
    _run(bot, double.command(bot.token, CASHIER, "/cashier"))
    assert "Store 5" in _last(double, CASHIER)["text"]

    # The phone's camera opened the card's QR link: /start card_<code> from the cashier.
    _run(bot, double.command(bot.token, CASHIER, f"/start card_{customer.card_code}"))
    shown = _last(double, CASHIER)["text"]
    assert "Ann" in shown and "Balance: 500" in shown
    _press(double, bot, CASHIER, "Purchase")
    assert "amount" in _last(double, CASHIER)["text"]
    _run(bot, double.message(bot.token, CASHIER, "240,00"))

    assert "<b>12</b> bonuses accrued" in _last(double, CASHIER)["text"]
    purchase = Purchase.objects.get(customer=customer)
    assert (purchase.amount, purchase.accrued, purchase.store) == (Decimal("240.00"), 12, "Store 5")
    assert purchase.cashier.telegram_id == CASHIER
    assert purchase.earn_transaction.amount == 12  # in the ledger, tied to the purchase
    customer.refresh_from_db()
    assert customer.balance == 512
    assert Cashier.objects.get(telegram_id=CASHIER).bot_user.telegram_id == CASHIER


def test_a_redemption_waits_for_the_customers_yes_in_their_own_chat(double, shop):
    bot, customer = shop
    _run(bot, double.command(bot.token, CASHIER, "/cashier"))
    _run(bot, double.message(bot.token, CASHIER, card_code_display(customer.card_code)))
    _press(double, bot, CASHIER, "Redeem")
    _run(bot, double.message(bot.token, CASHIER, "200"))

    ask = _last(double, CUSTOMER)
    assert ask["text"] == "Spend <b>200</b> bonuses at Store 5?"
    assert "Asked the customer" in _last(double, CASHIER)["text"]
    hold = Hold.objects.get(customer=customer)
    assert (hold.status, hold.needs_customer_approval, hold.cashier.store_name) == (
        "held",
        True,
        "Store 5",
    )
    assert not BonusTransaction.objects.filter(user=customer, kind="spend").exists()

    # Someone else pressing the customer's button (a forged callback) changes nothing.
    data = _buttons(ask)["✅ Yes"]
    _run(bot, double.callback(bot.token, STRANGER, data, message_id=ask["message_id"]))
    hold.refresh_from_db()
    assert hold.approved_at is None

    _press(double, bot, CUSTOMER, "Yes")
    hold.refresh_from_db()
    assert hold.status == "confirmed"
    spend = BonusTransaction.objects.get(user=customer, kind="spend")
    assert (spend.amount, spend.reason) == (
        -200,
        "Redeemed at Store 5 (order " + hold.order_id + ")",
    )
    assert double.messages[(CUSTOMER, ask["message_id"])]["text"].startswith(
        "✅ You spent 200 bonuses at Store 5. Your balance: 300."
    )
    assert _last(double, CASHIER)["text"] == "✅ The customer approved: 200 bonuses redeemed."

    # A second press (a double tap) spends nothing more.
    _run(bot, double.callback(bot.token, CUSTOMER, data, message_id=ask["message_id"]))
    assert BonusTransaction.objects.filter(user=customer, kind="spend").count() == 1
    customer.refresh_from_db()
    assert customer.balance == 300


def test_a_declined_redemption_spends_nothing_and_tells_the_cashier(double, shop):
    bot, customer = shop
    _run(bot, double.command(bot.token, CASHIER, f"/start card_{customer.card_code}"))
    _press(double, bot, CASHIER, "Redeem")
    _run(bot, double.message(bot.token, CASHIER, "100"))
    _press(double, bot, CUSTOMER, "No")
    hold = Hold.objects.get(customer=customer)
    assert hold.status == "released" and hold.declined_at is not None
    assert not BonusTransaction.objects.filter(user=customer, kind="spend").exists()
    assert "declined" in _last(double, CASHIER)["text"]


def test_the_daily_limit_of_a_cashier_is_kept(double, shop):
    bot, customer = shop
    Cashier.objects.filter(telegram_id=CASHIER).update(daily_limit=50)
    _run(bot, double.command(bot.token, CASHIER, f"/start card_{customer.card_code}"))
    _press(double, bot, CASHIER, "Purchase")
    _run(bot, double.message(bot.token, CASHIER, "2000"))  # would earn 100
    assert "daily limit" in _last(double, CASHIER)["text"]
    assert not Purchase.objects.exists()


def test_typos_are_answered_and_nothing_is_written(double, shop):
    bot, customer = shop
    _run(bot, double.command(bot.token, CASHIER, "/cashier"))
    _run(bot, double.message(bot.token, CASHIER, "12345"))
    assert "not a card code" in _last(double, CASHIER)["text"]
    _run(bot, double.message(bot.token, CASHIER, "0000 0000 0000"))
    assert "No customer has this card" in _last(double, CASHIER)["text"]
    _run(bot, double.message(bot.token, CASHIER, customer.card_code))
    _press(double, bot, CASHIER, "Purchase")
    _run(bot, double.message(bot.token, CASHIER, "ten"))
    assert "not an amount" in _last(double, CASHIER)["text"]
    assert not Purchase.objects.exists()


def test_only_cashiers_get_the_menu(double, shop):
    bot, _customer = shop
    _run(bot, double.command(bot.token, CUSTOMER, "/cashier"))
    texts = double.sent_texts(bot.token, CUSTOMER)
    assert not any("Cashier menu" in text for text in texts)
    # A customer pressing a stale cashier button is told it is not for them.
    _run(bot, double.callback(bot.token, CUSTOMER, "till:accrue"))
    answers = double.calls_of("answerCallbackQuery", bot.token)
    assert answers[-1].params.get("text") == "This menu is for cashiers."
    Cashier.objects.filter(telegram_id=CASHIER).update(is_active=False)
    _run(bot, double.command(bot.token, CASHIER, "/cashier"))
    assert not any("Cashier menu" in text for text in double.sent_texts(bot.token, CASHIER))


def test_a_till_hold_is_approved_in_telegram_and_confirmed_by_the_till(
    double, shop, django_capture_on_commit_callbacks
):
    from users.holds import hold_confirm, hold_create

    bot, customer = shop
    bot.project.hold_approval_required = True
    bot.project.save(update_fields=["hold_approval_required"])
    with django_capture_on_commit_callbacks(execute=True):
        hold = hold_create(
            project_id=bot.project_id, customer_id=customer.pk, amount=150, store="Web shop"
        )
    assert _last(double, CUSTOMER)["text"] == "Spend <b>150</b> bonuses at Web shop?"
    _press(double, bot, CUSTOMER, "Yes")
    hold.refresh_from_db()
    assert hold.status == "held" and hold.approved_at is not None  # the till confirms
    assert "The till completes the payment" in _last(double, CUSTOMER)["text"]
    hold_confirm(hold_id=hold.pk, project_id=bot.project_id)
    customer.refresh_from_db()
    assert customer.balance == 350


def test_a_confirmed_purchase_earns_a_stamp_and_customers_cannot_stamp_themselves(
    double, shop, django_capture_on_commit_callbacks
):
    from tests.workflows.conftest import publish
    from users.models import UserVariable

    bot, customer = shop
    stamp = {
        "start": "add",
        "steps": {
            "add": {
                "type": "set_variable",
                "variable": "stamps",
                "operation": "increment",
                "value": 1,
                "next": "tell",
            },
            "tell": {"type": "message", "text": "Stamp {{ vars.stamps }} of 10!"},
        },
    }
    publish(bot.project, stamp, triggers=[{"type": "event", "name": "purchase"}])
    _run(bot, double.command(bot.token, CUSTOMER, "/stamp"))  # no command adds a stamp
    assert not UserVariable.objects.filter(user=customer, key="stamps").exists()

    _run(bot, double.command(bot.token, CASHIER, f"/start card_{customer.card_code}"))
    _press(double, bot, CASHIER, "Purchase")
    with django_capture_on_commit_callbacks(execute=True):
        _run(bot, double.message(bot.token, CASHIER, "30"))
    assert UserVariable.objects.get(user=customer, key="stamps").value == 1
    assert _last(double, CUSTOMER)["text"] == "Stamp 1 of 10!"


def test_another_command_closes_the_menu(double, shop):
    bot, customer = shop
    _run(bot, double.command(bot.token, CASHIER, "/cashier"))
    _run(bot, double.command(bot.token, CASHIER, "/help"))
    _run(bot, double.message(bot.token, CASHIER, customer.card_code))
    assert not any("Customer:" in text for text in double.sent_texts(bot.token, CASHIER))


def test_on_the_polling_path_the_menu_state_is_read_with_the_wave(double, shop, monkeypatch):
    from botplatform.telegram.batch import updates_run_batch
    from workflows import cashier

    bot, customer = shop
    _run(bot, double.command(bot.token, CASHIER, "/cashier"))
    # A customer is known to the wave too: their text is checked the same way.
    _run(bot, double.command(bot.token, CUSTOMER, "/hello"))

    original = cashier.cache.get

    def no_single_reads(key, *args, **kwargs):
        assert not key.startswith("cashier:"), f"{key} read on its own, not with the wave"
        return original(key, *args, **kwargs)

    monkeypatch.setattr(cashier.cache, "get", no_single_reads)
    rows = updates_record(
        bot_id=bot.pk,
        updates=[
            double.message(bot.token, CASHIER, customer.card_code),
            double.message(bot.token, CUSTOMER, "hi"),
        ],
    )
    result = updates_run_batch(bot_id=bot.pk, rows=rows)
    assert result.handled == 2 and result.leftovers == []
    assert "Balance: 500 bonuses" in _last(double, CASHIER)["text"]
