"""Redis dies under a running conversation and under cached user state.

The engine and loyalty run in this process with the cache on a redis-server of the
test's own; a second process (``manage.py shell``) stands in for a Celery worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from botplatform import cache as keys
from botplatform.cache_backend import cache_status
from tests.factories import bot_user_create, project_create
from tests.resilience.conftest import BREAKER_SECONDS
from tests.resilience.test_cache_fallback import back_on_redis, wait_until
from tests.workflows.conftest import command, publish, text, texts
from users.ledger import bonus_earn, bonus_spend
from users.models import BonusTransaction, BotUser
from users.selectors import user_state_get
from workflows.models import ExecutionStepLog, WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]

ASK = {
    "start": "ask",
    "steps": {
        "ask": {"type": "input", "text": "Which city?", "variable": "city", "next": "earn"},
        "earn": {"type": "bonus", "operation": "earn", "amount": 10, "next": "done"},
        "done": {"type": "message", "text": "{{ vars.city }}: {{ user.balance }} points"},
    },
}


def ledger_sum(user_id: int) -> int:
    return BonusTransaction.objects.filter(user_id=user_id).aggregate(s=Sum("amount"))["s"] or 0


def assert_each_step_ran_once(*, pausing: set[str]) -> None:
    """One log per step and execution; a step that pauses logs its pause and its end."""
    runs = Counter(ExecutionStepLog.objects.values_list("execution_id", "step"))
    assert runs
    for (_execution, step), count in runs.items():
        assert count == (2 if step in pausing else 1), runs


def test_waiting_conversation_resumes_from_the_database_when_redis_is_killed(resilient_cache):
    project = project_create()
    user = bot_user_create(project=project, first_name="Ann")
    publish(project, ASK)
    raw = resilient_cache.client()
    waiting_key = keys.workflow_waiting_key(f"sim:{user.chat_id}")

    assert texts(command(user, "start")) == ["Which city?"]
    assert raw.exists(waiting_key) == 1  # the wait is cached in Redis ...
    resilient_cache.kill()  # ... which dies with it
    assert texts(text(user, "Paris")) == ["Paris: 10 points"]
    # A whole conversation while Redis is down.
    assert texts(command(user, "start")) == ["Which city?"]
    assert texts(text(user, "Rome")) == ["Rome: 20 points"]
    assert cache_status()["redis_available"] is False

    resilient_cache.start()
    assert wait_until(back_on_redis)
    raw = resilient_cache.client()
    assert texts(command(user, "start")) == ["Which city?"]
    assert raw.exists(waiting_key) == 1  # back on Redis without a restart
    assert texts(text(user, "Oslo")) == ["Oslo: 30 points"]

    assert WorkflowExecution.objects.filter(status="completed").count() == 3
    assert_each_step_ran_once(pausing={"ask"})
    user.refresh_from_db()
    assert user.balance == 30 == ledger_sum(user.pk)
    assert BonusTransaction.objects.filter(user=user).count() == 3


def test_nothing_waits_is_never_remembered_in_one_process_while_redis_is_down(
    resilient_cache,
):
    """Process A sees "nothing waits"; process B (a worker) then starts a wait. A's
    next message must find B's wait: the fallback memory never holds waiting keys."""
    project = project_create()
    user = bot_user_create(project=project, first_name="Ann")
    publish(
        project,
        {
            "start": "hello",
            "steps": {
                "hello": {"type": "message", "text": "See you", "next": "later"},
                "later": {"type": "delay", "minutes": 10, "next": "ask"},
                "ask": {"type": "input", "text": "Still there?", "variable": "a", "next": "bye"},
                "bye": {"type": "message", "text": "Got {{ vars.a }}"},
            },
        },
    )
    resilient_cache.kill()
    assert texts(command(user, "start")) == ["See you"]
    assert texts(text(user, "hi")) == []  # nothing waits (yet): A looked it up
    waiting_key = keys.workflow_waiting_key(f"sim:{user.chat_id}")
    assert caches["default"].fallback.get(waiting_key) is None

    execution = WorkflowExecution.objects.get()
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        wait_until=timezone.now() - timedelta(seconds=1)
    )
    db = django_settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "botplatform.settings_test",
        "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{connection.settings_dict['NAME']}",
        "TEST_REDIS_URL": resilient_cache.url,  # dead for B too
    }
    seq = execution.context["pending"]["seq"]
    worker = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            f"from workflows import tasks; tasks.delay_continue({execution.pk}, {seq})",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    execution.refresh_from_db()
    assert execution.status == "waiting" and execution.current_step == "ask"

    assert texts(text(user, "yes")) == ["Got yes"]  # A found B's wait in the database
    assert_each_step_ran_once(pausing={"later", "ask"})


def test_no_stale_balance_when_a_hung_redis_comes_back_with_old_entries(resilient_cache):
    """SIGSTOP keeps Redis's data: entries cached before the outage survive it, while
    the spend made during the outage could not invalidate them."""
    user = bot_user_create(project=project_create())
    bonus_earn(user_id=user.pk, amount=100, idempotency_key="e1")
    assert user_state_get(user_id=user.pk, project_id=user.project_id).variables["balance"] == 100
    raw = resilient_cache.client()
    variables_key = keys.user_variables_key(user.pk, user.project_id)
    assert raw.exists(variables_key) == 1

    resilient_cache.pause()
    try:
        # The first contact times out and opens the breaker. (A spend sends no Redis
        # command of its own on PostgreSQL: were its invalidation the first contact,
        # that command would wait in the socket and delete the copy once Redis resumes.)
        assert (
            user_state_get(user_id=user.pk, project_id=user.project_id).variables["balance"] == 100
        )
        assert bonus_spend(user_id=user.pk, amount=30, idempotency_key="s1").status == "ok"
        state = user_state_get(user_id=user.pk, project_id=user.project_id)
        assert state.variables["balance"] == 70  # the database answers
    finally:
        resilient_cache.resume()
    assert raw.exists(variables_key) == 1  # the pre-outage copy (balance 100) is still there

    time.sleep(BREAKER_SECONDS + 0.1)  # the breaker is due for a probe
    # The first read after the outage is the one that finds Redis back: still no stale copy.
    assert user_state_get(user_id=user.pk, project_id=user.project_id).variables["balance"] == 70
    assert cache_status()["redis_available"] is True
    # Cached again in Redis, with the right value: served without a query now.
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        state = user_state_get(user_id=user.pk, project_id=user.project_id)
    assert state.variables["balance"] == 70 and len(queries) == 0
    assert BotUser.objects.get(pk=user.pk).balance == 70 == ledger_sum(user.pk)
