"""Every step type, driven through event_process against PostgreSQL and Redis."""

from __future__ import annotations

from botplatform.conversation import AnswerCallback, EditMessage, SendMessage
from tests.workflows.conftest import buttons, command, press, publish, text, texts
from users.models import UserVariable
from workflows.models import ExecutionStepLog, WorkflowExecution

Status = WorkflowExecution.Status


def test_message_renders_user_data_and_escapes_it(project, user, bot):
    user.first_name = "<Ann & co>"
    user.save(update_fields=["first_name"])
    publish(
        project,
        {
            "start": "hi",
            "steps": {
                "hi": {
                    "type": "message",
                    "text": "<b>Hi</b> {{ user.first_name }}, balance {{ user.balance | number }}, "
                    "invite: {{ user.referral_link }} via @{{ bot.username }}",
                }
            },
        },
    )
    result = command(user, "start", bot=bot)
    assert result.handled
    [message] = result.actions
    assert isinstance(message, SendMessage) and message.chat_id == user.chat_id
    assert message.text == (
        f"<b>Hi</b> &lt;Ann &amp; co&gt;, balance 0, invite: "
        f"https://t.me/demo_bot?start=ref_{user.referral_code} via @demo_bot"
    )
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.COMPLETED and execution.finished_at is not None


def test_message_buttons_wait_for_a_press_and_route(project, user):
    publish(
        project,
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "Pick",
                    "buttons": [
                        [{"text": "One", "next": "one"}, {"text": "Two", "next": "two"}],
                        [{"text": "Docs", "url": "https://example.com/docs"}],
                    ],
                    "reply_keyboard": [["Help"]],
                },
                "one": {"type": "message", "text": "You chose one", "edit": True},
                "two": {"type": "message", "text": "You chose two"},
            },
        },
    )
    result = command(user, "start")
    shown = buttons(result)
    assert shown["Docs"].url == "https://example.com/docs"
    assert len(shown["One"].callback_data.encode()) <= 64
    assert result.actions[0].reply_keyboard == (("Help",),)
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.WAITING and execution.wait_until is not None

    pressed = press(user, shown["One"], message_id=77)
    assert isinstance(pressed.actions[0], AnswerCallback) and pressed.actions[0].text == ""
    edit = pressed.actions[1]
    assert isinstance(edit, EditMessage) and edit.message_id == 77 and edit.text == "You chose one"
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED

    # The same button again: the message is stale now. Answered, not re-run.
    again = press(user, shown["One"], query_id="q2")
    assert again.actions == [
        AnswerCallback(
            callback_query_id="q2",
            text="This button is no longer active.",
        )
    ]
    assert WorkflowExecution.objects.filter(status=Status.COMPLETED).count() == 1


def test_typing_a_button_label_presses_it(project, user):
    publish(
        project,
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "Pick",
                    "buttons": [[{"text": "Balance", "next": "b"}]],
                },
                "b": {"type": "message", "text": "Your balance"},
            },
        },
    )
    command(user, "start")
    assert texts(text(user, "balance")) == ["Your balance"]


def test_input_validates_retries_and_stores(project, user):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "Your birthday (DD.MM.YYYY)?",
                    "variable": "birthday",
                    "validate": {"type": "date", "min": "1900-01-01", "max": "today"},
                    "retry_text": "Please use DD.MM.YYYY",
                    "max_attempts": 3,
                    "next": "thanks",
                    "on_fail": "gave_up",
                },
                "thanks": {"type": "message", "text": "Saved {{ vars.birthday }}"},
                "gave_up": {"type": "message", "text": "Never mind"},
            },
        },
    )
    assert texts(command(user, "start")) == ["Your birthday (DD.MM.YYYY)?"]
    assert texts(text(user, "soon")) == ["Please use DD.MM.YYYY"]
    assert texts(text(user, "31.12.2999")) == ["Please use DD.MM.YYYY"]  # after max
    assert texts(text(user, "31.12.1990")) == ["Saved 1990-12-31"]
    assert UserVariable.objects.get(user=user, key="birthday").value == "1990-12-31"


