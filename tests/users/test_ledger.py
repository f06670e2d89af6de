"""The bonus ledger: earn, spend, adjust, idempotency, levels, validation."""

from __future__ import annotations

import pytest
import redis
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from botplatform import locks
from botplatform.locks import redis_lock
from tests.factories import bot_user_create, project_create
from tests.users.helpers import redis_round_trips, spend_lock_held_elsewhere
from users import ledger
from users.ledger import (
    MAX_AMOUNT,
    BonusCapExceeded,
    BonusResult,
    IdempotencyKeyConflict,
    bonus_adjust,
    bonus_earn,
    bonus_spend,
    bonus_spend_for_purchase,
)
from users.models import BonusTransaction, BotUser
from users.selectors import bonus_history_get


@pytest.fixture(params=["one_statement", "redis_lock"])
def spend_path(request, monkeypatch) -> str:
    """Both ways a spend runs: PostgreSQL's one statement, and the Redis-locked general
    path that other databases take (forced here, on PostgreSQL)."""
    if request.param == "redis_lock":
        monkeypatch.setattr(ledger, "spends_in_one_statement", lambda: False)
    return request.param


def spend_lock_held(spend_path: str, user_id: int):
    """Hold the lock that makes a spend of ``user_id`` answer "in_progress" on that path."""
    if spend_path == "redis_lock":
        return redis_lock("user", f"{user_id}:spend")
    return spend_lock_held_elsewhere(user_id)


def ledger_sum(user_id: int) -> int:
    return BonusTransaction.objects.filter(user_id=user_id).aggregate(s=Sum("amount"))["s"] or 0


def balance_of(user_id: int) -> int:
    return BotUser.objects.values_list("balance", flat=True).get(pk=user_id)


def test_earn_then_spend_writes_entries_and_balance(bot_user, spend_path):
    earned = bonus_earn(user_id=bot_user.pk, amount=300, idempotency_key="e1", reason="order 1")
    assert earned.status == "ok" and earned.balance == 300 and not earned.replayed
    spent = bonus_spend(user_id=bot_user.pk, amount=120, idempotency_key="s1", reason="coffee")
    assert spent == BonusResult(status="ok", balance=180, transaction_id=spent.transaction_id)

    entries = list(BonusTransaction.objects.filter(user=bot_user).order_by("id"))
    assert [(e.kind, e.amount, e.balance_after, e.reason) for e in entries] == [
        ("earn", 300, 300, "order 1"),
        ("spend", -120, 180, "coffee"),
    ]
    bot_user.refresh_from_db()
    assert (bot_user.balance, bot_user.lifetime_earned) == (180, 300)
    assert ledger_sum(bot_user.pk) == 180


def test_insufficient_spend_writes_nothing(bot_user, spend_path):
    bonus_earn(user_id=bot_user.pk, amount=50, idempotency_key="e")
    result = bonus_spend(user_id=bot_user.pk, amount=51, idempotency_key="s")
    assert result == BonusResult(status="insufficient", balance=50, transaction_id=None)
    assert BonusTransaction.objects.filter(user=bot_user).count() == 1
    assert balance_of(bot_user.pk) == 50
    # Nothing was applied, so the same key may succeed once there are funds.
    bonus_earn(user_id=bot_user.pk, amount=1, idempotency_key="e2")
    assert bonus_spend(user_id=bot_user.pk, amount=51, idempotency_key="s").status == "ok"
    assert balance_of(bot_user.pk) == 0


def test_retry_with_same_key_is_applied_once_and_answers_first_result(bot_user, spend_path):
    first = bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="bot1:update42")
    bonus_earn(user_id=bot_user.pk, amount=5, idempotency_key="other")
    again = bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="bot1:update42")
    assert again.replayed and again.status == "ok"
    assert (again.balance, again.transaction_id) == (first.balance, first.transaction_id)

    spend = bonus_spend(user_id=bot_user.pk, amount=30, idempotency_key="tap:7")
    spend_again = bonus_spend(user_id=bot_user.pk, amount=30, idempotency_key="tap:7")
    assert spend_again.replayed
    assert (spend_again.balance, spend_again.transaction_id) == (75, spend.transaction_id)
    assert balance_of(bot_user.pk) == 75
    assert BonusTransaction.objects.filter(user=bot_user).count() == 3


def test_same_key_for_a_different_operation_is_a_clear_error(project):
    alice = bot_user_create(project=project)
    bob = bot_user_create(project=project)
    bonus_earn(user_id=alice.pk, amount=10, idempotency_key="k")
    with pytest.raises(IdempotencyKeyConflict, match="already used"):
        bonus_earn(user_id=bob.pk, amount=10, idempotency_key="k")
    with pytest.raises(IdempotencyKeyConflict):
        bonus_earn(user_id=alice.pk, amount=11, idempotency_key="k")
    assert balance_of(bob.pk) == 0 and balance_of(alice.pk) == 10


