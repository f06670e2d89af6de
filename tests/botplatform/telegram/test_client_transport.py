"""The lean transport under telebot: one keep-alive http.client connection per thread
for plain calls, requests for everything else, and failures as requests names them."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import ssl
import threading
import time

import pytest
import requests
from telebot.apihelper import ApiHTTPException, ApiTelegramException

from botplatform.telegram import client
from botplatform.telegram.client import api, error_classify
from tests.tls import certificate

TOKEN = "123:AAHsecret"
OK = json.dumps({"ok": True, "result": True}).encode()


def _answer(status: int = 200, body: bytes = OK, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class RawServer:
    """A loopback HTTP/1.1 server that counts TCP connections and requests.

    ``respond(request)`` gives the bytes to answer with, or None to close the
    connection without answering; ``close_after_answer`` closes each connection once
    it has answered (as a server whose keep-alive timeout ran out would), without
    saying so in the answer. ``tls`` serves HTTPS with that server context.
    """

    def __init__(self, respond=None, *, close_after_answer=False, tls=None) -> None:
        self.respond = respond or (lambda request: _answer())
        self.close_after_answer = close_after_answer
        self.tls = tls
        self.connections = 0
        self.requests: list[dict] = []
        self.closed = threading.Event()  # set each time the server closes a connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, self.connections), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            reader = sock.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (line := reader.readline()) not in (b"\r\n", b""):
                    name, value = line.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", 0)))
                request = {"connection": number, "method": method, "path": path}
                request |= {"headers": headers, "body": body}
                self.requests.append(request)
                answer = self.respond(request)
                if answer is None:
                    return
                sock.sendall(answer)
                if self.close_after_answer:
                    return
        except (OSError, ValueError):
            return
        finally:
            sock.close()
            self.closed.set()

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def fresh(monkeypatch):
    """No proxies, no CA bundle, no netrc from the environment; this thread starts anew."""
    monkeypatch.setattr(client, "_sessions", threading.local())
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")


@pytest.fixture
def no_requests(monkeypatch):
    """Fail the test if a call goes through requests' session."""

    def refuse(*args, **kwargs):
        raise AssertionError("the call went through requests")

    monkeypatch.setattr(requests.Session, "send", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)


@pytest.fixture
def requests_calls(monkeypatch):
    """Count the calls that go through requests' session (and let them go)."""
    calls = []
    send = requests.Session.send

    def counting(self, request, **kwargs):
        calls.append(request.url)
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counting)
    return calls


@pytest.fixture
def writes(monkeypatch):
    """Count the requests written on lean connections (a retry writes one more)."""
    written = []
    request = http.client.HTTPConnection.request

    def counting(self, method, url, *args, **kwargs):
        written.append(url)
        return request(self, method, url, *args, **kwargs)

    monkeypatch.setattr(http.client.HTTPConnection, "request", counting)
    return written


@pytest.fixture
def server(settings, fresh):
    raw = RawServer()
    settings.TELEGRAM_API_URL = raw.url
    yield raw
    raw.stop()


def _use(settings, raw: RawServer) -> RawServer:
    settings.TELEGRAM_API_URL = raw.url
    return raw


# --- which way a call goes ---


def test_a_plain_call_does_not_go_through_requests(double, fresh, no_requests):
    double.bot_add(TOKEN)
    api().send_message(TOKEN, 42, "Hallo <b>1 + 1</b>", parse_mode="HTML")
    api().answer_callback_query(TOKEN, "q1", text="ok")
    (sent,) = double.calls_of("sendMessage")
    assert sent.params["text"] == "Hallo <b>1 + 1</b>"
    assert len(double.calls_of("answerCallbackQuery")) == 1


