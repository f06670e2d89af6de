"""The bonus step against the loyalty ledger: earn, spend, adjust and every branch."""

from __future__ import annotations

from botplatform.conversation import InputEvent
from tests.users.helpers import spend_lock_held_elsewhere
from tests.workflows.conftest import buttons, command, press, publish, texts
from users.models import BonusTransaction, BotUser
from workflows.models import WorkflowExecution
from workflows.services import event_process


def shop(operation="spend", amount=100, **extra) -> dict:
    return {
        "start": "menu",
        "steps": {
            "menu": {
                "type": "message",
                "text": "Balance {{ user.balance }}",
                "buttons": [[{"text": "Go", "next": "op"}]],
            },
            "op": {
                "type": "bonus",
                "operation": operation,
                "amount": amount,
                "reason": "Coffee for {{ user.first_name }}",
                "on_success": "ok",
                "on_insufficient": "poor",
                "on_in_progress": "busy",
                **extra,
            },
            "ok": {"type": "message", "text": "Done, balance {{ user.balance }}"},
            "poor": {"type": "message", "text": "Not enough: {{ user.balance }}"},
            "busy": {"type": "message", "text": "Busy"},
        },
    }


def fund(user, amount):
    from users.ledger import bonus_earn

    bonus_earn(user_id=user.pk, amount=amount, idempotency_key=f"fund-{user.pk}-{amount}")


def test_spend_success_shows_the_new_balance_in_the_same_event(
    project, user, django_capture_on_commit_callbacks
):
    fund(user, 250)
    publish(project, shop())
    go = buttons(command(user, "start"))["Go"]
    with django_capture_on_commit_callbacks(execute=True):
        assert texts(press(user, go, event_id="upd-1")) == ["Done, balance 150"]
    entry = BonusTransaction.objects.get(kind="spend")
    assert entry.amount == -100 and entry.reason == "Coffee for Ann"
    assert entry.idempotency_key.startswith("wf:upd-1:")
    assert BotUser.objects.get(pk=user.pk).balance == 150
    # The next conversation reads the new balance too (the cache was dropped on commit).
    assert texts(command(user, "start")) == ["Balance 150"]


def test_spend_insufficient_branch_takes_nothing(project, user):
    fund(user, 40)
    publish(project, shop())
    go = buttons(command(user, "start"))["Go"]
    assert texts(press(user, go)) == ["Not enough: 40"]
    assert not BonusTransaction.objects.filter(kind="spend").exists()


def test_spend_in_progress_branch(project, user):
    fund(user, 500)
    publish(project, shop())
    go = buttons(command(user, "start"))["Go"]
    with spend_lock_held_elsewhere(user.pk):  # another transaction's spend is open
        assert texts(press(user, go)) == ["Busy"]
    assert BotUser.objects.get(pk=user.pk).balance == 500


def test_earn_and_adjust_with_templated_amount(project, user):
    from users.models import UserVariable

    UserVariable.objects.create(user=user, key="price", value="30")
    publish(project, shop(operation="earn", amount="{{ vars.price }}"), slug="earn")
    go = buttons(command(user, "start"))["Go"]
    assert texts(press(user, go)) == ["Done, balance 30"]
    publish(
        project,
        shop(operation="adjust", amount=-10),
        slug="adjust",
        triggers=[{"type": "command", "command": "adjust"}],
    )
    go = buttons(command(user, "adjust"))["Go"]
    assert texts(press(user, go)) == ["Done, balance 20"]
    assert sorted(BonusTransaction.objects.values_list("kind", "amount")) == [
        ("adjust", -10),
        ("earn", 30),
    ]


def test_a_bad_amount_fails_the_step_readably(project, user):
    from users.models import UserVariable

    UserVariable.objects.create(user=user, key="price", value="a lot")
    publish(project, shop(operation="earn", amount="{{ vars.price }}"))
    go = buttons(command(user, "start"))["Go"]
    assert texts(press(user, go)) == [project.fallback_message]
    execution = WorkflowExecution.objects.get()
    assert execution.status == "failed" and "the amount 'a lot' is not a number" in execution.error