def test_keys_are_scoped_per_project(db):
    one = bot_user_create(project=project_create())
    two = bot_user_create(project=project_create())
    assert not bonus_earn(user_id=one.pk, amount=10, idempotency_key="same").replayed
    assert not bonus_earn(user_id=two.pk, amount=10, idempotency_key="same").replayed


def test_levels_follow_lifetime_earnings_and_report_the_move(project):
    project.levels = [
        {"name": "Bronze", "threshold": 0},
        {"name": "Gold", "threshold": 500},
        {"name": "Silver", "threshold": 100},
    ]
    project.save(update_fields=["levels"])
    user = bot_user_create(project=project)
    assert bonus_earn(user_id=user.pk, amount=50, idempotency_key="a").new_level == "Bronze"
    assert bonus_earn(user_id=user.pk, amount=10, idempotency_key="b").new_level is None
    assert bonus_earn(user_id=user.pk, amount=40, idempotency_key="c").new_level == "Silver"
    # Spending does not lower a level: it follows lifetime earnings.
    assert bonus_spend(user_id=user.pk, amount=100, idempotency_key="d").new_level is None
    result = bonus_earn(user_id=user.pk, amount=400, idempotency_key="e", kind="referral")
    assert result.new_level == "Gold"
    assert bonus_earn(user_id=user.pk, amount=400, idempotency_key="e", kind="referral") == (
        BonusResult(status="ok", balance=400, transaction_id=result.transaction_id, replayed=True)
    )
    user.refresh_from_db()
    assert (user.level, user.lifetime_earned, user.balance) == ("Gold", 500, 400)


def test_malformed_levels_do_not_break_earning(project):
    project.levels = [{"name": "Ok", "threshold": 10}, "junk", {"name": 3}, {"threshold": "x"}]
    project.save(update_fields=["levels"])
    user = bot_user_create(project=project)
    assert bonus_earn(user_id=user.pk, amount=20, idempotency_key="a").new_level == "Ok"


def test_adjust_needs_a_reason_and_records_the_operator(bot_user, django_user_model):
    operator = django_user_model.objects.create_user("op", password="x")
    with pytest.raises(ValueError, match="reason"):
        bonus_adjust(user_id=bot_user.pk, amount=10, reason="  ", created_by=operator)
    added = bonus_adjust(user_id=bot_user.pk, amount=70, reason="goodwill", created_by=operator)
    taken = bonus_adjust(user_id=bot_user.pk, amount=-20, reason="mistake", created_by=operator)
    assert (added.balance, taken.balance) == (70, 50)
    too_much = bonus_adjust(user_id=bot_user.pk, amount=-51, reason="x", created_by=operator)
    assert too_much.status == "insufficient" and too_much.balance == 50
    entries = BonusTransaction.objects.filter(user=bot_user, kind="adjust").order_by("id")
    assert [(e.amount, e.reason, e.created_by_id) for e in entries] == [
        (70, "goodwill", operator.pk),
        (-20, "mistake", operator.pk),
    ]
    bot_user.refresh_from_db()
    assert bot_user.lifetime_earned == 0  # adjustments are not earnings
    again = bonus_adjust(
        user_id=bot_user.pk, amount=5, reason="r", created_by=operator, idempotency_key="adj-1"
    )
    replay = bonus_adjust(
        user_id=bot_user.pk, amount=5, reason="r", created_by=operator, idempotency_key="adj-1"
    )
    assert replay.replayed and replay.transaction_id == again.transaction_id


@pytest.mark.parametrize("amount", [0, -5, 1.5, "10", True, None, MAX_AMOUNT + 1])
def test_bad_amounts_raise_value_error_and_write_nothing(bot_user, amount):
    with pytest.raises(ValueError, match="amount"):
        bonus_earn(user_id=bot_user.pk, amount=amount, idempotency_key="k")
    with pytest.raises(ValueError, match="amount"):
        bonus_spend(user_id=bot_user.pk, amount=amount, idempotency_key="k")
    assert not BonusTransaction.objects.exists()


def test_bad_keys_and_kinds_raise_value_error(bot_user):
    with pytest.raises(ValueError, match="idempotency_key"):
        bonus_earn(user_id=bot_user.pk, amount=1, idempotency_key="")
    with pytest.raises(ValueError, match="idempotency_key"):
        bonus_spend(user_id=bot_user.pk, amount=1, idempotency_key="x" * 201)
    with pytest.raises(ValueError, match="kind"):
        bonus_earn(user_id=bot_user.pk, amount=1, idempotency_key="k", kind="spend")
    with pytest.raises(ValueError, match="zero"):
        bonus_adjust(user_id=bot_user.pk, amount=0, reason="r", created_by=None)


