"""Findings of an operator's walk through the admin, each pinned by a test."""

from __future__ import annotations

import pytest
from django.urls import reverse

from botplatform.models import Bot

pytestmark = pytest.mark.django_db


def test_a_malformed_token_gets_one_error_saying_what_a_token_looks_like(admin_client, project):
    response = admin_client.post(
        reverse("admin:botplatform_bot_add"),
        {"project": project.pk, "new_token": "hello-token", "mode": "polling", "is_active": "on"},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "does not look like a bot token" in page
    assert "A new bot needs its token." not in page
    assert not Bot.objects.exists()


def test_the_add_page_does_not_offer_to_keep_a_token_that_does_not_exist(admin_client):
    page = admin_client.get(reverse("admin:botplatform_bot_add")).content.decode()
    assert "Leave empty to keep the current token" not in page
    assert "Webhook secret" not in page


def test_a_username_pasted_with_its_at_sign_is_stored_without_it(admin_client, project):
    response = admin_client.post(
        reverse("admin:botplatform_bot_add"),
        {
            "project": project.pk,
            "username": "@shop_bot",
            "new_token": "123456789:AAH" + "x" * 32,
            "mode": "polling",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    assert Bot.objects.get().username == "shop_bot"
