"""The Bot API double's own HTTP handling: keep-alive, closing, bodies, bad requests."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlencode

import pytest

from devtools.telegram_double import TelegramDouble

TOKEN = "5:AAHdouble"


@pytest.fixture
def server():
    double = TelegramDouble().start()
    double.bot_add(TOKEN)
    yield double
    double.stop()


def _connection(double: TelegramDouble) -> http.client.HTTPConnection:
    host, port = double._server.server_address[:2]
    return http.client.HTTPConnection(host, port, timeout=5)


def _answer(response: http.client.HTTPResponse) -> dict:
    assert response.getheader("Content-Type") == "application/json"
    return json.loads(response.read())


def test_one_keep_alive_connection_carries_many_calls_of_each_body_kind(server):
    connection = _connection(server)
    form = urlencode({"chat_id": 7, "text": "hi & bye"})
    connection.request(
        "POST",
        f"/bot{TOKEN}/sendMessage",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    first = connection.getresponse()
    assert first.status == 200
    assert _answer(first)["result"]["text"] == "hi & bye"
    connection.request(
        "POST",
        f"/bot{TOKEN}/sendMessage",
        body=json.dumps({"chat_id": 7, "text": "json"}),
        headers={"Content-Type": "application/json"},
    )
    assert _answer(connection.getresponse())["result"]["text"] == "json"
    connection.request("GET", f"/bot{TOKEN}/sendMessage?chat_id=7&text=query")
    assert _answer(connection.getresponse())["result"]["text"] == "query"
    connection.close()
    assert server.sent_texts(TOKEN, 7) == ["hi & bye", "json", "query"]


def test_errors_are_answered_as_the_bot_api_does(server):
    connection = _connection(server)
    connection.request("GET", "/nonsense")
    response = connection.getresponse()
    assert (response.status, _answer(response)["error_code"]) == (404, 404)
    connection.request("GET", "/bot1:WRONG/getMe")
    response = connection.getresponse()
    assert (response.status, _answer(response)["description"]) == (401, "Unauthorized")
    connection.request("GET", f"/bot{TOKEN}/sendMessage?chat_id=7")
    response = connection.getresponse()
    assert response.status == 400
    assert "text is empty" in _answer(response)["description"]
    connection.close()


def test_connection_close_and_http_1_0_end_the_connection(server):
    host, port = server._server.server_address[:2]
    for request in (
        f"GET /bot{TOKEN}/getMe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        f"GET /bot{TOKEN}/getMe HTTP/1.0\r\n\r\n",
        f"GET http://{host}:{port}/bot{TOKEN}/getMe HTTP/1.0\r\n\r\n",  # as via a proxy
    ):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(request.encode())
            received = b""
            while chunk := sock.recv(65536):  # returns b"" once the server closes
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(body)["result"]["id"] == 5


def test_an_unsupported_verb_or_garbage_gets_an_error_not_a_hang(server):
    host, port = server._server.server_address[:2]
    for request, status in ((b"PUT /x HTTP/1.1\r\n\r\n", b"501"), (b"garbage\r\n\r\n", b"400")):
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(request)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.split(b" ")[1] == status