def test_unknown_user_raises_does_not_exist(db, spend_path):
    with pytest.raises(BotUser.DoesNotExist):
        bonus_earn(user_id=999_999, amount=1, idempotency_key="k")
    with pytest.raises(BotUser.DoesNotExist):
        bonus_spend(user_id=999_999, amount=1, idempotency_key="k")


def test_largest_amount_is_accepted(bot_user, spend_path):
    assert bonus_earn(user_id=bot_user.pk, amount=MAX_AMOUNT, idempotency_key="k").balance == (
        MAX_AMOUNT
    )
    assert bonus_spend(user_id=bot_user.pk, amount=MAX_AMOUNT, idempotency_key="s").balance == 0


# The spend lock lasts until the spending transaction ends, and a test inside one
# transaction would hold it from its first spend on: tests that hold it "elsewhere"
# after a spend of the same user commit for real.
@pytest.mark.django_db(transaction=True)
def test_spend_while_another_holds_the_lock_is_in_progress(bot_user, spend_path):
    bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="e")
    done = bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="first")
    with spend_lock_held(spend_path, bot_user.pk):
        busy = bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="second")
        # A re-delivery of an already applied spend still answers its first result.
        replay = bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="first")
    assert busy == BonusResult(status="in_progress", balance=90, transaction_id=None)
    assert replay.replayed and replay.transaction_id == done.transaction_id
    assert balance_of(bot_user.pk) == 90
    assert bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="second").balance == 80


def test_spend_works_without_redis(bot_user, monkeypatch, spend_path):
    bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="e")
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(locks, "_redis", lambda: dead)
    assert bonus_spend(user_id=bot_user.pk, amount=60, idempotency_key="s").balance == 40
    assert bonus_spend(user_id=bot_user.pk, amount=60, idempotency_key="t").status == (
        "insufficient"
    )


def test_database_refuses_a_negative_balance_even_without_the_services(bot_user):
    with pytest.raises(IntegrityError):
        BotUser.objects.filter(pk=bot_user.pk).update(balance=-1)


def test_spend_costs_few_queries(bot_user, spend_path):
    bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="e")
    with CaptureQueriesContext(connection) as queries:
        bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="s")
    if spend_path == "one_statement":
        # Savepoints counted too: there are none.
        assert len(queries) == 1, [q["sql"] for q in queries]
    else:
        # (test savepoint), lock row, key lookup, savepoint, update, insert, release x2
        assert len(queries) <= 8, [q["sql"] for q in queries]


def _one_spend_costs(user_id: int, key: str, amount: int, monkeypatch) -> tuple:
    """(result, statements, Redis round trips) of one spend inside a transaction (as
    the engine runs it: the cache invalidation after commit is not the spend's)."""
    with (
        transaction.atomic(),
        redis_round_trips(monkeypatch) as trips,
        CaptureQueriesContext(connection) as queries,
    ):
        result = bonus_spend(user_id=user_id, amount=amount, idempotency_key=key)
    return result, [q["sql"] for q in queries.captured_queries], trips.count


@pytest.mark.django_db(transaction=True)  # commits: see above
def test_a_spend_is_one_statement_and_no_redis_command(bot_user, monkeypatch):
    bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="e")
    done, statements, trips = _one_spend_costs(bot_user.pk, "s", 30, monkeypatch)
    assert done.status == "ok" and done.balance == 70
    assert (len(statements), trips) == (1, 0), statements

    replay, statements, trips = _one_spend_costs(bot_user.pk, "s", 30, monkeypatch)
    assert replay.replayed and replay.transaction_id == done.transaction_id
    assert (len(statements), trips) == (1, 0), statements

    poor, statements, trips = _one_spend_costs(bot_user.pk, "t", 71, monkeypatch)
    assert poor == BonusResult(status="insufficient", balance=70, transaction_id=None)
    assert (len(statements), trips) == (1, 0), statements

    with spend_lock_held_elsewhere(bot_user.pk):
        busy, statements, trips = _one_spend_costs(bot_user.pk, "u", 1, monkeypatch)
    assert busy == BonusResult(status="in_progress", balance=70, transaction_id=None)
    assert (len(statements), trips) == (1, 0), statements
    assert balance_of(bot_user.pk) == 70 == ledger_sum(bot_user.pk)


