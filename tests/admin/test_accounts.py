"""Accounts with history are deactivated, not deleted: what they did keeps their name."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.urls import reverse

from tests.admin.conftest import operator_create
from tests.factories import bot_user_create, project_create
from users.ledger import bonus_adjust
from users.models import BonusTransaction

pytestmark = pytest.mark.django_db


@pytest.fixture
def root_client(client, db):
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    return client


@pytest.fixture
def author(db):
    """An operator who adjusted a balance: the ledger entry names them."""
    project = project_create()
    operator = operator_create("ann", project)
    user = bot_user_create(project=project)
    bonus_adjust(
        user_id=user.pk, amount=10, reason="Welcome", created_by=operator, idempotency_key="k1"
    )
    return operator


def test_deleting_an_account_with_history_offers_deactivation(root_client, author):
    url = reverse("admin:auth_user_delete", args=[author.pk])
    page = root_client.get(url).content.decode()
    assert "ann cannot be deleted" in page and "Deactivate ann" in page
    assert "Bonus transactions: 1" in page
    # Confirming the delete anyway deletes nothing.
    root_client.post(url, {"post": "yes"})
    assert User.objects.filter(pk=author.pk).exists()
    assert BonusTransaction.objects.get().created_by_id == author.pk

    response = root_client.post(reverse("admin:auth_user_deactivate", args=[author.pk]))
    assert response.status_code == 302
    author.refresh_from_db()
    assert author.is_active is False
    assert BonusTransaction.objects.get().created_by_id == author.pk  # still their name
    assert LogEntry.objects.filter(
        object_id=str(author.pk), change_message__startswith="Deactivated"
    ).exists()


def test_the_bulk_delete_refuses_accounts_with_history(root_client, author):
    response = root_client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", "_selected_action": [author.pk], "post": "yes"},
    )
    assert "deactivate this account instead" in response.content.decode()
    assert User.objects.filter(pk=author.pk).exists()


def test_an_account_without_history_can_still_be_deleted(root_client, db):
    fresh = User.objects.create_user("fresh", password="pw", is_staff=True)
    response = root_client.post(reverse("admin:auth_user_delete", args=[fresh.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=fresh.pk).exists()


def test_a_deactivated_member_loses_access(client, author):
    client.force_login(author)
    assert client.get(reverse("admin:users_botuser_changelist")).status_code == 200
    User.objects.filter(pk=author.pk).update(is_active=False)
    response = client.get(reverse("admin:users_botuser_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]