def test_input_gives_up_after_max_attempts(project, user):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "Age?",
                    "variable": "age",
                    "validate": {"type": "integer", "min": 1, "max": 120},
                    "max_attempts": 2,
                    "next": "ok",
                    "on_fail": "gave_up",
                },
                "ok": {"type": "end"},
                "gave_up": {"type": "message", "text": "Let's try another time"},
            },
        },
    )
    command(user, "start")
    assert "at most 120" in texts(text(user, "500"))[0]
    assert texts(text(user, "abc")) == ["Let's try another time"]
    assert not UserVariable.objects.filter(user=user, key="age").exists()
    assert WorkflowExecution.objects.get().status == Status.COMPLETED


def test_input_validation_kinds(project, user):
    from workflows.engine.steps.input import Invalid, answer_validate

    assert answer_validate({"type": "number", "min": 0}, "12,5") == 12.5
    assert answer_validate({"type": "phone"}, "+44 (20) 7946-0958") == "+442079460958"
    assert answer_validate({"type": "email"}, "Ann@Example.com") == "ann@example.com"
    assert answer_validate({"type": "regex", "pattern": r"[A-Z]{2}\d{4}"}, "AB1234") == "AB1234"
    assert answer_validate({"type": "text", "min": 2}, " Paris ") == "Paris"
    for rule, answer in [
        ({"type": "integer"}, "1.5"),
        ({"type": "phone"}, "12"),
        ({"type": "email"}, "nope"),
        ({"type": "regex", "pattern": r"\d+"}, "12a"),
        ({"type": "text", "max": 3}, "long"),
        ({"type": "date"}, "31.02.2000"),
    ]:
        try:
            answer_validate(rule, answer)
        except Invalid:
            continue
        raise AssertionError(f"{rule} accepted {answer!r}")


def test_condition_and_set_variable(project, user):
    publish(
        project,
        {
            "start": "count",
            "steps": {
                "count": {
                    "type": "set_variable",
                    "variable": "visits",
                    "operation": "increment",
                    "value": 1,
                    "next": "name",
                },
                "name": {
                    "type": "set_variable",
                    "variable": "greeting",
                    "value": "Hi {{ user.first_name }} & co",
                    "next": "check",
                },
                "check": {
                    "type": "condition",
                    "branches": [
                        {"if": "vars.visits >= 3", "next": "loyal"},
                        {"if": "vars.visits == 2", "next": "second"},
                    ],
                    "default": "first",
                },
                "first": {
                    "type": "message",
                    "text": "First visit, {{ vars.greeting }}",
                    "next": "drop",
                },
                "second": {"type": "message", "text": "Second visit", "next": "drop"},
                "loyal": {"type": "message", "text": "Visit {{ vars.visits }}", "next": "drop"},
                "drop": {
                    "type": "set_variable",
                    "variable": "visits",
                    "operation": "decrement",
                    "value": "0",
                },
            },
        },
    )
    assert texts(command(user, "start")) == ["First visit, Hi Ann &amp; co"]
    assert UserVariable.objects.get(user=user, key="greeting").value == "Hi Ann & co"
    assert texts(command(user, "start")) == ["Second visit"]
    assert texts(command(user, "start")) == ["Visit 3"]
    assert UserVariable.objects.get(user=user, key="visits").value == 3


def test_set_variable_delete(project, user):
    UserVariable.objects.create(user=user, key="city", value="Paris")
    publish(
        project,
        {
            "start": "d",
            "steps": {
                "d": {
                    "type": "set_variable",
                    "variable": "city",
                    "operation": "delete",
                    "next": "m",
                },
                "m": {"type": "message", "text": "[{{ vars.city }}]"},
            },
        },
    )
    assert texts(command(user, "start")) == ["[]"]
    assert not UserVariable.objects.filter(user=user, key="city").exists()


def test_start_workflow_and_end(project, user):
    publish(
        project,
        {
            "start": "m",
            "steps": {
                "m": {"type": "message", "text": "In the menu", "next": "e"},
                "e": {"type": "end"},
            },
        },
        slug="menu",
        triggers=[],
    )
    publish(project, {"start": "j", "steps": {"j": {"type": "start_workflow", "workflow": "menu"}}})
    assert texts(command(user, "start")) == ["In the menu"]
    statuses = sorted(WorkflowExecution.objects.values_list("workflow__slug", "status"))
    assert statuses == [("menu", "completed"), (statuses[1][0], "completed")]


