"""Every admin page renders for a superuser, and secrets never appear in full."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from botplatform.models import DeferredSend, TelegramUpdate
from tests.factories import bot_create, bot_user_create, execution_create, workflow_create
from users.models import BonusTransaction


@pytest.fixture
def populated(db):
    bot = bot_create()
    user = bot_user_create(project=bot.project)
    BonusTransaction.objects.create(
        project=bot.project,
        user=user,
        kind="earn",
        amount=10,
        balance_after=10,
        idempotency_key="k",
    )
    workflow = workflow_create(project=bot.project)
    execution = execution_create(workflow=workflow, user=user, status="waiting")
    execution.step_logs.create(step="hello", step_type="end")
    user.variables.create(key="city", value="Riga")
    TelegramUpdate.objects.create(bot=bot, update_id=1, payload={"update_id": 1})
    DeferredSend.objects.create(bot=bot, chat_id=user.chat_id, actions=[], due_at=timezone.now())
    # --- Admin ---
    from workflows.models import Broadcast

    broadcast = Broadcast.objects.create(project=bot.project, title="News", text="Hi")
    broadcast.deliveries.create(user=user)
    # --- The POS/CRM API's screens ---
    from tests.admin.test_tenant_isolation import _populate_pos

    _populate_pos(bot.project, user, "Pos")
    return bot


def _admin_urls():
    for model in admin.site._registry:
        meta = model._meta
        if meta.app_label not in {"botplatform", "users", "workflows"}:
            continue
        yield model, f"admin:{meta.app_label}_{meta.model_name}"


def test_every_changelist_and_change_page_renders(admin_client, populated):
    for model, prefix in _admin_urls():
        response = admin_client.get(reverse(f"{prefix}_changelist"))
        assert response.status_code == 200, model
        obj = model._default_manager.first()
        assert obj is not None, f"no {model.__name__} to open"
        response = admin_client.get(reverse(f"{prefix}_change", args=[obj.pk]))
        assert response.status_code == 200, model


def test_bot_token_and_webhook_secret_never_rendered_in_full(admin_client, populated):
    bot = populated
    pages = [
        reverse("admin:botplatform_bot_changelist"),
        reverse("admin:botplatform_bot_change", args=[bot.pk]),
    ]
    for url in pages:
        html = admin_client.get(url).content.decode()
        assert bot.token not in html
        assert bot.token.split(":", 1)[1] not in html
        assert bot.webhook_secret not in html
    assert bot.token_masked in html


def test_bot_token_change_keeps_old_token_when_left_blank(admin_client, populated):
    bot = populated
    url = reverse("admin:botplatform_bot_change", args=[bot.pk])
    data = {
        "project": bot.project_id,
        "username": "renamed_bot",
        "mode": "polling",
        "is_active": "on",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302
    old_token = bot.token
    bot.refresh_from_db()
    assert (bot.username, bot.token) == ("renamed_bot", old_token)


def test_bot_with_malformed_token_gets_a_readable_error(admin_client, populated):
    url = reverse("admin:botplatform_bot_add")
    data = {"project": populated.project_id, "new_token": "not-a-token", "mode": "polling"}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "does not look like a bot token" in response.content.decode()


def test_ledger_cannot_be_edited_or_deleted(admin_client, populated):
    entry = BonusTransaction.objects.get()
    assert admin_client.get(reverse("admin:users_bonustransaction_add")).status_code == 403
    assert (
        admin_client.get(
            reverse("admin:users_bonustransaction_delete", args=[entry.pk])
        ).status_code
        == 403
    )
    response = admin_client.post(
        reverse("admin:users_bonustransaction_change", args=[entry.pk]), {"amount": 999}
    )
    assert response.status_code == 403
    entry.refresh_from_db()
    assert entry.amount == 10
