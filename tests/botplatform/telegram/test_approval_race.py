"""A double tap on "Yes" (two callback updates at once, on two connections) spends the
held bonuses once; a Yes racing a No ends in exactly one of the two outcomes."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from users.holds import hold_create
from users.ledger import bonus_earn
from users.models import BonusTransaction, BotUser, Cashier, EarnRule, Hold
from workflows.hold_approval import hold_approval_message

pytestmark = pytest.mark.django_db(transaction=True)

CUSTOMER, CASHIER = 770001, 770002


def _hold(bot) -> tuple[BotUser, Hold]:
    EarnRule.objects.create(project=bot.project, name="5 %", percent=Decimal(5))
    customer = BotUser.objects.create(
        project=bot.project, telegram_id=CUSTOMER, chat_id=CUSTOMER, first_name="Ann"
    )
    bonus_earn(user_id=customer.pk, amount=300, idempotency_key="w")
    cashier = Cashier.objects.create(project=bot.project, telegram_id=CASHIER, store_name="S")
    hold = hold_create(
        project_id=bot.project_id,
        customer_id=customer.pk,
        amount=200,
        cashier_id=cashier.pk,
        order_id="tg-race-1",
        require_approval=True,
    )
    hold_approval_message(hold, cashier_chat_id=CASHIER)
    return customer, hold


def _race(bot, updates: list[dict]) -> list[str]:
    rows = updates_record(bot_id=bot.pk, updates=updates)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(rows))

    def press(pk: int) -> None:
        try:
            barrier.wait()
            outcomes.append(update_run(update_pk=pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=press, args=(row.pk,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("attempt", range(3))
def test_a_double_tap_on_yes_spends_once(double, tg_bot, attempt):
    customer, hold = _hold(tg_bot)
    data = f"hold:y:{hold.pk}"
    outcomes = _race(
        tg_bot,
        [double.callback(tg_bot.token, CUSTOMER, data, message_id=5) for _ in range(2)],
    )
    assert outcomes == ["done", "done"]
    assert BonusTransaction.objects.filter(user=customer, kind="spend").count() == 1
    customer.refresh_from_db()
    hold.refresh_from_db()
    assert (customer.balance, hold.status) == (100, "confirmed")


@pytest.mark.parametrize("attempt", range(3))
def test_yes_racing_no_ends_in_one_outcome(double, tg_bot, attempt):
    customer, hold = _hold(tg_bot)
    _race(
        tg_bot,
        [
            double.callback(tg_bot.token, CUSTOMER, f"hold:y:{hold.pk}", message_id=5),
            double.callback(tg_bot.token, CUSTOMER, f"hold:n:{hold.pk}", message_id=5),
        ],
    )
    hold.refresh_from_db()
    customer.refresh_from_db()
    spends = BonusTransaction.objects.filter(user=customer, kind="spend").count()
    if hold.status == "confirmed":
        assert (spends, customer.balance, hold.declined_at) == (1, 100, None)
    else:
        assert hold.status == "released" and hold.declined_at is not None
        assert (spends, customer.balance) == (0, 300)
