"""Level moves: recorded once, with the operation that causes them, and announced once.

A move is a ``LevelChange`` row written in the ledger entry's savepoint (key
``ledger:<entry id>``) or in a customer merge (``merge:<source id>``); the
``customer.level_changed`` webhook event is written beside it, nowhere else.
"""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import transaction

from tests.api.helpers import customer, project_with_rules
from tests.factories import bot_user_create, project_create
from tests.users.helpers import run_in_threads
from users.customers import customer_create, customer_merge
from users.ledger import bonus_adjust, bonus_earn, bonus_spend
from users.models import BonusTransaction, BotUser, LevelChange
from users.models_pos import WebhookDelivery, WebhookEndpoint
from users.purchases import purchase_record


def _moves(user_id: int) -> list[tuple[str, str, str]]:
    return list(
        LevelChange.objects.filter(user_id=user_id)
        .order_by("id")
        .values_list("from_level", "to_level", "idempotency_key")
    )


def _subscribed(project) -> None:
    WebhookEndpoint.objects.create(
        project=project,
        url="https://example.com/hook",
        secret="s",
        events=["customer.level_changed", "bonus.accrued"],
    )


def _announced(project) -> list[dict]:
    return [
        d.payload["data"]
        for d in WebhookDelivery.objects.filter(
            endpoint__project=project, event="customer.level_changed"
        ).order_by("id")
    ]


@pytest.mark.django_db
def test_an_earn_that_crosses_a_threshold_records_one_move_and_a_replay_none():
    project = project_create()
    _subscribed(project)
    user = bot_user_create(project=project, level="Bronze")
    bonus_earn(user_id=user.pk, amount=900, idempotency_key="a")
    assert _moves(user.pk) == []  # 900 < 1000: still Bronze
    result = bonus_earn(user_id=user.pk, amount=200, idempotency_key="b")
    assert result.new_level == "Silver"
    entry = BonusTransaction.objects.get(idempotency_key="b")
    assert _moves(user.pk) == [("Bronze", "Silver", f"ledger:{entry.pk}")]
    change = LevelChange.objects.get(user=user)
    assert change.at == entry.created_at and change.ledger_entry_id == entry.pk
    replay = bonus_earn(user_id=user.pk, amount=200, idempotency_key="b")
    assert replay.replayed and replay.new_level is None
    assert len(_moves(user.pk)) == 1
    assert _announced(project) == [{"customer_id": user.pk, "level": "Silver", "from": "Bronze"}]
    # Spends and operators' adjustments never move a level.
    bonus_spend(user_id=user.pk, amount=100, idempotency_key="c")
    bonus_adjust(user_id=user.pk, amount=9000, reason="gift", created_by=None)
    assert len(_moves(user.pk)) == 1
    # Two thresholds in one earn: one move, straight to Gold.
    bonus_earn(user_id=user.pk, amount=5000, idempotency_key="d")
    assert [m[:2] for m in _moves(user.pk)] == [("Bronze", "Silver"), ("Silver", "Gold")]


@pytest.mark.django_db
def test_a_simulator_test_users_move_is_kept_but_not_announced():
    project = project_create()
    _subscribed(project)
    tester = bot_user_create(project=project, level="Bronze", is_test=True)
    bonus_earn(user_id=tester.pk, amount=1500, idempotency_key="t")
    assert [m[:2] for m in _moves(tester.pk)] == [("Bronze", "Silver")]
    assert _announced(project) == []


@pytest.mark.django_db
def test_a_rolled_back_operation_records_no_move_and_sends_nothing():
    project = project_create()
    _subscribed(project)
    user = bot_user_create(project=project, level="Bronze")

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        bonus_earn(user_id=user.pk, amount=1500, idempotency_key="x")
        assert len(_moves(user.pk)) == 1  # inside: written with the entry
        raise Abort
    assert _moves(user.pk) == [] and _announced(project) == []
    assert BotUser.objects.get(pk=user.pk).level == "Bronze"


@pytest.mark.django_db(transaction=True)
def test_the_same_earn_retried_from_many_threads_records_the_move_once():
    project = project_create()
    _subscribed(project)
    user = bot_user_create(project=project, level="Bronze")
    results = run_in_threads(
        lambda i: bonus_earn(user_id=user.pk, amount=1200, idempotency_key="same"), 12
    )
    assert all(getattr(r, "status", None) == "ok" for r in results), results
    assert sum(not r.replayed for r in results) == 1
    assert Counter(r.new_level for r in results) == Counter({None: 11, "Silver": 1})
    assert [m[:2] for m in _moves(user.pk)] == [("Bronze", "Silver")]
    assert len(_announced(project)) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_earns_that_together_cross_a_threshold_record_exactly_one_move():
    project = project_create()
    user = bot_user_create(project=project, level="Bronze")
    bonus_earn(user_id=user.pk, amount=950, idempotency_key="seed")
    results = run_in_threads(
        lambda i: bonus_earn(user_id=user.pk, amount=10, idempotency_key=f"k{i}"), 10
    )
    assert all(getattr(r, "status", None) == "ok" for r in results), results
    assert BotUser.objects.get(pk=user.pk).lifetime_earned == 1050
    moves = _moves(user.pk)
    assert [m[:2] for m in moves] == [("Bronze", "Silver")]
    # The move belongs to the entry that crossed 1000: its balance_after is 1000.
    entry = BonusTransaction.objects.get(pk=int(moves[0][2].split(":")[1]))
    assert entry.balance_after == 1000
    assert [r.new_level for r in results].count("Silver") == 1


@pytest.mark.django_db
def test_a_merge_that_lifts_the_target_records_one_move_keyed_by_the_source():
    project = project_with_rules()
    _subscribed(project)
    till, _ = customer_create(project_id=project.pk, phone="+4915112345678")
    bonus_earn(user_id=till.pk, amount=1500, idempotency_key="till")
    telegram = customer(project, balance=10)
    before = len(_announced(project))
    customer_merge(source_id=till.pk, target_id=telegram.pk)
    customer_merge(source_id=till.pk, target_id=telegram.pk)  # idempotent
    assert _moves(telegram.pk) == [("Bronze", "Silver", f"merge:{till.pk}")]
    assert LevelChange.objects.get(user=telegram).cause == "merge"
    assert BotUser.objects.get(pk=telegram.pk).level == "Silver"
    assert _announced(project)[before:] == [
        {"customer_id": telegram.pk, "level": "Silver", "from": "Bronze"}
    ]


@pytest.mark.django_db
def test_a_purchase_that_lifts_the_customer_announces_the_move_once():
    project = project_with_rules()  # 5 % of the amount
    _subscribed(project)
    user = customer(project)
    result = purchase_record(
        project_id=project.pk, customer_id=user.pk, order_id="P1", amount="30000"
    )
    assert result.new_level == "Silver"
    assert _announced(project) == [{"customer_id": user.pk, "level": "Silver", "from": "Bronze"}]
    assert [m[:2] for m in _moves(user.pk)] == [("Bronze", "Silver")]


@pytest.mark.django_db
def test_the_member_page_shows_the_level_history_read_only(admin_client):
    project = project_create()
    user = bot_user_create(project=project, level="Bronze")
    bonus_earn(user_id=user.pk, amount=1200, idempotency_key="up")
    response = admin_client.get(f"/admin/users/botuser/{user.pk}/change/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Level history" in body
    assert "Silver" in body and "Bronze" in body
    assert 'name="level_changes-0-to_level"' not in body  # not editable