def test_the_general_path_takes_the_redis_lock(bot_user, monkeypatch):
    """What the one statement saves: the general path's statements and lock commands."""
    bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="e")
    monkeypatch.setattr(ledger, "spends_in_one_statement", lambda: False)
    done, statements, trips = _one_spend_costs(bot_user.pk, "s", 30, monkeypatch)
    assert done.status == "ok" and done.balance == 70
    assert len(statements) > 1 and trips >= 2, (statements, trips)


@pytest.mark.django_db(transaction=True)  # commits: see above
def test_a_spend_replayed_with_another_amount_or_kind_is_a_conflict(project, spend_path):
    alice = bot_user_create(project=project)
    bob = bot_user_create(project=project)
    bonus_earn(user_id=alice.pk, amount=100, idempotency_key="e")
    bonus_earn(user_id=bob.pk, amount=100, idempotency_key="f")
    bonus_spend(user_id=alice.pk, amount=10, idempotency_key="s")
    with pytest.raises(IdempotencyKeyConflict, match="already used"):
        bonus_spend(user_id=alice.pk, amount=11, idempotency_key="s")
    with pytest.raises(IdempotencyKeyConflict):
        bonus_spend(user_id=bob.pk, amount=10, idempotency_key="s")  # another user
    with pytest.raises(IdempotencyKeyConflict):
        bonus_spend(user_id=alice.pk, amount=100, idempotency_key="e")  # the earn's key
    with spend_lock_held(spend_path, alice.pk), pytest.raises(IdempotencyKeyConflict):
        bonus_spend(user_id=alice.pk, amount=12, idempotency_key="s")  # also while busy
    assert (balance_of(alice.pk), balance_of(bob.pk)) == (90, 100)
    assert BonusTransaction.objects.filter(kind="spend").count() == 1


def test_an_insufficient_spend_writes_nothing_not_even_the_row(bot_user):
    """The one statement leaves the user's row as it was (no UPDATE ran), and a
    replay of the refused key is not a replay."""
    bonus_earn(user_id=bot_user.pk, amount=50, idempotency_key="e")
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text FROM users_botuser WHERE id = %s", [bot_user.pk])
        version = cursor.fetchone()[0]
        assert bonus_spend(user_id=bot_user.pk, amount=51, idempotency_key="s").status == (
            "insufficient"
        )
        cursor.execute("SELECT xmin::text FROM users_botuser WHERE id = %s", [bot_user.pk])
        assert cursor.fetchone()[0] == version
    assert not BonusTransaction.objects.filter(kind="spend").exists()
    assert bonus_spend(user_id=bot_user.pk, amount=50, idempotency_key="s").balance == 0


def test_purchase_share_cap(project):
    project.max_bonus_share_percent = 30
    project.save(update_fields=["max_bonus_share_percent"])
    user = bot_user_create(project=project)
    bonus_earn(user_id=user.pk, amount=1000, idempotency_key="e")
    from users.selectors import bonus_spend_limit_get

    assert bonus_spend_limit_get(user_id=user.pk, purchase_amount=500) == 150
    with pytest.raises(BonusCapExceeded, match="at most 150"):
        bonus_spend_for_purchase(
            user_id=user.pk, amount=151, purchase_amount=500, idempotency_key="p"
        )
    result = bonus_spend_for_purchase(
        user_id=user.pk, amount=150, purchase_amount=500, idempotency_key="p"
    )
    assert result.balance == 850


def test_operator_user_deletion_keeps_the_entry(bot_user):
    operator = get_user_model().objects.create_user("gone", password="x")
    result = bonus_adjust(user_id=bot_user.pk, amount=5, reason="r", created_by=operator)
    operator.delete()
    entry = BonusTransaction.objects.get(pk=result.transaction_id)
    assert entry.created_by_id is None and entry.amount == 5


def test_history_is_newest_first_and_limited(project):
    user = bot_user_create(project=project)
    other = bot_user_create(project=project)
    for n in range(7):
        bonus_earn(user_id=user.pk, amount=n + 1, idempotency_key=f"h{n}")
    bonus_earn(user_id=other.pk, amount=99, idempotency_key="other")
    bonus_spend(user_id=user.pk, amount=3, idempotency_key="s")
    history = bonus_history_get(user_id=user.pk)
    assert [(e.kind, e.amount) for e in history] == [
        ("spend", -3),
        ("earn", 7),
        ("earn", 6),
        ("earn", 5),
        ("earn", 4),
    ]
    assert len(bonus_history_get(user_id=user.pk, limit=100)) == 8
    assert len(bonus_history_get(user_id=user.pk, limit=0)) == 1
    assert bonus_history_get(user_id=424242) == []
