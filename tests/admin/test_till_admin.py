"""The till in the admin: the customer card on the bot user page (its QR code, the
code rotated by owners and support only) and cashiers added by owners, with clear
messages for wrong input."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from tests.admin.conftest import operator_create
from tests.factories import bot_create, bot_user_create, project_create
from users.customers import card_code_ensure
from users.models import Cashier

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    project = project_create(name="Coffee")
    bot_create(project=project, username="coffee_bot")
    user = bot_user_create(project=project, first_name="Ann")
    card_code_ensure(user)
    return user


def test_the_bot_user_page_shows_the_card_as_a_qr_code(client, customer):
    client.force_login(operator_create("owner", customer.project))
    page = client.get(reverse("admin:users_botuser_change", args=[customer.pk])).content.decode()
    assert 'src="data:image/png;base64,iVBOR' in page  # a PNG
    assert f"https://t.me/coffee_bot?start=card_{customer.card_code}" in page
    assert reverse("admin:users_botuser_rotate_card", args=[customer.pk]) in page


@pytest.mark.parametrize("role", ["owner", "support"])
def test_owners_and_support_rotate_the_code_and_it_is_audited(client, customer, role):
    client.force_login(operator_create(role, customer.project, role=role))
    url = reverse("admin:users_botuser_rotate_card", args=[customer.pk])
    old = customer.card_code
    assert client.get(url).status_code == 200  # asks first
    customer.refresh_from_db()
    assert customer.card_code == old
    response = client.post(url)
    assert response.status_code == 302
    customer.refresh_from_db()
    assert customer.card_code != old and len(customer.card_code) == 12
    entry = LogEntry.objects.get(object_id=str(customer.pk))
    assert "Card code rotated" in entry.change_message and old not in entry.change_message


@pytest.mark.parametrize("role", ["editor", "analyst"])
def test_other_roles_cannot_rotate(client, customer, role):
    client.force_login(operator_create(role, customer.project, role=role))
    old = customer.card_code
    response = client.post(reverse("admin:users_botuser_rotate_card", args=[customer.pk]))
    assert response.status_code == 403
    customer.refresh_from_db()
    assert customer.card_code == old


def test_an_owner_adds_a_cashier_and_wrong_ids_are_explained(client, customer):
    owner = operator_create("owner", customer.project)
    client.force_login(owner)
    url = reverse("admin:users_cashier_add")
    form = {
        "project": customer.project.pk,
        "telegram_id": "-5",
        "name": "Bob",
        "store_name": "Store 5",
        "daily_limit": "500",
        "is_active": "on",
    }
    page = client.post(url, form).content.decode()
    assert "A Telegram user id is a positive number." in page
    form["telegram_id"] = "123456789"
    assert client.post(url, form).status_code == 302
    cashier = Cashier.objects.get()
    assert (cashier.store_name, cashier.daily_limit, cashier.created_by) == ("Store 5", 500, owner)
    page = client.post(url, form).content.decode()
    assert "already a cashier here" in page
    assert "Traceback" not in page
