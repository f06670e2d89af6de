"""Customers across the till and Telegram: phone linking merges a till customer into
the Telegram user; card codes; events in start workflows with their payload."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from tests.api.helpers import api_for, customer, project_with_rules
from tests.factories import bot_create, workflow_create
from users.customers import (
    PhoneTaken,
    card_code_ensure,
    card_code_rotate,
    customer_create,
    customer_find,
    customer_link_phone,
)
from users.models import BonusTransaction, BotUser
from users.models_pos import ApiKey, Hold, Purchase
from users.purchases import CashierLimitExceeded, purchase_record

pytestmark = pytest.mark.django_db


def test_a_till_customer_is_merged_when_the_telegram_user_shares_that_phone():
    project = project_with_rules()
    api = api_for(project)
    till = api.post("customers", {"phone": "+4915112345678", "first_name": "Ann"}).json()
    api.post("purchases", {"customer_id": till["id"], "order_id": "T1", "amount": "2000"})
    open_hold = api.post("holds", {"customer_id": till["id"], "amount": 30}).json()
    telegram = customer(project, balance=10, first_name="")
    link = customer_link_phone(user=telegram, phone="4915112345678")
    assert link.merged_from == till["id"]
    telegram.refresh_from_db()
    assert telegram.phone == "+4915112345678"
    assert telegram.balance == 110 and telegram.lifetime_earned == 110
    assert telegram.first_name == "Ann"
    source = BotUser.objects.get(pk=till["id"])
    assert source.merged_into_id == telegram.pk and source.balance == 0 and source.phone == ""
    assert Purchase.objects.get(order_id="T1").customer_id == telegram.pk
    assert Hold.objects.get(pk=open_hold["id"]).customer_id == telegram.pk
    kinds = BonusTransaction.objects.filter(kind="merge").values_list("user_id", "amount")
    assert sorted(kinds) == sorted([(till["id"], -100), (telegram.pk, 100)])
    # The till's old id and the phone now answer the Telegram user.
    assert api.get(f"customers/{till['id']}").json()["id"] == telegram.pk
    assert api.get("customers", {"phone": "+4915112345678"}).json()["id"] == telegram.pk
    # A refund of the till-time purchase claws back from the merged balance.
    refund = api.post("refunds", {"order_id": "T1", "refund_id": "x"}).json()
    assert refund["taken"] == 100 and refund["balance"] == 10


def test_a_phone_of_another_telegram_user_is_refused():
    project = project_with_rules()
    customer(project, phone="+4915112345678")
    with pytest.raises(PhoneTaken):
        customer_link_phone(user=customer(project), phone="+4915112345678")


def test_customer_create_twice_answers_the_same_customer():
    project = project_with_rules()
    first, created = customer_create(project_id=project.pk, phone="+4915112345678")
    again, created_again = customer_create(project_id=project.pk, phone="+49 1511 2345678")
    assert created and not created_again and first.pk == again.pk


def test_card_codes_are_made_once_and_rotate():
    project = project_with_rules()
    user = customer(project)
    code = card_code_ensure(user)
    assert card_code_ensure(user) == code and len(code) == 12
    new = card_code_rotate(user)
    assert new != code
    assert customer_find(project_id=project.pk, card_code=code) is None
    assert customer_find(project_id=project.pk, card_code=new).pk == user.pk
    assert BotUser.objects.get(pk=user.pk).card_code == new


def test_a_cashiers_daily_limit_stops_accruals():
    from users.models_pos import Cashier

    project = project_with_rules()
    cashier = Cashier.objects.create(
        project=project, telegram_id=42, store_name="Store 5", daily_limit=60
    )
    user = customer(project)
    first = purchase_record(
        project_id=project.pk,
        customer_id=user.pk,
        order_id="C1",
        amount="1000",
        cashier_id=cashier.pk,
    )
    assert first.purchase.accrued == 50 and first.purchase.store == "Store 5"
    with pytest.raises(CashierLimitExceeded):
        purchase_record(
            project_id=project.pk,
            customer_id=user.pk,
            order_id="C2",
            amount="1000",
            cashier_id=cashier.pk,
        )
    assert "Store 5" in BonusTransaction.objects.get(user=user, kind="earn").reason


def test_earn_rules_levels_caps_and_promos():
    from datetime import date, timedelta
    from decimal import Decimal

    from users.models_pos import EarnRule

    project = project_with_rules()  # 5 % for everyone
    EarnRule.objects.create(
        project=project,
        name="Gold",
        level="Gold",
        percent=Decimal(10),
        min_purchase_amount=Decimal(50),
        max_per_purchase=40,
        max_per_day=60,
    )
    today = date.today()
    EarnRule.objects.create(
        project=project,
        name="Double",
        kind="promo",
        multiplier=Decimal(2),
        starts_on=today - timedelta(days=1),
        ends_on=today + timedelta(days=1),
    )
    EarnRule.objects.create(
        project=project,
        name="Old triple",
        kind="promo",
        multiplier=Decimal(3),
        starts_on=today - timedelta(days=9),
        ends_on=today - timedelta(days=2),
    )
    bronze, gold = customer(project), customer(project, balance=5000)  # levels by earnings
    assert gold.level == "Gold"
    bronze_id, gold_id = bronze.pk, gold.pk

    def earn(user_id, order, amount):
        return purchase_record(
            project_id=project.pk, customer_id=user_id, order_id=order, amount=amount
        ).purchase.accrued

    assert earn(bronze_id, "b1", "100") == 10  # 5 % doubled
    assert earn(gold_id, "g0", "49.99") == 0  # below Gold's minimum
    assert earn(gold_id, "g1", "150") == 30  # 10 % doubled
    assert earn(gold_id, "g2", "1000") == 30  # per purchase 40, but 60 a day: 30 left
    assert earn(gold_id, "g3", "1000") == 0


def test_createapikey_prints_the_key_once(capsys):
    project = project_with_rules(slug="shop")
    call_command("createapikey", "--project", "shop", "--scopes", "read,accrue", "--name", "Till 1")
    key = capsys.readouterr().out.strip()
    stored = ApiKey.objects.get(project=project)
    assert key.startswith(stored.prefix) and stored.scopes == ["accrue", "read"]
    assert key not in (stored.key_hash, stored.prefix)
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("createapikey", "--project", "shop", "--scopes", "write")
    with pytest.raises(CommandError):
        call_command("createapikey", "--project", "nope", "--scopes", "read")


def test_an_event_starts_its_workflow_with_the_payload_in_templates(
    delivery_to, django_capture_on_commit_callbacks
):
    project = project_with_rules()
    bot = bot_create(project=project)
    workflow = workflow_create(
        project=project,
        definition={
            "start": "tell",
            "steps": {
                "tell": {
                    "type": "message",
                    "text": "Shipped! Track it: {{ event.tracking_url }} ({{ event.name }})",
                }
            },
        },
        triggers=[{"type": "event", "name": "order_shipped"}],
    )
    version = workflow.published_version
    version.triggers = [{"type": "event", "name": "order_shipped"}]
    version.save()
    sent = []
    delivery_to(lambda *, bot_id, chat_id, actions: sent.append((bot_id, chat_id, actions)))
    user = customer(project)
    api = api_for(project, "events")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"customers/{user.pk}/events",
            {"name": "order_shipped", "payload": {"tracking_url": "https://t.example/1"}},
        )
    assert response.status_code == 202 and response.json()["started"] is True
    assert response.json()["name"] == "order_shipped"
    unknown = api.post(f"customers/{user.pk}/events", {"name": "nothing_listens"})
    assert unknown.json()["started"] is False
    assert api.post(f"customers/{user.pk}/events", {"name": "Bad Name"}).status_code == 400
    till, _ = customer_create(project_id=project.pk, phone="+4915112345678")
    assert (
        api.post(f"customers/{till.pk}/events", {"name": "x"}).json()["code"] == "not_in_telegram"
    )
    ((bot_id, chat_id, actions),) = sent  # sent after commit, once
    assert (bot_id, chat_id) == (bot.pk, user.chat_id)
    assert actions[0].text == "Shipped! Track it: https://t.example/1 (order_shipped)"


def test_a_cashiers_redemption_always_asks_the_customer():
    from users.holds import hold_create
    from users.models_pos import Cashier

    project = project_with_rules()  # the project itself does not ask
    cashier = Cashier.objects.create(project=project, telegram_id=7, store_name="Store 5")
    user = customer(project, balance=100)
    by_cashier = hold_create(
        project_id=project.pk, customer_id=user.pk, amount=10, cashier_id=cashier.pk
    )
    by_api = hold_create(project_id=project.pk, customer_id=user.pk, amount=10)
    assert by_cashier.needs_customer_approval and by_cashier.store == "Store 5"
    assert not by_api.needs_customer_approval
    till_customer, _ = customer_create(project_id=project.pk, phone="+4915112345678")
    from users.ledger import bonus_earn

    bonus_earn(user_id=till_customer.pk, amount=50, idempotency_key="seed-till")
    no_telegram = hold_create(
        project_id=project.pk, customer_id=till_customer.pk, amount=10, cashier_id=cashier.pk
    )
    assert not no_telegram.needs_customer_approval


def test_old_idempotency_records_are_pruned():
    from datetime import timedelta

    from django.utils import timezone

    from users.models_pos import ApiIdempotency
    from users.tasks import api_idempotency_prune

    project = project_with_rules()
    api_for(project)
    key = ApiKey.objects.get(project=project)
    old = ApiIdempotency.objects.create(api_key=key, key="old", request_hash="x")
    ApiIdempotency.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    ApiIdempotency.objects.create(api_key=key, key="new", request_hash="x")
    assert api_idempotency_prune() == 1
    assert list(ApiIdempotency.objects.values_list("key", flat=True)) == ["new"]


def test_each_recorded_purchase_sends_the_purchase_event_once(
    delivery_to, django_capture_on_commit_callbacks
):
    """A stamp card: stamps follow real purchases, and a retried order adds none."""
    project = project_with_rules()
    bot_create(project=project)
    workflow = workflow_create(
        project=project,
        definition={
            "start": "stamp",
            "steps": {"stamp": {"type": "message", "text": "Stamp for {{ event.order_id }}"}},
        },
    )
    version = workflow.published_version
    version.triggers = [{"type": "event", "name": "purchase"}]
    version.save()
    sent = []
    delivery_to(lambda *, bot_id, chat_id, actions: sent.append(actions[0].text))
    user = customer(project)
    api = api_for(project)
    body = {"customer_id": user.pk, "order_id": "S-1", "amount": "10"}
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post("purchases", body).status_code == 201
        assert api.post("purchases", body).status_code == 200
    assert sent == ["Stamp for S-1"]
