"""The POS/CRM API's admin screens: a key is shown once and stored hashed; webhook
endpoints must be HTTPS and pass the SSRF guard; owners replay deliveries."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.admin.conftest import operator_create
from tests.factories import project_create
from users.apikeys import apikey_authenticate
from users.models_pos import ApiKey, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


def test_an_owner_creates_a_key_and_sees_it_once(client):
    project = project_create()
    client.force_login(operator_create("owner", project))
    response = client.post(
        reverse("admin:users_apikey_add"),
        {
            "project": project.pk,
            "name": "Till 3",
            "rate_limit_per_minute": 100,
            "scope_choices": ["read", "accrue"],
        },
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    plain = re.search(r"<code>(bp_[A-Za-z0-9_-]+)</code>", page).group(1)
    stored = ApiKey.objects.get(project=project)
    assert stored.scopes == ["accrue", "read"] and stored.rate_limit_per_minute == 100
    assert apikey_authenticate(plain).pk == stored.pk
    assert stored.created_by.username == "owner"
    again = client.get(reverse("admin:users_apikey_change", args=[stored.pk])).content.decode()
    assert plain not in again and stored.prefix in again
    listing = client.get(reverse("admin:users_apikey_changelist")).content.decode()
    assert plain not in listing


def test_the_revoke_action_refuses_the_key(client):
    from users.apikeys import apikey_create

    project = project_create()
    new = apikey_create(project=project, name="t", scopes="read")
    client.force_login(operator_create("owner", project))
    client.post(
        reverse("admin:users_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [new.api_key.pk], "post": "yes"},
    )
    assert apikey_authenticate(new.plain) is None


@pytest.mark.parametrize(
    "url, allow_private, message",
    [
        ("http://hooks.example/x", False, "https://"),
        ("https://127.0.0.1/hook", False, "private or loopback"),
    ],
)
def test_webhook_endpoints_are_checked_like_http_steps(client, url, allow_private, message):
    project = project_create(allow_private_http=allow_private)
    client.force_login(operator_create("owner", project))
    response = client.post(
        reverse("admin:users_webhookendpoint_add"),
        {"project": project.pk, "url": url, "event_choices": ["bonus.accrued"], "is_active": "on"},
    )
    assert response.status_code == 200  # the form again, with the reason
    assert message in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_an_endpoint_gets_a_secret_and_deliveries_can_be_replayed(
    client, monkeypatch, django_capture_on_commit_callbacks
):
    project = project_create(allow_private_http=True)
    client.force_login(operator_create("owner", project))
    response = client.post(
        reverse("admin:users_webhookendpoint_add"),
        {
            "project": project.pk,
            "url": "https://127.0.0.1/hook",
            "event_choices": ["bonus.accrued", "bonus.redeemed"],
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.events == ["bonus.accrued", "bonus.redeemed"]
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event="bonus.accrued", payload={}, status="failed", attempts=8
    )
    queued = []
    monkeypatch.setattr("users.webhooks_out.deliver_queue", lambda pk, **kw: queued.append(pk))

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:users_webhookdelivery_changelist"),
            {"action": "replay", "_selected_action": [delivery.pk], "post": "yes"},
        )
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0) and queued == [delivery.pk]
