"""The HTTP step against hostile user values and misbehaving servers.

Whatever a user typed and whatever the server does, the request is either sent with
the value as data (never as URL structure or an extra header) or refused, and the
execution always ends: ``on_failure`` with the reason in ``vars.http_error``. The
servers are real ones on loopback (the project allows private addresses for them).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.db import DatabaseError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from botplatform.conversation import SendMessage
from tests.tls import certificate
from tests.workflows.conftest import command, publish, texts
from users.models import UserVariable
from workflows import services, tasks
from workflows.engine.steps import http_client
from workflows.engine.steps.http_request import RequestRefused, request_build
from workflows.engine.validation import WorkflowValidationError, workflow_validate
from workflows.models import WorkflowExecution

Status = WorkflowExecution.Status
DRIP_BYTES = 40  # at one byte per DRIP_PAUSE: 20 s for a request whose timeout is 2 s
DRIP_PAUSE = 0.5


class _Handler(BaseHTTPRequestHandler):
    """Routes by the first path segment; ``/echo`` records what arrived."""

    seen: list[dict] = []
    stop = threading.Event()

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        route = self.path.split("?")[0].strip("/").split("/")[0]
        _Handler.seen.append({"path": self.path, "headers": self.headers, "body": body})
        getattr(self, f"_{route.replace('-', '_')}", self._echo)()

    do_POST = do_GET

    def _json(self, payload: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _echo(self):
        self._json(json.dumps({"data": {"city": "Paris"}}).encode())

    def _nul(self):
        self._json(b'{"data": {"city": "Pa\\u0000ris"}}')

    def _html(self):
        self._json(b"<html>not json</html>")

    def _big(self):
        self._json(b'"' + b"x" * 1_500_000 + b'"')

    def _big_unannounced(self):
        """No Content-Length: the body ends when the connection closes."""
        self.send_response(200)
        self.end_headers()
        for _ in range(30):
            self.wfile.write(b"x" * 65536)

    def _cut_length(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"data": ')  # and the connection closes

    def _cut_chunked(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{}")

    def _drip(self, data: bytes) -> None:
        for byte in data:
            if _Handler.stop.wait(DRIP_PAUSE):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return  # the client hung up: what the deadline is for

    def _drip_body(self):
        self.send_response(200)
        self.send_header("Content-Length", str(DRIP_BYTES))
        self.end_headers()
        self.wfile.flush()
        self._drip(b"1" * DRIP_BYTES)

    def _drip_head(self):
        head = b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * DRIP_BYTES + b"\r\n\r\n{}"
        self._drip(head)

    def log_message(self, *args):
        pass


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return thread


@pytest.fixture(scope="module")
def server():
    _Handler.stop.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _serve(httpd)
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def seen(server):
    _Handler.seen = []
    return _Handler.seen


@pytest.fixture
def private_ok(project):
    project.allow_private_http = True
    project.save(update_fields=["allow_private_http"])
    return project


def workflow(url: str, **extra) -> dict:
    return {
        "start": "call",
        "steps": {
            "call": {
                "type": "http_request",
                "url": url,
                "timeout": 2,
                "retries": 0,
                "save": {"city": "data.city"},
                "on_success": "ok",
                "on_failure": "failed",
                **extra,
            },
            "ok": {"type": "message", "text": "OK {{ vars.city }}"},
            "failed": {"type": "message", "text": "Sorry: {{ vars.http_error }}"},
        },
    }


def run(project, user, delivered, capture, definition: dict) -> list[str]:
    """Start the workflow with the HTTP task run at once; the texts the user got."""
    publish(project, definition)
    with capture(execute=True):
        answered = texts(command(user, "start"))  # refused at once: in the user's event
    return answered + [
        a.text for d in delivered for a in d["actions"] if isinstance(a, SendMessage)
    ]


def http_error(user) -> str:
    return UserVariable.objects.get(user=user, key="http_error").value


def set_var(user, key: str, value) -> None:
    UserVariable.objects.create(user=user, key=key, value=value)


# --- User values in the URL and the headers ------------------------------------------


def test_a_value_with_a_space_and_a_line_break_arrives_encoded(
    private_ok, user, delivered, seen, server, django_capture_on_commit_callbacks
):
    set_var(user, "name", "New York\nNY & Co/#1")
    url = server + "/echo/{{ vars.name }}?name={{ vars.name }}&page=1"
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, workflow(url))
    assert got == ["OK Paris"]
    [request] = seen
    path, _, query = request["path"].partition("?")
    assert path == "/echo/New%20York%0ANY%20%26%20Co%2F%231"
    assert parse_qs(query) == {"name": ["New York\nNY & Co/#1"], "page": ["1"]}
    assert WorkflowExecution.objects.get().status == Status.COMPLETED


def test_a_line_break_in_a_header_goes_to_on_failure_and_is_never_sent(
    private_ok, user, delivered, seen, server, django_capture_on_commit_callbacks
):
    set_var(user, "name", "Ann\r\nX-Admin: yes")
    definition = workflow(server + "/echo", headers={"X-Name": "{{ vars.name }}"})
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert seen == []  # refused before any connection
    assert len(got) == 1 and got[0].startswith("Sorry: header 'X-Name'")
    assert "line break" in http_error(user)
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.COMPLETED
    log = execution.step_logs.get(step="call")
    assert "line break" in log.output["response"]["error"]


def test_a_utf8_header_value_is_sent_as_utf8(
    private_ok, user, delivered, seen, server, django_capture_on_commit_callbacks
):
    set_var(user, "name", "Дмитрий")
    definition = workflow(server + "/echo", headers={"X-Name": "{{ vars.name }}"})
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert got == ["OK Paris"]
    raw = seen[0]["headers"]["X-Name"]  # the server decodes header bytes as Latin-1
    assert raw.encode("latin-1").decode() == "Дмитрий"


def test_publishing_refuses_broken_header_names_and_literal_line_breaks():
    definition = workflow(
        "https://api.example.com/x\n",
        headers={"X Name": "a", "X-Ok": "line\r\nX-Evil: 1"},
    )
    with pytest.raises(WorkflowValidationError) as info:
        workflow_validate(definition)
    messages = [e.message for e in info.value.errors]
    assert any("'url' contains a line break" in m for m in messages)
    assert any("header 'X Name': a header name" in m for m in messages)
    assert any("header 'X-Ok': the value contains a line break" in m for m in messages)


# --- The deadline ------------------------------------------------------------------


@contextlib.contextmanager
def tls_serving(tmp_path, name: str, *alt: str):
    """An HTTPS server on 127.0.0.1 (same routes) with a certificate for ``name``."""
    cert, key = certificate(tmp_path, name, *alt)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    _serve(httpd)
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", cert
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("scheme", "route"), [("http", "drip-body"), ("http", "drip-head"), ("https", "drip-body")]
)
def test_a_dripping_server_is_cut_at_the_deadline(
    private_ok,
    user,
    delivered,
    seen,
    server,
    tmp_path,
    monkeypatch,
    django_capture_on_commit_callbacks,
    scheme,
    route,
):
    """Two seconds in total, not two seconds per byte: the drip would take 20 s."""
    with contextlib.ExitStack() as stack:
        base = server
        if scheme == "https":
            base, cert = stack.enter_context(tls_serving(tmp_path, "127.0.0.1", "IP:127.0.0.1"))
            monkeypatch.setenv("SSL_CERT_FILE", cert)  # the default context trusts it
        started = time.monotonic()
        got = run(
            private_ok,
            user,
            delivered,
            django_capture_on_commit_callbacks,
            workflow(f"{base}/{route}"),
        )
        elapsed = time.monotonic() - started
    assert elapsed < DRIP_BYTES * DRIP_PAUSE / 2  # generous: the deadline is 2 s
    assert got == ["Sorry: no complete answer within 2 s"]
    assert seen[0]["path"] == f"/{route}"  # it did connect (also through TLS)
    assert WorkflowExecution.objects.get().status == Status.COMPLETED


# --- Every client-side error ends in on_failure with the reason -----------------------


@pytest.mark.parametrize(
    ("route", "save", "reason"),
    [
        ("cut-length", {}, "the connection closed before the whole answer arrived"),
        ("cut-chunked", {}, "the connection closed before the whole answer arrived"),
        ("big", {}, "the answer is larger than 1000000 bytes"),
        ("big-unannounced", {}, "the answer is larger than 1000000 bytes"),
        ("html", {"city": "data.city"}, "the answer is not valid JSON"),
    ],
)
def test_a_broken_answer_goes_to_on_failure_with_the_reason(
    private_ok,
    user,
    delivered,
    seen,
    server,
    django_capture_on_commit_callbacks,
    route,
    save,
    reason,
):
    definition = workflow(f"{server}/{route}", save=save)
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert len(got) == 1 and got[0].startswith("Sorry: ") and reason in got[0]
    assert reason in http_error(user)
    assert WorkflowExecution.objects.get().status == Status.COMPLETED
    assert not UserVariable.objects.filter(user=user, key="city").exists()


def test_an_answer_that_is_not_json_is_fine_when_nothing_is_saved(
    private_ok, user, delivered, seen, server, django_capture_on_commit_callbacks
):
    set_var(user, "http_error", "an old failure")
    got = run(
        private_ok,
        user,
        delivered,
        django_capture_on_commit_callbacks,
        workflow(server + "/html", save={}),
    )
    assert got == ["OK "]
    assert not UserVariable.objects.filter(user=user, key="http_error").exists()


def test_a_nul_character_in_the_answer_is_stored_replaced(
    private_ok, user, delivered, seen, server, django_capture_on_commit_callbacks
):
    definition = workflow(server + "/nul", save={"city": "data.city"})
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert got == ["OK Pa\ufffdris"]
    assert UserVariable.objects.get(user=user, key="city").value == "Pa\ufffdris"


def test_an_unresolvable_host_goes_to_on_failure(
    private_ok, user, delivered, monkeypatch, django_capture_on_commit_callbacks
):
    def getaddrinfo(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    definition = workflow("https://shop.invalid/orders")
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert got == ["Sorry: cannot resolve shop.invalid: [Errno -2] Name or service not known"]


def test_a_refused_private_address_goes_to_on_failure(
    project, user, delivered, seen, server, django_capture_on_commit_callbacks
):
    got = run(project, user, delivered, django_capture_on_commit_callbacks, workflow(server))
    assert seen == []
    assert "private or loopback address" in got[0] and "private or loopback" in http_error(user)


def test_a_tls_certificate_for_another_name_goes_to_on_failure(
    private_ok, user, delivered, tmp_path, django_capture_on_commit_callbacks
):
    with tls_serving(tmp_path, "elsewhere.test") as (base, _):
        got = run(
            private_ok,
            user,
            delivered,
            django_capture_on_commit_callbacks,
            workflow(base + "/echo"),
        )
    assert got[0].startswith("Sorry: request failed: the TLS certificate check failed")


def test_an_exception_inside_the_request_ends_the_execution_via_on_failure(
    private_ok, user, delivered, monkeypatch, django_capture_on_commit_callbacks
):
    def explode(*args, **kwargs):
        raise RuntimeError("resolver crashed")

    monkeypatch.setattr(http_client, "addresses_resolve", explode)
    definition = workflow("https://api.example.com/orders")
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert got == ["Sorry: unexpected error: RuntimeError: resolver crashed"]
    assert WorkflowExecution.objects.get().status == Status.COMPLETED


def test_a_result_that_cannot_be_processed_still_reports_a_failure_once(
    private_ok, user, delivered, seen, server, monkeypatch, django_capture_on_commit_callbacks
):
    real = services.execution_timer_fire
    results: list[dict] = []

    def first_call_fails(**kwargs):
        results.append(kwargs["data"])
        if len(results) == 1:
            raise DatabaseError("simulated: the answer could not be stored")
        return real(**kwargs)

    monkeypatch.setattr(services, "execution_timer_fire", first_call_fails)
    definition = workflow(server + "/echo", save={"city": "data.city"})
    got = run(private_ok, user, delivered, django_capture_on_commit_callbacks, definition)
    assert got == ["Sorry: the answer could not be processed"]
    assert results[0]["ok"] is True and results[1]["ok"] is False
    execution = WorkflowExecution.objects.get()
    assert execution.status == Status.COMPLETED
    # A redelivered task (Celery may run it again) neither calls nor answers twice.
    tasks.http_request_run(execution.pk, 1)
    assert len(seen) == 1 and len(delivered) == 1


def test_a_stored_request_from_before_the_checks_is_sent_encoded(seen, server):
    """Requests queued by older code held raw URLs; the task checks them again."""
    request = {"method": "GET", "url": server + "/echo?q=New York", "retries": 0}
    result = http_client.http_perform(request, allow_private=True)
    assert result["ok"] is True
    assert seen[0]["path"] == "/echo?q=New%20York"
    bad = {"method": "GET", "url": server + "/echo", "headers": {"X": "a\nb"}}
    assert "line break" in http_client.http_perform(bad, allow_private=True)["error"]


# --- Hostile values, generated -----------------------------------------------------

hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(
        alphabet=st.sampled_from("\x00\r\n\t \x0b\x85\u2028\ud800\udfff%&=?#/@:\\\"'<>"),
        max_size=30,
    ),
    st.builds(lambda char, n: char * n, st.characters(), st.integers(2_000, 25_000)),
)

STEP = {
    "type": "http_request",
    "method": "POST",
    "url": "http://127.0.0.1:{port}/echo/{{{{ vars.v }}}}?q={{{{ vars.v }}}}&n=1",
    "headers": {"X-V": "{{ vars.v }}"},
    "body": {"v": "{{ vars.v }}", "list": ["{{ vars.v | upper }}"]},
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=hostile_text, base=hostile_text)
def test_hostile_values_are_sent_as_data_or_refused(server, value, base):
    """No exception but a refusal escapes, and what is sent carries the value intact."""
    port = urlsplit(server).port
    step = {**STEP, "url": STEP["url"].format(port=port)}
    context = {"user": {}, "vars": {"v": value, "base": base}, "bot": {}}
    # A value at the start of the URL (a base address) is used as written, then checked.
    try:
        built = request_build({**step, "url": "{{ vars.base }}/x?q={{ vars.v }}"}, context)
    except RequestRefused:
        pass
    else:
        assert built["url"].isascii() and not any(c <= " " or c == "\x7f" for c in built["url"])
    try:
        request = request_build(step, context)
    except RequestRefused as refused:
        assert str(refused)
        event("refused")
        return
    event("sent")
    assert "\r" not in request["headers"]["X-V"] and "\n" not in request["headers"]["X-V"]
    _Handler.seen = []
    result = http_client.http_perform({**request, "retries": 0}, allow_private=True)
    assert result["ok"] is True, result
    [arrived] = _Handler.seen
    path, _, query = arrived["path"].partition("?")
    assert unquote(path.removeprefix("/echo/")) == value
    assert parse_qs(query, keep_blank_values=True) == {"q": [value], "n": ["1"]}
    assert arrived["headers"].get_all("X-V") == [value.lstrip(" \t").encode().decode("latin-1")]
    assert json.loads(arrived["body"])["v"] == value
