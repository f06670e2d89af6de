"""Bonus expiry: first in, first out, idempotent, run by a periodic task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db.models import Sum

from tests.factories import bot_user_create, project_create
from users.ledger import bonus_earn, bonus_expire, bonus_expiry_cutoff, bonus_spend
from users.models import BonusTransaction
from users.tasks import bonuses_expire


def backdate(transaction_id: int, days: int) -> None:
    when = datetime.now(UTC) - timedelta(days=days)
    BonusTransaction.objects.filter(pk=transaction_id).update(created_at=when)


@pytest.fixture
def expiring(db):
    return project_create(bonus_expiry_days=30)


def test_unspent_old_credits_expire_first_in_first_out(expiring):
    user = bot_user_create(project=expiring)
    backdate(bonus_earn(user_id=user.pk, amount=100, idempotency_key="a").transaction_id, 40)
    backdate(bonus_spend(user_id=user.pk, amount=30, idempotency_key="b").transaction_id, 35)
    bonus_earn(user_id=user.pk, amount=50, idempotency_key="c")  # recent: keeps

    result = bonus_expire(user_id=user.pk)
    assert result.status == "ok" and result.balance == 50
    entry = BonusTransaction.objects.get(pk=result.transaction_id)
    assert (entry.kind, entry.amount) == ("expiry", -70)
    assert "expired" in entry.reason

    assert bonus_expire(user_id=user.pk) is None  # nothing left to expire
    user.refresh_from_db()
    assert (
        user.balance
        == 50
        == BonusTransaction.objects.filter(user=user).aggregate(s=Sum("amount"))["s"]
    )
    assert user.lifetime_earned == 150  # expiry does not undo earnings or levels


def test_spent_bonuses_leave_nothing_to_expire(expiring):
    user = bot_user_create(project=expiring)
    backdate(bonus_earn(user_id=user.pk, amount=100, idempotency_key="a").transaction_id, 40)
    bonus_spend(user_id=user.pk, amount=100, idempotency_key="b")
    assert bonus_expire(user_id=user.pk) is None


def test_projects_without_expiry_never_expire(db):
    user = bot_user_create(project=project_create())
    backdate(bonus_earn(user_id=user.pk, amount=100, idempotency_key="a").transaction_id, 4000)
    assert bonus_expire(user_id=user.pk) is None


def test_cutoff_is_stable_for_a_whole_day():
    morning = datetime(2026, 3, 10, 0, 5, tzinfo=UTC)
    evening = datetime(2026, 3, 10, 23, 55, tzinfo=UTC)
    assert bonus_expiry_cutoff(days=30, now=morning) == bonus_expiry_cutoff(days=30, now=evening)
    assert bonus_expiry_cutoff(days=30, now=morning) == datetime(2026, 2, 8, tzinfo=UTC)


def test_periodic_task_expires_every_due_user_once(expiring):
    due = [bot_user_create(project=expiring) for _ in range(3)]
    for user in due:
        earned = bonus_earn(user_id=user.pk, amount=10, idempotency_key=f"a{user.pk}")
        backdate(earned.transaction_id, 31)
    fresh = bot_user_create(project=expiring)
    bonus_earn(user_id=fresh.pk, amount=10, idempotency_key="fresh")
    other = bot_user_create(project=project_create())
    backdate(bonus_earn(user_id=other.pk, amount=10, idempotency_key="a").transaction_id, 99)

    assert bonuses_expire() == 3
    assert bonuses_expire() == 0  # a re-run (or a retried task) writes nothing
    bonuses_expire.delay()  # through Celery (eager in tests): still nothing
    assert BonusTransaction.objects.filter(kind="expiry").count() == 3
    for user in (*due, fresh, other):
        user.refresh_from_db()
    assert [user.balance for user in due] == [0, 0, 0]
    assert (fresh.balance, other.balance) == (10, 10)


def test_task_is_scheduled():
    entry = settings.CELERY_BEAT_SCHEDULE["users.bonuses_expire"]
    assert entry["task"] == bonuses_expire.name
