"""Executions: filters, cancel and retry; the per-user page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import bot_user_create, execution_create
from tests.workflows.conftest import command, publish
from users.ledger import bonus_earn
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db

ASK = {
    "start": "ask",
    "steps": {
        "ask": {"type": "input", "text": "Name?", "variable": "name", "next": "hi"},
        "hi": {"type": "message", "text": "Hi {{ vars.name }}"},
    },
}


def test_cancel_a_waiting_conversation_from_the_list(operator_client, project, delivered):
    publish(project, ASK)
    user = bot_user_create(project=project)
    command(user, "start")
    execution = WorkflowExecution.objects.get(user=user)
    assert execution.status == "waiting"
    done = execution_create(workflow=execution.workflow, user=user, status="completed")
    response = operator_client.post(
        reverse("admin:workflows_workflowexecution_changelist"),
        {"action": "cancel_executions", "_selected_action": [execution.pk, done.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "1 conversation(s) cancelled." in page and "1 were not waiting" in page
    execution.refresh_from_db()
    assert execution.status == "cancelled" and "cancelled by ann" in execution.error
    # The user's next text is not taken as the answer any more.
    from tests.workflows.conftest import text

    assert not text(user, "Bob").handled


def test_retry_a_failed_conversation_from_the_step_that_failed(operator_client, project, delivered):
    publish(
        project,
        {
            "start": "pay",
            "steps": {
                "pay": {
                    "type": "bonus",
                    "operation": "spend",
                    "amount": "{{ vars.price }}",
                    "on_success": "ok",
                    "on_insufficient": "poor",
                },
                "ok": {"type": "message", "text": "Paid"},
                "poor": {"type": "message", "text": "Not enough"},
            },
        },
    )
    user = bot_user_create(project=project)
    bonus_earn(user_id=user.pk, amount=100, idempotency_key="seed")
    from users.variables import user_variable_set

    user_variable_set(user_id=user.pk, project_id=project.pk, key="price", value="lots")
    command(user, "start")
    execution = WorkflowExecution.objects.get(user=user)
    assert execution.status == "failed" and execution.current_step == "pay"
    user_variable_set(user_id=user.pk, project_id=project.pk, key="price", value=30)
    from django.core.cache import cache

    cache.clear()  # the variable cache is refreshed after commit in production
    url = reverse("admin:workflows_workflowexecution_changelist")
    response = operator_client.post(
        url, {"action": "retry_executions", "_selected_action": [execution.pk]}, follow=True
    )
    assert "1 conversation(s) retried" in response.content.decode()
    execution.refresh_from_db()
    user.refresh_from_db()
    assert execution.status == "completed" and user.balance == 70
    assert [a.text for call in delivered for a in call["actions"]] == ["Paid"]
    # Retrying again does nothing: it is no longer failed.
    response = operator_client.post(
        url, {"action": "retry_executions", "_selected_action": [execution.pk]}, follow=True
    )
    assert "1 had not failed" in response.content.decode()
    user.refresh_from_db()
    assert user.balance == 70


def test_filters_by_status_workflow_and_version(operator_client, project):
    workflow = publish(project, ASK)
    user = bot_user_create(project=project)
    execution_create(workflow=workflow, user=user, status="failed")
    url = reverse("admin:workflows_workflowexecution_changelist")
    for query in (
        "status__exact=failed",
        f"workflow__id__exact={workflow.pk}",
        f"version__id__exact={workflow.published_version_id}",
        f"user__id__exact={user.pk}",
    ):
        response = operator_client.get(f"{url}?{query}")
        assert response.status_code == 200, query
        assert "1 workflow execution" in response.content.decode(), query


def test_user_page_shows_profile_variables_ledger_executions_referrals(operator_client, project):
    workflow = publish(project, ASK)
    referrer = bot_user_create(project=project, first_name="Ref")
    user = bot_user_create(project=project, first_name="Ann", referrer=referrer)
    friend = bot_user_create(project=project, first_name="Friend", referrer=user)
    bonus_earn(user_id=user.pk, amount=25, idempotency_key="e1", reason="Coffee")
    execution_create(workflow=workflow, user=user, status="waiting", current_step="ask")
    user.variables.create(key="city", value="Oslo")
    page = operator_client.get(
        reverse("admin:users_botuser_change", args=[user.pk])
    ).content.decode()
    assert "Adjust balance" in page
    assert reverse("admin:users_botuser_adjust_balance", args=[user.pk]) in page
    assert "Coffee" in page and "Oslo" in page
    assert "Waiting for the user" in page and ">ask<" in page
    assert reverse("admin:users_botuser_change", args=[friend.pk]) in page
    assert reverse("admin:users_botuser_change", args=[referrer.pk]) in page
    assert f"?user__id__exact={user.pk}" in page


def test_interrupted_runs_are_hidden_by_default_and_one_click_away(
    operator_client, project, delivered
):
    """Each /start in the middle of a question leaves an interrupted run: not the news."""
    publish(project, ASK, triggers=[{"type": "command", "command": "start", "interrupt": True}])
    user = bot_user_create(project=project)
    for _ in range(3):
        command(user, "start")  # each one interrupts the previous question
    interrupted = list(WorkflowExecution.objects.filter(user=user, status="cancelled"))
    assert len(interrupted) == 2 and all(e.error.startswith("interrupted") for e in interrupted)
    live = WorkflowExecution.objects.get(user=user, status="waiting")
    operator_cancelled = execution_create(
        workflow=live.workflow, user=user, status="cancelled", error="cancelled by ann"
    )
    changelist = reverse("admin:workflows_workflowexecution_changelist")

    def listed(query: str = "") -> set[int]:
        response = operator_client.get(changelist + query)
        return {row.pk for row in response.context["cl"].result_list}

    assert listed() == {live.pk, operator_cancelled.pk}
    assert listed("?interrupted=show") == {
        live.pk,
        operator_cancelled.pk,
        *(e.pk for e in interrupted),
    }
    assert listed("?interrupted=only") == {e.pk for e in interrupted}
    assert "Only interrupted" in operator_client.get(changelist).content.decode()

    page = operator_client.get(reverse("admin:users_botuser_change", args=[user.pk]))
    html = page.content.decode()
    assert f"#{live.pk}<" in html and f"#{operator_cancelled.pk}<" in html
    assert not any(f"#{e.pk}<" in html for e in interrupted)
    assert "2 interrupted" in html and "interrupted=only" in html
