"""Operators adjust balances in the admin: reason required, recorded, applied once."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from botplatform.models import Membership
from tests.factories import bot_user_create, project_create
from users.ledger import bonus_earn
from users.models import BonusTransaction, BotUser, UserVariable
from users.selectors import user_state_get

TOKEN = "0123456789abcdef0123456789abcdef"


def adjust_url(user: BotUser) -> str:
    return reverse("admin:users_botuser_adjust_balance", args=[user.pk])


def test_change_page_links_to_the_adjustment(admin_client, bot_user):
    html = admin_client.get(reverse("admin:users_botuser_change", args=[bot_user.pk])).content
    assert adjust_url(bot_user).encode() in html


def test_adjustment_form_renders_with_labels_and_help(admin_client, bot_user):
    response = admin_client.get(adjust_url(bot_user))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Amount", "Reason", "minus sign", "Current balance", "request_token"):
        assert text in html


def test_adjustment_is_written_with_operator_and_reason(
    admin_client, admin_user, bot_user, django_capture_on_commit_callbacks
):
    bonus_earn(user_id=bot_user.pk, amount=100, idempotency_key="e")
    user_state_get(user_id=bot_user.pk, project_id=bot_user.project_id)  # warm the cache
    data = {"amount": "-30", "reason": "Refund of order 12", "request_token": TOKEN}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(adjust_url(bot_user), data)
    assert response.status_code == 302
    again = admin_client.post(adjust_url(bot_user), data)  # double submit
    assert again.status_code == 302
    entry = BonusTransaction.objects.get(kind="adjust")
    assert (entry.amount, entry.reason, entry.created_by_id, entry.balance_after) == (
        -30,
        "Refund of order 12",
        admin_user.pk,
        70,
    )
    bot_user.refresh_from_db()
    assert bot_user.balance == 70
    state = user_state_get(user_id=bot_user.pk, project_id=bot_user.project_id)
    assert state.variables["balance"] == 70
    followed = admin_client.get(response.url)
    assert "adjusted by -30" in followed.content.decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"amount": "10", "reason": "   "}, "This field is required"),
        ({"amount": "10"}, "This field is required"),
        ({"amount": "0", "reason": "x"}, "other than zero"),
        ({"amount": "ten", "reason": "x"}, "Enter a whole number"),
        ({"amount": "-11", "reason": "x"}, "at most 10 bonuses can be taken"),
        ({"amount": str(10**13), "reason": "x"}, "less than or equal to"),
    ],
)
def test_bad_adjustments_get_readable_errors_and_write_nothing(
    admin_client, bot_user, data, message
):
    bonus_earn(user_id=bot_user.pk, amount=10, idempotency_key="e")
    response = admin_client.post(adjust_url(bot_user), {**data, "request_token": TOKEN})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not BonusTransaction.objects.filter(kind="adjust").exists()


def test_tampered_token_is_refused(admin_client, bot_user):
    data = {"amount": "5", "reason": "x", "request_token": "../../etc"}
    response = admin_client.post(adjust_url(bot_user), data)
    assert "form expired" in response.content.decode()
    assert not BonusTransaction.objects.exists()


def test_operator_cannot_adjust_another_projects_user(client, db):
    mine, theirs = project_create(), project_create()
    operator = get_user_model().objects.create_user("op", password="pw", is_staff=True)
    Membership.objects.create(project=mine, user=operator, role="support")
    client.force_login(operator)
    stranger = bot_user_create(project=theirs)
    data = {"amount": "5", "reason": "x", "request_token": TOKEN}
    assert client.post(adjust_url(stranger), data).status_code == 404
    own = bot_user_create(project=mine)
    assert client.post(adjust_url(own), data).status_code == 302
    assert list(BonusTransaction.objects.values_list("user_id", flat=True)) == [own.pk]


def test_view_only_operator_cannot_adjust(client, bot_user):
    operator = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    Membership.objects.create(project=bot_user.project, user=operator, role="analyst")
    client.force_login(operator)
    data = {"amount": "5", "reason": "x", "request_token": TOKEN}
    assert client.post(adjust_url(bot_user), data).status_code == 403
    assert not BonusTransaction.objects.exists()


def _change_form_data(user: BotUser, **changes) -> dict:
    data = {
        "telegram_id": user.telegram_id,
        "chat_id": user.chat_id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "language_code": user.language_code,
        "variables-TOTAL_FORMS": "1",
        "variables-INITIAL_FORMS": "0",
        "variables-MIN_NUM_FORMS": "0",
        "variables-MAX_NUM_FORMS": "1000",
        "variables-0-key": "",
        "variables-0-value": "",
        "transactions-TOTAL_FORMS": "0",
        "transactions-INITIAL_FORMS": "0",
        "transactions-MIN_NUM_FORMS": "0",
        "transactions-MAX_NUM_FORMS": "0",
        "level_changes-TOTAL_FORMS": "0",
        "level_changes-INITIAL_FORMS": "0",
        "level_changes-MIN_NUM_FORMS": "0",
        "level_changes-MAX_NUM_FORMS": "0",
    }
    data.update(changes)
    return data


def test_profile_edit_writes_only_changed_fields_and_refreshes_the_cache(
    admin_client, bot_user, django_capture_on_commit_callbacks
):
    bonus_earn(user_id=bot_user.pk, amount=40, idempotency_key="e")
    other = bot_user_create(project=bot_user.project)
    user_state_get(user_id=bot_user.pk, project_id=bot_user.project_id)
    url = reverse("admin:users_botuser_change", args=[bot_user.pk])
    data = _change_form_data(
        bot_user,
        first_name="Edited",
        referrer=str(other.pk),  # read-only: ignored
        **{"variables-0-key": "city", "variables-0-value": '"Riga"'},
    )
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    updates = [q["sql"] for q in queries if q["sql"].startswith('UPDATE "users_botuser"')]
    assert updates and all('"balance"' not in sql for sql in updates)
    bot_user.refresh_from_db()
    assert (bot_user.first_name, bot_user.balance, bot_user.referrer_id) == ("Edited", 40, None)
    state = user_state_get(user_id=bot_user.pk, project_id=bot_user.project_id)
    assert state.profile["first_name"] == "Edited"
    assert state.variables["city"] == "Riga"
    assert UserVariable.objects.get(user=bot_user).value == "Riga"


def test_computed_variable_names_are_refused_in_the_admin(admin_client, bot_user):
    url = reverse("admin:users_botuser_change", args=[bot_user.pk])
    data = _change_form_data(bot_user, **{"variables-0-key": "balance", "variables-0-value": "5"})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "computed by the platform" in response.content.decode()
    assert not UserVariable.objects.exists()


def test_each_adjustment_writes_one_history_entry_with_who_and_why(
    admin_client, admin_user, bot_user
):
    from django.contrib.admin.models import LogEntry

    data = {"amount": "25", "reason": "Coffee machine was broken", "request_token": TOKEN}
    assert admin_client.post(adjust_url(bot_user), data).status_code == 302
    assert admin_client.post(adjust_url(bot_user), data).status_code == 302  # double submit
    entries = LogEntry.objects.filter(object_id=str(bot_user.pk))
    assert entries.count() == 1
    entry = entries.get()
    assert entry.user_id == admin_user.pk
    assert "+25" in entry.change_message and "Coffee machine was broken" in entry.change_message
    history = admin_client.get(reverse("admin:users_botuser_history", args=[bot_user.pk]))
    assert "Coffee machine was broken" in history.content.decode()


def test_a_form_key_reused_for_another_user_is_a_clear_message_not_a_500(admin_client, project):
    first = bot_user_create(project=project)
    second = bot_user_create(project=project)
    data = {"amount": "5", "reason": "Welcome gift", "request_token": TOKEN}
    assert admin_client.post(adjust_url(first), data).status_code == 302
    response = admin_client.post(adjust_url(second), data)  # the same hidden key
    assert response.status_code == 200
    assert "already used for another adjustment" in response.content.decode()
    assert TOKEN not in response.content.decode()  # a fresh key for the next submit
    assert not BonusTransaction.objects.filter(user=second).exists()
    second.refresh_from_db()
    assert second.balance == 0
    # Submitting the re-rendered form (with its new key) then works.
    fresh = response.context["form"]["request_token"].value()
    ok = admin_client.post(adjust_url(second), {**data, "request_token": fresh})
    assert ok.status_code == 302
    assert BonusTransaction.objects.get(user=second).amount == 5
