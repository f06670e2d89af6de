"""The Bot API client reads the environment once per thread, and still honours it."""

from __future__ import annotations

import socket
import threading

import pytest

from botplatform.telegram import client
from botplatform.telegram.client import api


@pytest.fixture
def fresh_sessions(monkeypatch):
    """Forget this thread's sessions so the environment set by the test is read."""
    monkeypatch.setattr(client, "_sessions", threading.local())
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_calls_go_through_one_kept_session_per_thread(double, fresh_sessions):
    double.bot_add("1:AAA")
    api().answer_callback_query("1:AAA", "q1")
    first = client._sessions.session
    api().answer_callback_query("1:AAA", "q2")
    assert client._sessions.session is first
    assert len(double.calls_of("answerCallbackQuery")) == 2

    seen = []
    worker = threading.Thread(
        target=lambda: (
            api().answer_callback_query("1:AAA", "q3"),
            seen.append(client._sessions.session),
        )
    )
    worker.start()
    worker.join()
    assert seen and seen[0] is not first  # requests sessions are not shared across threads


def test_a_proxy_from_the_environment_is_used(double, fresh_sessions, monkeypatch):
    """HTTP_PROXY pointing nowhere: the call fails, so it really went to the proxy."""
    double.bot_add("1:AAA")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    with pytest.raises(Exception) as excinfo:
        api().answer_callback_query("1:AAA", "q1")
    assert "proxy" in f"{type(excinfo.value).__name__} {excinfo.value}".lower()
    assert double.calls_of("answerCallbackQuery") == []


def test_no_proxy_from_the_environment_bypasses_it(double, fresh_sessions, monkeypatch):
    double.bot_add("1:AAA")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    api().answer_callback_query("1:AAA", "q1")
    assert len(double.calls_of("answerCallbackQuery")) == 1


def test_the_ca_bundle_variable_is_honoured(fresh_sessions, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/custom.pem")
    session = client._session_for("https://api.telegram.org")
    assert session.verify == "/etc/ssl/certs/custom.pem"
    assert session.trust_env is False
