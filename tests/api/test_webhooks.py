"""Webhooks out, against a real HTTPS server on loopback: signed deliveries, retries
with backoff, the sweep, replay, and the HTTP step's SSRF guard."""

from __future__ import annotations

import json
import ssl
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from tests.api.helpers import api_for, customer, project_with_rules
from tests.tls import certificate
from users.models_pos import WebhookDelivery, WebhookEndpoint
from users.webhooks_out import (
    SIGNATURE_HEADER,
    delivery_replay,
    endpoint_url_check,
    event_emit,
    signature,
    signature_verify,
)
from workflows.webhooks_send import endpoint_address_check, webhook_attempt, webhooks_due

pytestmark = pytest.mark.django_db

SECRET = "whsec_test"


class _Receiver(BaseHTTPRequestHandler):
    calls: list[dict] = []
    answers: list[int] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append({"headers": dict(self.headers), "body": body})
        status = self.answers.pop(0) if self.answers else 200
        reply = json.dumps({"received": True}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    """An HTTPS server on 127.0.0.1 for "localhost", trusted through SSL_CERT_FILE."""
    _Receiver.calls, _Receiver.answers = [], []
    cert, key = certificate(tmp_path, "localhost")
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _endpoint(project, url, events=("bonus.accrued",)):
    return WebhookEndpoint.objects.create(
        project=project, url=url, secret=SECRET, events=list(events)
    )


def test_a_purchase_sends_a_signed_accrual(receiver, django_capture_on_commit_callbacks):
    project = project_with_rules(allow_private_http=True)
    _endpoint(project, receiver, events=["bonus.accrued", "customer.level_changed"])
    user = customer(project)
    api = api_for(project)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "purchases", {"customer_id": user.pk, "order_id": "W1", "amount": "100"}
        )
    assert response.status_code == 201
    assert len(_Receiver.calls) == 1
    call = _Receiver.calls[0]
    header = call["headers"][SIGNATURE_HEADER]
    assert signature_verify(secret=SECRET, header=header, body=call["body"], now=int(time.time()))
    assert not signature_verify(
        secret="other", header=header, body=call["body"], now=int(time.time())
    )
    assert not signature_verify(
        secret=SECRET, header=header, body=call["body"] + b" ", now=int(time.time())
    )
    payload = json.loads(call["body"])
    assert payload["event"] == "bonus.accrued"
    assert payload["data"] == {
        "customer_id": user.pk,
        "order_id": "W1",
        "amount": 5,
        "balance": 5,
        "store": "",
    }
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "delivered" and delivery.response_code == 200
    assert call["headers"]["X-Event-Id"] == str(delivery.event_id)


def test_a_failed_delivery_is_retried_with_backoff_then_by_the_sweep(receiver):
    project = project_with_rules(allow_private_http=True)
    endpoint = _endpoint(project, receiver)
    event_emit(project_id=project.pk, event="bonus.accrued", data={"n": 1})
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    _Receiver.answers = [500]
    assert webhook_attempt(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=20)
    assert webhook_attempt(delivery.pk) == "skipped"  # not due yet
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert webhooks_due() == 1  # eager in the suite: the sweep's queued task sends it
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert '"received": true' in delivery.response_body


def test_replay_sends_the_same_event_again(receiver, django_capture_on_commit_callbacks):
    project = project_with_rules(allow_private_http=True)
    _endpoint(project, receiver)
    event_emit(project_id=project.pk, event="bonus.accrued", data={})
    delivery = WebhookDelivery.objects.get()
    webhook_attempt(delivery.pk)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_replay(delivery)
    assert len(_Receiver.calls) == 2
    ids = {call["headers"]["X-Event-Id"] for call in _Receiver.calls}
    assert ids == {str(delivery.event_id)}


def test_endpoints_on_private_addresses_are_refused_like_http_steps(receiver):
    project = project_with_rules()  # allow_private_http off
    _endpoint(project, receiver)
    event_emit(project_id=project.pk, event="bonus.accrued", data={})
    delivery = WebhookDelivery.objects.get()
    assert webhook_attempt(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert _Receiver.calls == []
    assert "private or loopback address" in delivery.error
    with pytest.raises(ValueError):
        endpoint_address_check("https://127.0.0.1/hook", allow_private=False)
    endpoint_address_check("https://127.0.0.1/hook", allow_private=True)


def test_only_subscribed_active_endpoints_get_events():
    project = project_with_rules()
    _endpoint(project, "https://a.example/hook", events=["bonus.redeemed"])
    inactive = _endpoint(project, "https://b.example/hook")
    inactive.is_active = False
    inactive.save()
    assert event_emit(project_id=project.pk, event="bonus.accrued", data={}) == 0
    with pytest.raises(ValueError):
        event_emit(project_id=project.pk, event="nope", data={})


@pytest.mark.parametrize(
    "url", ["http://a.example/x", "https://user:pw@a.example/", "ftp://a", "https://", 5]
)
def test_endpoint_urls_must_be_plain_https(url):
    with pytest.raises(ValueError):
        endpoint_url_check(url)


def test_the_signature_is_hmac_sha256_over_timestamp_and_body():
    import hashlib
    import hmac

    header = signature(secret="s", timestamp=1700000000, body=b'{"a":1}')
    expected = hmac.new(b"s", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert not signature_verify(secret="s", header=header, body=b'{"a":1}', now=1700000000 + 301)
    assert not signature_verify(secret="s", header="garbage", body=b"", now=0)


def test_expiry_and_new_telegram_users_are_events(monkeypatch):
    from datetime import timedelta

    from users.models import BonusTransaction
    from users.tasks import bonuses_expire

    project = project_with_rules(bonus_expiry_days=1)
    _endpoint(project, "https://a.example/hook", events=["bonus.expired", "customer.joined"])
    monkeypatch.setattr("users.webhooks_out.deliver_queue", lambda *a, **k: None)
    user = customer(project, balance=30)
    BonusTransaction.objects.filter(user=user).update(created_at=timezone.now() - timedelta(days=3))
    assert bonuses_expire() == 1
    expired = WebhookDelivery.objects.get(event="bonus.expired")
    assert expired.payload["data"] == {"customer_id": user.pk, "amount": 30, "balance": 0}

    from users.customers import customer_joined

    customer_joined(user)
    assert WebhookDelivery.objects.get(event="customer.joined").payload["data"]["id"] == user.pk