def test_a_retried_update_is_applied_once(project, user):
    """The same event through the same step of the same execution: one ledger entry."""
    fund(user, 300)
    publish(
        project,
        {
            "start": "op",
            "steps": {
                "op": {"type": "bonus", "operation": "spend", "amount": 100, "next": "ok"},
                "ok": {"type": "end"},
            },
        },
    )
    from users.ledger import bonus_spend
    from workflows.engine.steps.bonus import bonus_idempotency_key

    event = InputEvent(kind="command", command="start", event_id="bot:1:update:77")
    event_process(user=user, event=event)
    execution = WorkflowExecution.objects.get()
    key = bonus_idempotency_key(
        event_id=event.event_id, execution_id=execution.pk, step_id="op", seq=0
    )
    replay = bonus_spend(user_id=user.pk, amount=100, idempotency_key=key)
    assert replay.replayed and replay.balance == 200
    assert BonusTransaction.objects.filter(kind="spend").count() == 1


def test_level_up_starts_the_level_up_workflow(project, user):
    project.levels = [{"name": "Bronze", "threshold": 0}, {"name": "Silver", "threshold": 100}]
    project.save(update_fields=["levels"])
    publish(project, shop(operation="earn", amount=150))
    publish(
        project,
        {"start": "c", "steps": {"c": {"type": "message", "text": "Welcome to {{ user.level }}!"}}},
        triggers=[{"type": "level_up", "level": "Silver"}],
        slug="congrats",
    )
    go = buttons(command(user, "start"))["Go"]
    assert texts(press(user, go)) == ["Done, balance 150", "Welcome to Silver!"]


def test_every_level_up_workflow_starts(project, user):
    """The docs say "the level_up workflows": all of them start, by priority (issue 17)."""
    project.levels = [{"name": "Bronze", "threshold": 0}, {"name": "Silver", "threshold": 100}]
    project.save(update_fields=["levels"])
    publish(project, shop(operation="earn", amount=150))
    for slug, priority, text_ in [("any", 0, "Level up!"), ("silver", 5, "Silver perks")]:
        publish(
            project,
            {"start": "c", "steps": {"c": {"type": "message", "text": text_}}},
            triggers=[{"type": "level_up", **({"level": "Silver"} if priority else {})}],
            slug=slug,
            priority=priority,
        )
    go = buttons(command(user, "start"))["Go"]
    assert texts(press(user, go)) == ["Done, balance 150", "Silver perks", "Level up!"]
    assert WorkflowExecution.objects.filter(workflow__slug__in=["any", "silver"]).count() == 2


def test_the_demo_spend_button(project, user):
    """Covered end to end in test_demo; here the ledger side of a double tap."""
    fund(user, 100)
    publish(project, shop())
    go = buttons(command(user, "start"))["Go"]
    first = press(user, go, query_id="a", event_id="e1")
    second = press(user, go, query_id="b", event_id="e2")
    assert texts(first) == ["Done, balance 0"]
    assert second.actions[0].text == "This button is no longer active."
    assert BonusTransaction.objects.filter(kind="spend").count() == 1


def test_a_spend_that_fails_in_the_database_rolls_the_whole_event_back(project, user, monkeypatch):
    """A one-statement spend runs without a savepoint: a database error there fails the
    whole event (the transport rolls it back and retries it), and nothing the event
    did before the spend stays (here: a variable set by the step before it)."""
    import pytest
    from django.db import DatabaseError, transaction

    from users import ledger
    from users.models import UserVariable

    fund(user, 250)
    definition = shop()
    definition["steps"]["menu"]["buttons"] = [[{"text": "Go", "next": "mark"}]]
    definition["steps"]["mark"] = {
        "type": "set_variable",
        "variable": "marked",
        "value": "1",
        "next": "op",
    }
    publish(project, definition)
    go = buttons(command(user, "start"))["Go"]
    monkeypatch.setattr(ledger, "_SPEND_SQL", "SELECT no_such_function_here()")
    with pytest.raises(DatabaseError), transaction.atomic():
        press(user, go)
    assert not UserVariable.objects.filter(user=user, key="marked").exists()
    assert BotUser.objects.get(pk=user.pk).balance == 250
    monkeypatch.undo()
    assert texts(press(user, go)) == ["Done, balance 150"]  # the retry goes through
