"""What the Bot API client puts on the wire: a POST's parameters as a form body, byte
for byte as requests would encode them; a GET's in the query; cookies, auth and
anything unusual still handled by requests itself."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from requests.models import RequestEncodingMixin

from botplatform.telegram import client
from botplatform.telegram.client import api

TOKEN = "123:AAHsecret"


class Recorder:
    """A tiny HTTP server that records each request raw and answers ``{"ok": true}``."""

    def __init__(self, *, set_cookie: str = "") -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length) if length else b"",
                    }
                )
                data = json.dumps({"ok": True, "result": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if set_cookie:
                    self.send_header("Set-Cookie", set_cookie)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fresh_session(monkeypatch):
    monkeypatch.setattr(client, "_sessions", threading.local())


@pytest.fixture
def recorder(settings, fresh_session):
    server = Recorder()
    settings.TELEGRAM_API_URL = server.url
    yield server
    server.stop()


PARAMS = {
    "chat_id": -1001234567890,
    "text": "Привет <b>& welcome</b> 100% + ?=/#",
    "reply_markup": json.dumps({"inline_keyboard": [[{"text": "Ja", "callback_data": "y"}]]}),
    "parse_mode": "HTML",
    "disable_notification": True,
    "show_alert": False,
    "cache_time": 1.5,
    "message_thread_id": None,
}


def test_the_form_body_is_what_requests_would_have_encoded():
    assert client._form_encode(PARAMS).decode() == RequestEncodingMixin._encode_params(PARAMS)


def test_a_value_that_is_not_a_plain_scalar_is_left_to_requests():
    assert client._form_encode({"chat_id": 1, "ids": [1, 2]}) is None


def test_a_post_sends_its_parameters_as_a_form_body(recorder):
    markup = {"inline_keyboard": [[{"text": "Ja", "callback_data": "yes"}]]}
    api().send_message(TOKEN, 42, "Grüße <b>1 + 1</b>", reply_markup=json.dumps(markup))
    (request,) = recorder.requests
    assert request["method"] == "POST"
    assert request["path"] == f"/bot{TOKEN}/sendMessage"  # nothing in the query string
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request["body"].decode(), strict_parsing=True)
    assert form["chat_id"] == ["42"]
    assert form["text"] == ["Grüße <b>1 + 1</b>"]
    assert json.loads(form["reply_markup"][0]) == markup


def test_a_get_keeps_its_parameters_in_the_query(recorder):
    api().get_updates(TOKEN, offset=7, limit=5, timeout=1)
    (request,) = recorder.requests
    assert request["method"] == "GET"
    parts = urlsplit(request["path"])
    assert parts.path == f"/bot{TOKEN}/getUpdates"
    assert parse_qs(parts.query)["offset"] == ["7"]
    assert request["body"] == b""


def test_a_list_parameter_goes_the_way_requests_sends_it(recorder):
    client._request_send(
        "post", f"{recorder.url}/bot{TOKEN}/x", params={"chat_id": 1, "ids": [1, 2]}
    )
    (request,) = recorder.requests
    assert parse_qs(urlsplit(request["path"]).query) == {"chat_id": ["1"], "ids": ["1", "2"]}


def test_a_cookie_the_server_sets_is_sent_back(settings, fresh_session):
    server = Recorder(set_cookie="lb=node-2; Path=/")
    settings.TELEGRAM_API_URL = server.url
    try:
        api().answer_callback_query(TOKEN, "q1")
        api().answer_callback_query(TOKEN, "q2")
    finally:
        server.stop()
    first, second = server.requests
    assert "Cookie" not in first["headers"]
    assert second["headers"].get("Cookie") == "lb=node-2"
    assert parse_qs(second["body"].decode())["callback_query_id"] == ["q2"]


def test_the_sessions_auth_is_applied(recorder):
    client._session_for(recorder.url).auth = ("user", "pass")
    api().answer_callback_query(TOKEN, "q1")
    (request,) = recorder.requests
    assert request["headers"]["Authorization"] == "Basic dXNlcjpwYXNz"


def test_parameters_that_are_all_none_send_nothing(recorder):
    client._request_send("post", f"{recorder.url}/bot{TOKEN}/x", params={"text": None})
    (request,) = recorder.requests
    assert (request["path"], request["body"]) == (f"/bot{TOKEN}/x", b"")
