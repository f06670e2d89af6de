"""HTTP request steps connect to the address that was checked, never to a second lookup.

A rebinding DNS server is simulated by answering the first lookup of ``rebind.test``
with one address and later lookups with another; the servers are real local ones.
"""

from __future__ import annotations

import socket
import ssl
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.tls import certificate
from workflows.engine.steps.http_client import http_perform
from workflows.engine.steps.http_pinning import BlockedAddress, addresses_resolve, pinned_opener

HOST = "rebind.test"
PUBLIC = "93.184.216.34"  # a global address: passes the check; never really dialled here


class _Handler(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_GET(self):
        _Handler.calls.append({"path": self.path, "host": self.headers.get("Host")})
        payload = b'{"where": "inside"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _serve(server: ThreadingHTTPServer):
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return server.server_address[1]


@pytest.fixture
def local_server():
    _Handler.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    yield _serve(server)
    server.shutdown()
    server.server_close()


def rebinding_resolver(monkeypatch, answers: list[str]) -> list[str]:
    """``rebind.test`` resolves to answers[0], then answers[1], ...; other names as usual."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != HOST:
            return real(host, port, *args, **kwargs)
        ip = answers[min(len(lookups), len(answers) - 1)]
        lookups.append(ip)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_a_rebinding_answer_after_the_check_is_never_connected_to(monkeypatch, local_server):
    """The check sees a public address; a second lookup would say 127.0.0.1 (the server)."""
    lookups = rebinding_resolver(monkeypatch, [PUBLIC, "127.0.0.1"])
    real_connect = socket.create_connection
    dialled: list = []

    def create_connection(address, *args, **kwargs):
        dialled.append(address[0])
        if address[0] == PUBLIC:  # no real network in tests: the vetted host is "down"
            raise ConnectionRefusedError(111, "refused")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    request = {"method": "GET", "url": f"http://{HOST}:{local_server}/secret", "retries": 0}
    result = http_perform(request, allow_private=False)
    assert result["ok"] is False and "request failed" in result["error"]
    assert _Handler.calls == []  # the internal server was never reached
    assert dialled == [PUBLIC]  # the exact address that was checked, not the name
    assert lookups == [PUBLIC]  # one lookup: the one that was checked


def test_the_pinned_request_keeps_the_host_name_and_ignores_later_answers(
    monkeypatch, local_server
):
    """Loopback allowed (as for the test server): still one lookup, then that address."""
    lookups = rebinding_resolver(monkeypatch, ["127.0.0.1", "127.0.0.2"])
    request = {"method": "GET", "url": f"http://{HOST}:{local_server}/data", "retries": 1}
    result = http_perform(request, allow_private=True)
    headers = result.pop("headers")  # kept for save_headers (issue 17)
    assert result == {"ok": True, "status": 200, "json": {"where": "inside"}}
    assert all(name == name.lower() for name in headers)
    assert _Handler.calls == [{"path": "/data", "host": f"{HOST}:{local_server}"}]
    assert lookups == ["127.0.0.1"]


def test_a_host_with_any_private_address_is_refused(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != HOST:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.7"):
        addresses_resolve(HOST, 443, allow_private=False)
    assert addresses_resolve(HOST, 443, allow_private=True) == [PUBLIC, "10.0.0.7"]


# --- TLS: SNI and the certificate check use the host name, not the pinned address ---


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 whose certificate names only rebind.test."""
    _Handler.calls = []
    cert, key = certificate(tmp_path, HOST)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    seen_sni: list = []
    server_context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    port = _serve(server)
    yield port, cert, seen_sni
    server.shutdown()
    server.server_close()


def test_https_to_the_pinned_address_verifies_the_host_name(tls_server):
    port, cert, seen_sni = tls_server
    trusting = ssl.create_default_context(cafile=cert)
    opener = pinned_opener(["127.0.0.1"], ssl_context=trusting)
    with opener.open(f"https://{HOST}:{port}/tls", timeout=5) as response:
        assert response.status == 200
    assert seen_sni == [HOST]
    assert _Handler.calls == [{"path": "/tls", "host": f"{HOST}:{port}"}]


def test_https_refuses_a_certificate_for_another_name(tls_server):
    """Pinned to the same address, but the URL names another host: the check fails."""
    port, cert, _ = tls_server
    trusting = ssl.create_default_context(cafile=cert)
    opener = pinned_opener(["127.0.0.1"], ssl_context=trusting)
    with pytest.raises(urllib.error.URLError) as caught:
        opener.open(f"https://other.test:{port}/tls", timeout=5)
    assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)
    assert _Handler.calls == []
