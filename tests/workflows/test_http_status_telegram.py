"""The HTTP step through the Telegram path with a real local HTTP server: the order
status branches on 404, status/headers/typed JSON go into variables, the request body
keeps its JSON types, and a save path missing from the example answer is a warning."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.workflows.conftest import publish
from tests.workflows.tgpath import Chat, chat, double, tg_bot  # noqa: F401 (fixtures)
from users.models import BotUser, UserVariable
from workflows.engine.validation import workflow_validate, workflow_warnings


class _Orders(BaseHTTPRequestHandler):
    bodies: list = []

    def _send(self, status: int, payload: object | None, headers: dict | None = None) -> None:
        raw = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        _Orders.bodies.append(json.loads(self.rfile.read(length) or b"null"))
        order = self.path.rsplit("/", 1)[-1]
        if order == "404":
            self._send(404, {"error": "no such order"})
        elif order == "500":
            self._send(503, {"error": "down"}, {"Retry-After": "120"})
        else:
            self._send(
                200,
                {"status": "shipped", "items": [1, 2], "paid": True, "total": 12.5},
                {"X-Request-Id": "r-77"},
            )

    def log_message(self, *args):
        pass


@pytest.fixture
def orders_api(project):
    project.allow_private_http = True
    project.save(update_fields=["allow_private_http"])
    _Orders.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Orders)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def order_status(base: str) -> dict:
    return {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "input",
                "text": "Order number?",
                "variable": "order",
                "validate": {"type": "integer"},
                "next": "call",
            },
            "call": {
                "type": "http_request",
                "method": "POST",
                "url": base + "/orders/{{ vars.order }}",
                "body": {"order": "{{ vars.order }}", "zip": "{{ vars.order | text }}"},
                "timeout": 2,
                "retries": 0,
                "save": {"state": "status", "items": "items", "paid": "paid", "total": "total"},
                "save_status": "code",
                "save_headers": {"request_id": "X-Request-Id", "retry": "Retry-After"},
                "save_error": "why",
                "on_status": {"404": "missing", "5xx": "later"},
                "on_success": "shown",
                "on_failure": "failed",
            },
            "shown": {
                "type": "message",
                "text": "{{ vars.state }}: {{ length(vars.items) }} items, "
                "paid {{ vars.paid }}, total {{ vars.total * 2 }} ({{ vars.code }}, "
                "{{ vars.request_id }})",
            },
            "missing": {"type": "message", "text": "No order {{ vars.order }} ({{ vars.code }})"},
            "later": {"type": "message", "text": "Try in {{ vars.retry }} s: {{ vars.why }}"},
            "failed": {"type": "message", "text": "failed: {{ vars.why }}"},
        },
    }


def _ask(chat: Chat, answer: str, capture) -> list[str]:  # noqa: F811
    before = len(chat.double.sent_texts(chat.bot.token, chat.chat_id))
    with capture(execute=True):  # the request runs after the update's commit
        chat.say(answer)
    return chat.since(before)


def test_the_order_status_branches_on_404_and_5xx(
    project,
    chat: Chat,  # noqa: F811
    orders_api,
    django_capture_on_commit_callbacks,
):
    publish(project, order_status(orders_api))
    assert chat.say("/start") == ["Order number?"]
    assert _ask(chat, "1041", django_capture_on_commit_callbacks) == [
        "shipped: 2 items, paid yes, total 25 (200, r-77)"
    ]
    user = BotUser.objects.get(telegram_id=chat.chat_id)
    saved = dict(UserVariable.objects.filter(user=user).values_list("key", "value"))
    assert saved["items"] == [1, 2] and saved["paid"] is True and saved["total"] == 12.5
    assert saved["code"] == 200 and "why" not in saved
    # The request body kept its types: a number, and a text where | text asked for one.
    assert _Orders.bodies[-1] == {"order": 1041, "zip": "1041"}

    chat.say("/start")
    assert _ask(chat, "404", django_capture_on_commit_callbacks) == ["No order 404 (404)"]
    assert UserVariable.objects.get(user=user, key="why").value == "HTTP 404"
    assert UserVariable.objects.get(user=user, key="state").value is None  # the 404's body

    chat.say("/start")
    assert _ask(chat, "500", django_capture_on_commit_callbacks) == ["Try in 120 s: HTTP 503"]


def test_without_a_matching_status_an_error_goes_to_on_failure(
    project,
    chat: Chat,  # noqa: F811
    orders_api,
    django_capture_on_commit_callbacks,
):
    definition = order_status(orders_api)
    definition["steps"]["call"]["on_status"] = {"2xx": "shown"}
    del definition["steps"]["missing"], definition["steps"]["later"]
    publish(project, definition)
    chat.say("/start")
    assert _ask(chat, "404", django_capture_on_commit_callbacks) == ["failed: HTTP 404"]


def test_a_save_path_missing_from_the_example_answer_is_a_publish_warning():
    definition = order_status("https://api.example.com")
    call = definition["steps"]["call"]
    call["save"] = {"state": "data.status", "total": "total"}
    call["example_response"] = {"status": "shipped", "total": 1}
    workflow_validate(definition)  # a warning, not an error
    [warning] = workflow_warnings(definition)
    assert warning.step == "call"
    assert "'save' state: the path 'data.status' finds nothing in the example response" in str(
        warning
    )
    assert "top-level fields: status, total" in str(warning)
    call["save"] = {"state": "status"}
    assert workflow_warnings(definition) == []


@pytest.mark.parametrize(
    ("on_status", "fragment"),
    [({"40": "missing"}, "'on_status' 40: a status like 404"), ({"404": "nope"}, "nope")],
)
def test_bad_status_branches_are_refused_at_publish(on_status, fragment):
    from workflows.engine.validation import WorkflowValidationError

    definition = order_status("https://api.example.com")
    definition["steps"]["call"]["on_status"] = on_status
    with pytest.raises(WorkflowValidationError) as info:
        workflow_validate(definition)
    assert fragment in str(info.value)
