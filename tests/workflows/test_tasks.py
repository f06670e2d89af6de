"""Delays, HTTP request steps, wait timeouts and the periodic sweep."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache
from django.utils import timezone

from botplatform.cache import workflow_waiting_key
from botplatform.conversation import AnswerCallback, SendMessage
from botplatform.periodic import InProcessBeat
from tests.botplatform.test_periodic import Clock
from tests.workflows.conftest import buttons, command, press, publish, texts
from users.models import UserVariable
from workflows import tasks
from workflows.models import WorkflowExecution

Status = WorkflowExecution.Status


def make_due(execution_id: int) -> None:
    WorkflowExecution.objects.filter(pk=execution_id).update(
        wait_until=timezone.now() - timedelta(seconds=1)
    )


def delivered_texts(delivered) -> list[str]:
    return [a.text for d in delivered for a in d["actions"] if isinstance(a, SendMessage)]


DELAY = {
    "start": "before",
    "steps": {
        "before": {"type": "message", "text": "See you later", "next": "wait"},
        "wait": {"type": "delay", "minutes": 10, "next": "after"},
        "after": {"type": "message", "text": "Reminder for {{ user.first_name }}"},
    },
}


def test_delay_continues_once_when_due(
    project, user, bot, delivered, django_capture_on_commit_callbacks
):
    publish(project, DELAY)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = command(user, "start", bot=bot)
    assert texts(result) == ["See you later"]
    assert len(callbacks) == 1  # the ETA task was queued after commit (and ran early: no-op)
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.RUNNING and execution.context["pending"]["kind"] == "delay"
    due = execution.wait_until - timezone.now()
    assert timedelta(minutes=9) < due <= timedelta(minutes=10)
    assert delivered == []
    # Not due yet: the task and the sweep leave it alone.
    tasks.delay_continue(execution.pk, execution.context["pending"]["seq"])
    tasks.executions_sweep()
    assert delivered == []
    # Due (e.g. the worker was down when the ETA passed): the sweep catches it.
    make_due(execution.pk)
    assert tasks.executions_sweep() == {"expired": 0, "overdue": 1}
    assert delivered == [
        {
            "bot_id": bot.pk,
            "chat_id": user.chat_id,
            "actions": [SendMessage(chat_id=user.chat_id, text="Reminder for Ann")],
        }
    ]
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED
    # A late duplicate of the ETA task changes nothing.
    tasks.delay_continue(execution.pk, 1)
    tasks.executions_sweep()
    assert len(delivered) == 1


def test_long_delays_are_left_to_the_sweep(
    project, user, delivered, django_capture_on_commit_callbacks
):
    definition = json.loads(json.dumps(DELAY))
    definition["steps"]["wait"] = {"type": "delay", "days": 2, "next": "after"}
    publish(project, definition)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        command(user, "start")
    assert callbacks == []  # no multi-day ETA task sitting in the broker
    execution = WorkflowExecution.objects.get()
    assert execution.wait_until - timezone.now() > timedelta(days=1, hours=23)


def test_waiting_for_the_user_times_out_to_its_branch(project, user, delivered):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "City?",
                    "variable": "city",
                    "timeout": 30,
                    "on_timeout": "late",
                    "next": "ok",
                },
                "ok": {"type": "end"},
                "late": {"type": "message", "text": "Too slow"},
            },
        },
    )
    command(user, "start")
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.WAITING
    assert timedelta(seconds=25) < execution.wait_until - timezone.now() <= timedelta(seconds=30)
    assert tasks.executions_sweep() == {"expired": 0, "overdue": 0}
    make_due(execution.pk)
    assert tasks.executions_sweep()["expired"] == 1
    assert delivered_texts(delivered) == ["Too slow"]
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED
    assert cache.get(workflow_waiting_key(execution.session_key)) is None
    tasks.execution_expire(execution.pk)
    assert len(delivered) == 1


def test_timeout_without_branch_cancels_and_buttons_go_stale(project, user, delivered):
    publish(
        project,
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "Pick",
                    "timeout": 60,
                    "buttons": [[{"text": "A", "next": "a"}]],
                },
                "a": {"type": "message", "text": "A"},
            },
        },
    )
    shown = buttons(command(user, "start"))
    execution = WorkflowExecution.objects.get()
    make_due(execution.pk)
    tasks.executions_sweep()
    execution.refresh_from_db()
    assert execution.status == Status.CANCELLED and "timed out" in execution.error
    assert delivered == []
    late = press(user, shown["A"], query_id="late")
    assert late.actions == [
        AnswerCallback(
            callback_query_id="late",
            text="This button is no longer active.",
        )
    ]


class _Handler(BaseHTTPRequestHandler):
    calls: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        _Handler.calls.append(
            {
                "method": self.command,
                "path": self.path,
                "body": body,
                "auth": self.headers.get("Authorization"),
            }
        )
        if self.path.startswith("/fail"):
            self.send_response(503)
            self.end_headers()
            return
        payload = json.dumps({"data": {"city": "Paris", "items": [{"name": "first"}]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    _Handler.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def http_workflow(url: str, **extra) -> dict:
    return {
        "start": "call",
        "steps": {
            "call": {
                "type": "http_request",
                "method": "POST",
                "url": url,
                "headers": {"Authorization": "Bearer {{ vars.token }}"},
                "body": {"user": "{{ user.first_name }}", "n": 1},
                "timeout": 2,
                "retries": 1,
                "save": {"city": "data.city", "first": "data.items.0.name"},
                "on_success": "ok",
                "on_failure": "failed",
                **extra,
            },
            "ok": {"type": "message", "text": "You live in {{ vars.city }} ({{ vars.first }})"},
            "failed": {"type": "message", "text": "The service is unavailable"},
        },
    }


def test_http_request_step_success(
    project, user, delivered, http_server, django_capture_on_commit_callbacks
):
    project.allow_private_http = True
    project.save(update_fields=["allow_private_http"])
    UserVariable.objects.create(user=user, key="token", value="t0k")
    publish(project, http_workflow(http_server + "/lookup?u={{ user.id }}"))
    with django_capture_on_commit_callbacks(execute=True):
        result = command(user, "start")
    assert texts(result) == []  # the answer comes asynchronously
    assert delivered_texts(delivered) == ["You live in Paris (first)"]
    [call] = _Handler.calls
    assert call["method"] == "POST" and call["path"] == f"/lookup?u={user.pk}"
    assert json.loads(call["body"]) == {"user": "Ann", "n": 1} and call["auth"] == "Bearer t0k"
    assert UserVariable.objects.get(user=user, key="city").value == "Paris"
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.COMPLETED
    # A duplicate task for the same request does nothing.
    tasks.http_request_run(execution.pk, 1)
    assert len(_Handler.calls) == 1


def test_http_request_failure_retries_then_branches(
    project, user, delivered, http_server, django_capture_on_commit_callbacks
):
    project.allow_private_http = True
    project.save(update_fields=["allow_private_http"])
    publish(project, http_workflow(http_server + "/fail"))
    with django_capture_on_commit_callbacks(execute=True):
        command(user, "start")
    assert len(_Handler.calls) == 2  # one try and one retry
    assert delivered_texts(delivered) == ["The service is unavailable"]


def test_http_request_refuses_private_addresses_by_default(
    project, user, delivered, http_server, django_capture_on_commit_callbacks
):
    publish(project, http_workflow(http_server + "/lookup"))
    with django_capture_on_commit_callbacks(execute=True):
        command(user, "start")
    assert _Handler.calls == []
    assert delivered_texts(delivered) == ["The service is unavailable"]
    log = WorkflowExecution.objects.get().step_logs.filter(step="call").last()
    assert "private or loopback" in log.output["response"]["error"]


def test_lost_http_task_is_requeued_by_the_sweep(
    project, user, delivered, http_server, django_capture_on_commit_callbacks
):
    project.allow_private_http = True
    project.save(update_fields=["allow_private_http"])
    publish(project, http_workflow(http_server + "/lookup"))
    with django_capture_on_commit_callbacks(execute=False):
        command(user, "start")  # the broker "loses" the task
    execution = WorkflowExecution.objects.get()
    make_due(execution.pk)
    tasks.executions_sweep()  # eager in tests: re-queued and run
    assert delivered_texts(delivered) == ["You live in Paris (first)"]


def test_the_sweep_is_scheduled_every_minute(settings):
    from botplatform.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["workflows-executions-sweep"]
    assert entry["schedule"] == 60.0
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks


def test_a_due_delay_continues_through_the_in_process_schedule(
    settings,
    project,
    user,
    bot,
    delivered,
):
    assert settings.CELERY_TASK_ALWAYS_EAGER  # as in the embedded default
    publish(project, DELAY)
    assert texts(command(user, "start", bot=bot)) == ["See you later"]
    execution = WorkflowExecution.objects.get()
    make_due(execution.pk)
    clock = Clock()
    beat = InProcessBeat(clock=clock)
    assert beat.run_due() == []  # nothing before its first interval
    assert delivered == []
    clock.now += 60
    assert "workflows-executions-sweep" in beat.run_due()
    assert delivered_texts(delivered) == ["Reminder for Ann"]
    assert WorkflowExecution.objects.get().status == WorkflowExecution.Status.COMPLETED
    assert beat.run_due() == []  # once per interval