def test_what_the_lean_path_puts_on_the_wire(server, no_requests):
    markup = json.dumps({"inline_keyboard": [[{"text": "Ja", "callback_data": "y"}]]})
    api().send_message(TOKEN, 42, "Grüße & 100%", reply_markup=markup)
    api().get_updates(TOKEN, offset=7, limit=5, timeout=1)
    post, get = server.requests
    assert (post["method"], post["path"]) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert post["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert post["headers"]["accept-encoding"] == "identity"  # no compression asked for
    assert post["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert post["body"] == client._form_encode(
        {"chat_id": 42, "text": "Grüße & 100%", "reply_markup": markup}
    )
    assert get["method"] == "GET"
    assert get["path"].startswith(f"/bot{TOKEN}/getUpdates?")
    assert "offset=7" in get["path"] and get["body"] == b""


def test_a_proxy_in_the_environment_sends_the_call_through_requests(
    settings, fresh, monkeypatch, requests_calls
):
    """The proxy is a RawServer: the call reaches it as a proxy request."""
    proxy = RawServer()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    settings.TELEGRAM_API_URL = "http://bot-api.invalid"
    try:
        api().answer_callback_query(TOKEN, "q1")
    finally:
        proxy.stop()
    (request,) = proxy.requests
    assert request["path"] == f"http://bot-api.invalid/bot{TOKEN}/answerCallbackQuery"
    assert len(requests_calls) == 1


def test_a_telebot_proxy_sends_the_call_through_requests(server, monkeypatch, requests_calls):
    monkeypatch.setattr(client.apihelper, "proxy", {"http": server.url})
    api().answer_callback_query(TOKEN, "q1")
    assert len(requests_calls) == 1 and len(server.requests) == 1


def test_netrc_auth_sends_the_call_through_requests(server, tmp_path, monkeypatch, requests_calls):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password pass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    api().answer_callback_query(TOKEN, "q1")
    (request,) = server.requests
    assert request["headers"]["authorization"] == "Basic dXNlcjpwYXNz"
    assert len(requests_calls) == 1


def test_an_upload_goes_through_requests(server, requests_calls):
    client._request_send(
        "post", f"{server.url}/bot{TOKEN}/sendDocument", params={"chat_id": 1},
        files={"document": ("a.txt", b"hello")},
    )  # fmt: skip
    (request,) = server.requests
    assert request["headers"]["content-type"].startswith("multipart/form-data")
    assert len(requests_calls) == 1


# --- keep-alive ---


def test_many_calls_share_one_connection(server, no_requests):
    for i in range(20):
        api().answer_callback_query(TOKEN, f"q{i}")
    assert len(server.requests) == 20
    assert server.connections == 1


def test_each_thread_has_its_own_connection(server):
    api().answer_callback_query(TOKEN, "main")
    worker = threading.Thread(target=lambda: api().answer_callback_query(TOKEN, "worker"))
    worker.start()
    worker.join()
    api().answer_callback_query(TOKEN, "main again")
    assert len(server.requests) == 3
    assert server.connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced(
    settings, fresh, no_requests, writes
):
    """The close is seen before sending: a new connection, each request sent once."""
    raw = _use(settings, RawServer(close_after_answer=True))
    try:
        api().answer_callback_query(TOKEN, "q1")
        assert raw.closed.wait(5)
        time.sleep(0.05)  # the FIN reaches the client
        assert api().answer_callback_query(TOKEN, "q2") is True
    finally:
        raw.stop()
    assert [r["connection"] for r in raw.requests] == [1, 2]
    assert len(writes) == 2  # nothing written on the closed connection, nothing retried
    assert [r["body"] for r in raw.requests] == [b"callback_query_id=q1", b"callback_query_id=q2"]


def test_a_close_crossing_the_request_is_retried_once_on_a_fresh_connection(
    settings, fresh, monkeypatch, no_requests, writes
):
    """The race the idle check cannot see: the request goes out on a connection the
    server already closed. It never reached the server; it is sent again, once."""
    raw = _use(settings, RawServer(close_after_answer=True))
    monkeypatch.setattr(client, "_lean_idle_ok", lambda conn: conn.sock is not None)
    try:
        api().answer_callback_query(TOKEN, "q1")
        assert raw.closed.wait(5)
        time.sleep(0.05)
        assert api().answer_callback_query(TOKEN, "q2") is True
    finally:
        raw.stop()
    assert [r["body"] for r in raw.requests] == [b"callback_query_id=q1", b"callback_query_id=q2"]
    assert raw.connections == 2
    assert len(writes) == 3  # q2 written on the dead connection, then again on a new one


def test_a_failure_on_a_fresh_connection_is_not_retried(settings, fresh, writes):
    raw = _use(settings, RawServer(respond=lambda request: None))  # reads, then hangs up
    try:
        with pytest.raises(requests.exceptions.ConnectionError) as excinfo:
            api().send_message(TOKEN, 1, "once")
    finally:
        raw.stop()
    assert len(raw.requests) == 1 and raw.connections == 1 and len(writes) == 1
    assert error_classify(excinfo.value).kind == "network"


def test_a_second_failure_after_the_retry_is_raised(settings, fresh, monkeypatch, writes):
    answers = iter([_answer()])
    raw = _use(settings, RawServer(respond=lambda request: next(answers, None)))
    monkeypatch.setattr(client, "_lean_idle_ok", lambda conn: conn.sock is not None)
    try:
        api().answer_callback_query(TOKEN, "q1")
        with pytest.raises(requests.exceptions.ConnectionError):
            api().answer_callback_query(TOKEN, "q2")
    finally:
        raw.stop()
    assert raw.connections == 2  # the reused one, then one fresh one: no third attempt
    assert len(writes) == 3


# --- timeouts and network errors ---


def test_a_read_timeout_is_a_network_error(settings, fresh):
    settings.TELEGRAM_HTTP_TIMEOUT = 1
    raw = _use(settings, RawServer(respond=lambda request: time.sleep(3) or _answer()))
    started = time.monotonic()
    try:
        with pytest.raises(requests.exceptions.ReadTimeout) as excinfo:
            api().answer_callback_query(TOKEN, "q1")
    finally:
        raw.stop()
    assert time.monotonic() - started < 2.5
    error = error_classify(excinfo.value)
    assert (error.kind, error.transient) == ("network", True)
    assert len(raw.requests) == 1  # a timeout is not retried


def test_the_read_timeout_not_the_connect_timeout_bounds_the_wait(server):
    server.respond = lambda request: time.sleep(0.4) or _answer()
    url = f"{server.url}/bot{TOKEN}/getMe"
    response = client._request_send("get", url, timeout=(0.1, 3))
    assert response.json() == {"ok": True, "result": True}
    with pytest.raises(requests.exceptions.ReadTimeout):
        client._request_send("get", url, timeout=0.1)


def test_a_refused_connection_is_a_network_error(settings, fresh):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.TELEGRAM_API_URL = f"http://127.0.0.1:{port}"
    with pytest.raises(requests.exceptions.ConnectionError) as excinfo:
        api().answer_callback_query(TOKEN, "q1")
    assert error_classify(excinfo.value).kind == "network"


def test_timeouts_are_read_as_telebot_passes_them():
    assert client._timeouts((3, 25)) == (3, 25)
    assert client._timeouts(7) == (7, 7)
    assert client._timeouts(None) == (None, None)


# --- answers ---


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, "retry_after"), (401, "unauthorized"), (403, "forbidden"), (500, "server")],
)
def test_error_answers_raise_as_before(double, fresh, no_requests, status, kind):
    double.bot_add(TOKEN)
    double.fail("sendMessage", status, retry_after=7 if status == 429 else None)
    with pytest.raises(ApiTelegramException) as excinfo:
        api().send_message(TOKEN, 1, "hi")
    assert excinfo.value.error_code == status
    assert excinfo.value.result.status_code == status
    error = error_classify(excinfo.value)
    assert (error.kind, error.code) == (kind, status)
    if status == 429:
        assert error.retry_after == 7.0
    api().send_message(TOKEN, 1, "again")  # the connection is still good after an error


