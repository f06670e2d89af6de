"""Concurrent spends while Redis is SIGKILLed and started again: exactly once, exact ledger."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.db.models import Sum

from botplatform.cache_backend import cache_status
from tests.factories import bot_user_create, project_create
from tests.resilience.test_cache_fallback import back_on_redis, wait_until
from users.ledger import bonus_earn, bonus_spend
from users.models import BonusTransaction, BotUser
from users.selectors import user_state_get

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 6
SPENDS_PER_THREAD = 12
AMOUNT = 10
START_BALANCE = 500  # less than THREADS * SPENDS_PER_THREAD * AMOUNT: some must be refused


def test_concurrent_spends_across_a_redis_kill_and_restart(resilient_cache):
    user = bot_user_create(project=project_create())
    bonus_earn(user_id=user.pk, amount=START_BALANCE, idempotency_key="start")
    done = []  # (key, status, replayed) of every final answer
    progress = threading.Semaphore(0)
    errors: list[BaseException] = []

    def spender(n: int) -> None:
        try:
            for i in range(SPENDS_PER_THREAD):
                key = f"spend-{n}-{i}"
                # Each purchase is sent twice (a double tap / a redelivered update).
                for _attempt in range(2):
                    while True:
                        result = bonus_spend(user_id=user.pk, amount=AMOUNT, idempotency_key=key)
                        if result.status != "in_progress":
                            break
                        time.sleep(0.005)  # the lock holder finishes first
                    done.append((key, result.status, result.replayed))
                progress.release()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=spender, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    total = THREADS * SPENDS_PER_THREAD
    for _ in range(total // 3):
        assert progress.acquire(timeout=30)
    resilient_cache.kill()  # mid-flight: locks move to PostgreSQL advisory locks
    for _ in range(total // 3):
        assert progress.acquire(timeout=30)
    assert cache_status()["redis_available"] is False
    resilient_cache.start()  # and back, while the spends go on
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert wait_until(back_on_redis)

    applied = {key for key, status, replayed in done if status == "ok" and not replayed}
    refused = {key for key, status, _ in done if status == "insufficient"}
    assert len(done) == 2 * total
    assert len(applied) == START_BALANCE // AMOUNT  # every bonus spent, none twice
    assert applied.isdisjoint(refused)
    spends = BonusTransaction.objects.filter(user=user, kind="spend")
    assert spends.count() == len(applied)
    assert set(spends.values_list("idempotency_key", flat=True)) == applied
    user = BotUser.objects.get(pk=user.pk)
    ledger = BonusTransaction.objects.filter(user=user).aggregate(s=Sum("amount"))["s"]
    assert user.balance == ledger == 0
    # The cached balance agrees with the database once Redis is back.
    assert user_state_get(user_id=user.pk, project_id=user.project_id).variables["balance"] == 0
