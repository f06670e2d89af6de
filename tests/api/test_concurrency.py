"""The API under real concurrency: threads, each with its own database connection,
through the whole HTTP stack (authentication, idempotency, services, ledger)."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Sum

from tests.api.helpers import api_for, customer, project_with_rules
from tests.users.helpers import run_in_threads
from users.models import BonusTransaction, BotUser
from users.models_pos import Hold, Purchase, Refund

pytestmark = pytest.mark.django_db(transaction=True)


def _ledger_matches_balance(user_id: int) -> int:
    balance = BotUser.objects.values_list("balance", flat=True).get(pk=user_id)
    total = BonusTransaction.objects.filter(user_id=user_id).aggregate(s=Sum("amount"))["s"] or 0
    assert total == balance >= 0
    running = 0
    for entry in BonusTransaction.objects.filter(user_id=user_id).order_by("id"):
        running += entry.amount
        assert entry.balance_after == running >= 0
    return balance


def test_50_concurrent_purchases_of_one_order_earn_once():
    project = project_with_rules()
    user = customer(project)
    key = api_for(project).key
    body = {"customer_id": user.pk, "order_id": "ORDER-50", "amount": "200.00"}

    def post(_i):
        from tests.api.helpers import Api

        response = Api(key).post("purchases", body)
        return response.status_code, response.json().get("id")

    results = run_in_threads(post, 50)
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 1, 200: 49}, results
    assert len({pid for _, pid in results}) == 1
    assert Purchase.objects.filter(order_id="ORDER-50").count() == 1
    assert BonusTransaction.objects.filter(user=user, kind="earn").count() == 1
    assert _ledger_matches_balance(user.pk) == 10


def test_50_concurrent_retries_with_one_idempotency_key_apply_once():
    project = project_with_rules()
    user = customer(project, balance=1000)
    key = api_for(project).key
    body = {"customer_id": user.pk, "amount": 7}

    def post(_i):
        from tests.api.helpers import Api

        response = Api(key).post("holds", body, idem="one-key")
        return response.status_code, response.json()

    results = run_in_threads(post, 50)
    created = [body for status, body in results if status == 201]
    others = {body["code"] for status, body in results if status != 201}
    assert len({hold["id"] for hold in created}) == 1, results
    assert others <= {"idempotency_in_progress"}
    assert Hold.objects.filter(customer=user).count() == 1


def test_concurrent_holds_never_promise_more_than_the_balance():
    project = project_with_rules()
    user = customer(project, balance=100)
    key = api_for(project).key

    def hold(_i):
        from tests.api.helpers import Api

        return Api(key).post("holds", {"customer_id": user.pk, "amount": 10}).status_code

    statuses = Counter(run_in_threads(hold, 30))
    assert statuses == {201: 10, 409: 20}, statuses
    assert Hold.objects.filter(customer=user, status="held").aggregate(s=Sum("amount"))["s"] == 100


def test_concurrent_confirms_and_releases_never_overdraw():
    from users.ledger import bonus_spend

    project = project_with_rules()
    user = customer(project, balance=100)
    key = api_for(project).key
    from tests.api.helpers import Api

    api = Api(key)
    holds = [
        api.post("holds", {"customer_id": user.pk, "amount": 20}).json()["id"] for _ in range(5)
    ]
    # The bot spends 50 meanwhile (a hold is a promise, not a reservation in the ledger):
    # some confirms must then answer "insufficient" instead of overdrawing.
    bonus_spend(user_id=user.pk, amount=50, idempotency_key="bot-spend")

    def act(i):
        from tests.api.helpers import Api

        hold_id = holds[i % 5]
        action = "confirm" if i < 10 else "release"
        response = Api(key).post(f"holds/{hold_id}/{action}")
        return response.status_code, response.json().get("code") or response.json()["status"]

    results = run_in_threads(act, 15)
    assert all(status in (200, 409) for status, _ in results), results
    balance = _ledger_matches_balance(user.pk)
    confirmed = Hold.objects.filter(customer=user, status="confirmed").count()
    assert balance == 50 - 20 * confirmed
    assert confirmed <= 2
    assert BonusTransaction.objects.filter(user=user, kind="spend").count() == confirmed + 1


def test_a_refund_racing_a_redemption_keeps_the_ledger_consistent():
    project = project_with_rules()
    key = api_for(project).key
    from tests.api.helpers import Api

    api = Api(key)
    for round_ in range(5):
        user = customer(project)
        api.post("purchases", {"customer_id": user.pk, "order_id": f"R{round_}", "amount": "1000"})
        hold = api.post("holds", {"customer_id": user.pk, "amount": 40}).json()["id"]

        def act(i, hold=hold, round_=round_):
            from tests.api.helpers import Api

            if i == 0:
                return Api(key).post(f"holds/{hold}/confirm").status_code
            return (
                Api(key)
                .post("refunds", {"order_id": f"R{round_}", "refund_id": "full"})
                .status_code
            )

        results = run_in_threads(act, 2)
        assert results[1] == 201 and results[0] in (200, 409), results
        balance = _ledger_matches_balance(user.pk)
        refund = Refund.objects.get(purchase__order_id=f"R{round_}")
        spent = 40 if Hold.objects.get(pk=hold).status == "confirmed" else 0
        assert refund.taken + refund.shortfall == 50
        assert balance == 50 - spent - refund.taken
