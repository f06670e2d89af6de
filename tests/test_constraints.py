"""Rules the database itself enforces, whatever the Python code does."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from tests.factories import bot_user_create, execution_create, workflow_create
from users.models import BonusTransaction, BotUser, UserVariable
from workflows.models import WorkflowExecution


def test_negative_balance_is_refused_by_the_database(bot_user):
    with pytest.raises(IntegrityError, match="botuser_balance_non_negative"), transaction.atomic():
        BotUser.objects.filter(pk=bot_user.pk).update(balance=-1)
    bot_user.refresh_from_db()
    assert bot_user.balance == 0


def test_ledger_entry_cannot_record_negative_balance_or_zero_amount(bot_user):
    common = {"project": bot_user.project, "user": bot_user, "kind": "spend"}
    with pytest.raises(IntegrityError, match="balance_after_non_negative"), transaction.atomic():
        BonusTransaction.objects.create(amount=-5, balance_after=-5, idempotency_key="a", **common)
    with pytest.raises(IntegrityError, match="amount_not_zero"), transaction.atomic():
        BonusTransaction.objects.create(amount=0, balance_after=0, idempotency_key="b", **common)


def test_idempotency_key_is_unique_per_project(bot_user):
    common = {"project": bot_user.project, "user": bot_user, "kind": "earn", "balance_after": 5}
    BonusTransaction.objects.create(amount=5, idempotency_key="order-1", **common)
    with (
        pytest.raises(IntegrityError, match="bonustx_unique_idempotency_key"),
        transaction.atomic(),
    ):
        BonusTransaction.objects.create(amount=5, idempotency_key="order-1", **common)
    other = bot_user_create()
    BonusTransaction.objects.create(
        project=other.project,
        user=other,
        kind="earn",
        amount=5,
        balance_after=5,
        idempotency_key="order-1",
    )


def test_user_is_unique_per_project_and_telegram_id(bot_user):
    with pytest.raises(IntegrityError), transaction.atomic():
        bot_user_create(project=bot_user.project, telegram_id=bot_user.telegram_id)
    # The same person in another project is another bot user.
    assert bot_user_create(telegram_id=bot_user.telegram_id).pk != bot_user.pk


def test_user_cannot_be_own_referrer(bot_user):
    with pytest.raises(IntegrityError, match="botuser_not_own_referrer"), transaction.atomic():
        BotUser.objects.filter(pk=bot_user.pk).update(referrer=bot_user.pk)


def test_variable_key_unique_per_user(bot_user):
    UserVariable.objects.create(user=bot_user, key="city", value="Riga")
    with pytest.raises(IntegrityError), transaction.atomic():
        UserVariable.objects.create(user=bot_user, key="city", value="Oslo")


def test_at_most_one_waiting_execution_per_session(bot_user):
    workflow = workflow_create(project=bot_user.project)
    execution_create(workflow=workflow, user=bot_user, status="waiting")
    with (
        pytest.raises(IntegrityError, match="execution_one_waiting_per_session"),
        transaction.atomic(),
    ):
        execution_create(workflow=workflow, user=bot_user, status="waiting")
    # Finished executions of the same session are unlimited.
    execution_create(workflow=workflow, user=bot_user, status="completed")
    execution_create(workflow=workflow, user=bot_user, status="completed")
    assert (
        WorkflowExecution.objects.filter(session_key__endswith=str(bot_user.chat_id)).count() == 3
    )


def test_published_version_number_unique(bot_user):
    workflow = workflow_create(project=bot_user.project)
    with pytest.raises(IntegrityError), transaction.atomic():
        workflow.versions.create(number=1, definition={}, checksum="x")