def test_failing_step_marks_failed_logs_and_sends_fallback(project, user):
    project.fallback_message = "Oops <sorry>"
    project.save(update_fields=["fallback_message"])
    menu = publish(
        project, {"start": "e", "steps": {"e": {"type": "end"}}}, slug="menu", triggers=[]
    )
    publish(
        project,
        {
            "start": "m",
            "steps": {
                "m": {"type": "message", "text": "one", "next": "j"},
                "j": {"type": "start_workflow", "workflow": "menu"},
            },
        },
    )
    # "menu" existed at publish time but is switched off now.
    menu.is_active = False
    menu.save(update_fields=["is_active"])
    result = command(user, "start")
    assert texts(result) == ["one", "Oops &lt;sorry&gt;"]
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.FAILED
    assert "Step 'j' (start_workflow) failed" in execution.error and "'menu'" in execution.error


def test_step_log_records_input_output_duration(project, user):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "City?", "variable": "city", "next": "bye"},
                "bye": {"type": "message", "text": "Bye from {{ vars.city }}"},
            },
        },
    )
    command(user, "start")
    text(user, "Rome")
    logs = list(
        ExecutionStepLog.objects.order_by("id").values(
            "step", "step_type", "input", "output", "error", "duration_ms"
        )
    )
    assert [(log["step"], log["step_type"]) for log in logs] == [
        ("ask", "input"),
        ("ask", "input"),
        ("bye", "message"),
    ]
    assert logs[0]["input"] == {"event": "command", "command": "start"}
    assert (
        logs[1]["input"] == {"event": "text", "text": "Rome"}
        and logs[1]["output"]["value"] == "Rome"
    )
    assert logs[2]["output"] == {"text": "Bye from Rome"}
    assert all(log["duration_ms"] >= 0 and log["error"] == "" for log in logs)


def test_max_steps_guard_stops_a_runaway_chain(project, user):
    from workflows.publishing import workflow_publish

    # A chain of jumps between two workflows (not caught by one graph's validation).
    a = publish(project, {"start": "e", "steps": {"e": {"type": "end"}}}, slug="a", triggers=[])
    publish(
        project,
        {"start": "j", "steps": {"j": {"type": "start_workflow", "workflow": "a"}}},
        slug="b",
    )
    workflow_publish(
        workflow=a,
        definition={"start": "j", "steps": {"j": {"type": "start_workflow", "workflow": "b"}}},
    )
    result = command(user, "start")
    assert texts(result)[-1] == project.fallback_message
    failed = WorkflowExecution.objects.get(status=Status.FAILED)
    assert "more than 100 steps" in failed.error


def test_a_failing_write_is_rolled_back_and_earlier_steps_are_kept(project, user):
    UserVariable.objects.create(user=user, key="b", value="text")
    publish(
        project,
        {
            "start": "a",
            "steps": {
                "a": {"type": "set_variable", "variable": "a", "value": 1, "next": "inc"},
                "inc": {
                    "type": "set_variable",
                    "variable": "b",
                    "operation": "increment",
                    "value": 1,
                    "next": "never",
                },
                "never": {"type": "message", "text": "unreachable at run time"},
            },
        },
    )
    result = command(user, "start")
    assert texts(result) == [project.fallback_message]
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.FAILED and execution.current_step == "inc"
    assert (
        "Step 'inc' (set_variable) failed" in execution.error and "not a number" in execution.error
    )
    assert UserVariable.objects.get(user=user, key="a").value == 1
    assert UserVariable.objects.get(user=user, key="b").value == "text"
    failed_log = ExecutionStepLog.objects.get(step="inc")
    assert "not a number" in failed_log.error


def test_the_stale_button_answer_is_the_projects_own_text(project, user):
    """The pop-up is per project and editable: a bot without /start must not say /start."""
    project.stale_button_message = "Этой кнопки больше нет. Напишите «меню»."
    project.save(update_fields=["stale_button_message"])
    user.project.refresh_from_db()
    result = press(user, "w:999999:1:0")
    assert result.actions[0].text == "Этой кнопки больше нет. Напишите «меню»."


def test_the_stale_button_text_fits_telegrams_callback_answer_limit(project):
    from botplatform.admin import ProjectForm

    form = ProjectForm(instance=project)
    assert form.fields["stale_button_message"].max_length == 200
    assert "/start" not in project.stale_button_message  # a bot may have no /start