def test_a_non_json_answer_raises_telebots_http_error(server):
    server.respond = lambda request: _answer(
        502, b"<html>Bad Gateway</html>", "Content-Type: text/html\r\n"
    )
    with pytest.raises(ApiHTTPException) as excinfo:
        api().answer_callback_query(TOKEN, "q1")
    assert excinfo.value.result.status_code == 502
    assert "Bad Gateway" in excinfo.value.result.text
    assert (error_classify(excinfo.value).kind, error_classify(excinfo.value).code) == (
        "server",
        502,
    )


def test_a_chunked_answer_is_read_whole(server, no_requests):
    body = json.dumps({"ok": True, "result": {"id": 1, "text": "ü" * 3000}}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
        for i in range(0, len(body), 1000)
    )
    server.respond = lambda request: (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    assert api().get_me(TOKEN) == {"id": 1, "text": "ü" * 3000}
    assert api().get_me(TOKEN)["id"] == 1  # and the connection stays usable
    assert server.connections == 1


def test_a_gzip_answer_is_decoded(server):
    server.respond = lambda request: _answer(
        body=gzip.compress(json.dumps({"ok": True, "result": {"id": 5}}).encode()),
        extra="Content-Encoding: gzip\r\n",
    )
    assert api().get_me(TOKEN) == {"id": 5}


def test_the_answer_looks_like_a_requests_response(server):
    server.respond = lambda request: _answer(extra="X-Test: a\r\nX-Test: b\r\n")
    response = client._request_send("post", f"{server.url}/bot{TOKEN}/getMe", params={"a": 1})
    assert isinstance(response, requests.Response)
    assert (response.status_code, response.reason, response.ok) == (200, "X", True)
    assert response.headers["x-test"] == "a, b"
    assert response.encoding == "utf-8"
    assert response.content == OK and response.text == OK.decode()


def test_a_cookie_set_by_the_server_moves_later_calls_to_requests(server, requests_calls):
    server.respond = lambda request: _answer(extra="Set-Cookie: lb=node-2; Path=/\r\n")
    api().answer_callback_query(TOKEN, "q1")
    api().answer_callback_query(TOKEN, "q2")
    first, second = server.requests
    assert "cookie" not in first["headers"]
    assert second["headers"]["cookie"] == "lb=node-2"
    assert len(requests_calls) == 1  # only the second one


# --- HTTPS ---


@pytest.fixture
def https_server(settings, fresh, tmp_path):
    """An HTTPS RawServer; ``make(name)`` serves a certificate for ``name`` only."""
    servers = []

    def make(name: str, **options) -> tuple[RawServer, str]:
        cert, key = certificate(tmp_path, name)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        raw = RawServer(tls=context, **options)
        servers.append(raw)
        settings.TELEGRAM_API_URL = f"https://localhost:{raw.port}"
        return raw, cert

    yield make
    for raw in servers:
        raw.stop()


def test_https_with_the_ca_bundle_from_the_environment(https_server, monkeypatch, no_requests):
    raw, cert = https_server("localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    for i in range(3):
        assert api().answer_callback_query(TOKEN, f"q{i}") is True
    assert len(raw.requests) == 3 and raw.connections == 1
    assert raw.requests[0]["headers"]["host"] == f"localhost:{raw.port}"


def test_https_a_connection_closed_while_idle_is_replaced(
    https_server, monkeypatch, no_requests, writes
):
    raw, cert = https_server("localhost", close_after_answer=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    assert api().answer_callback_query(TOKEN, "q1") is True
    assert raw.closed.wait(5)
    time.sleep(0.05)
    assert api().answer_callback_query(TOKEN, "q2") is True
    assert [r["connection"] for r in raw.requests] == [1, 2]
    assert len(writes) == 2


def test_https_with_a_certificate_for_another_host_is_refused(https_server, monkeypatch):
    raw, cert = https_server("other.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    with pytest.raises(requests.exceptions.SSLError) as excinfo:
        api().answer_callback_query(TOKEN, "q1")
    assert error_classify(excinfo.value).kind == "network"
    assert raw.requests == []


def test_https_with_an_untrusted_certificate_is_refused(https_server, monkeypatch):
    raw, _ = https_server("localhost")  # no CA bundle variable: certifi's roots
    with pytest.raises(requests.exceptions.SSLError):
        api().answer_callback_query(TOKEN, "q1")
    assert raw.requests == []
