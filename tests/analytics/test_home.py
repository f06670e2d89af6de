"""The operator's home: one project at a glance, warnings in plain words."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from analytics.rollups import rollup_run
from botplatform.models import Bot, Heartbeat, TelegramUpdate
from tests.admin.conftest import operator_create
from tests.factories import bot_create, bot_user_create, project_create, workflow_create
from workflows.models import Broadcast

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_projects(db):
    alpha = project_create(name="Alpha")
    beta = project_create(name="Beta secret")
    bot_create(project=alpha, username="alpha_bot")
    bot_create(project=beta, username="beta_bot")
    workflow_create(project=alpha, name="Onboarding")
    workflow_create(project=beta, name="Beta flow")
    return alpha, beta


def test_home_shows_the_chosen_project_and_a_picker(client, two_projects):
    alpha, beta = two_projects
    for _ in range(3):
        bot_user_create(project=alpha)
    rollup_run()
    client.force_login(operator_create("both", alpha, beta, role="owner"))
    body = client.get("/admin/").content.decode()
    assert "@alpha_bot" in body and "Onboarding" in body and "v1" in body
    assert "@beta_bot" not in body
    assert f'href="?project={beta.pk}"' in body  # the picker
    assert 'id="home-today"' in body and '<th scope="row">Members</th><td>3</td>' in body
    body = client.get(f"/admin/?project={beta.pk}").content.decode()
    assert "@beta_bot" in body and "@alpha_bot" not in body


def test_an_operator_never_sees_another_project_even_by_asking(client, two_projects):
    alpha, beta = two_projects
    client.force_login(operator_create("alpha_only", alpha, role="owner"))
    body = client.get(f"/admin/?project={beta.pk}").content.decode()
    assert "Beta secret" not in body and "@beta_bot" not in body
    assert "@alpha_bot" in body


def test_warnings_say_what_is_broken_in_plain_words(client, two_projects):
    alpha, _beta = two_projects
    bot = Bot.objects.get(project=alpha)
    Bot.objects.filter(pk=bot.pk).update(status=Bot.Status.UNAUTHORIZED)
    now = timezone.now()
    broadcast = Broadcast.objects.create(
        project=alpha, title="Tuesday offer", text="hi", status="sending", total=2
    )
    Broadcast.objects.filter(pk=broadcast.pk).update(updated_at=now - timedelta(minutes=9))
    TelegramUpdate.objects.bulk_create(
        [TelegramUpdate(bot=bot, update_id=i, payload={}) for i in range(25)]
    )
    TelegramUpdate.objects.update(received_at=now - timedelta(minutes=3))
    Heartbeat.objects.create(name="scheduler", at=now - timedelta(minutes=20))
    client.force_login(operator_create("owner", alpha, role="owner"))
    body = client.get("/admin/").content.decode()
    assert "Telegram refuses the token of @alpha_bot" in body
    assert "“Tuesday offer” is stalled at 0 of 2 for 9 minutes" in body
    assert "25 Telegram messages have waited more than a minute" in body
    assert "The periodic scheduler has not run for 20 minutes" in body
    assert "Nothing is broken right now" not in body


def test_nothing_broken_says_so(client, two_projects):
    alpha, _beta = two_projects
    Heartbeat.objects.create(name="scheduler", at=timezone.now())
    client.force_login(operator_create("calm", alpha, role="owner"))
    assert "Nothing is broken right now" in client.get("/admin/").content.decode()


def test_internal_tables_are_under_diagnostics_for_superusers_only(client, two_projects):
    alpha, _beta = two_projects
    client.force_login(operator_create("editor", alpha, role="editor"))
    body = client.get("/admin/").content.decode()
    assert "Telegram updates" not in body and "Deferred sends" not in body
    assert "Step log" not in body and "Diagnostics" not in body
    assert "Workflows" in body
    admin = User.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    body = client.get("/admin/").content.decode()
    diagnostics = body.split("Diagnostics (superusers)", 1)[1]
    assert "Telegram updates" in diagnostics and "Step log" in diagnostics


def test_support_sees_no_figures_and_no_shortcuts_it_cannot_use(client, two_projects):
    alpha, _beta = two_projects
    client.force_login(operator_create("support", alpha, role="support"))
    body = client.get("/admin/").content.decode()
    assert 'id="home-today"' not in body and "Programme figures" not in body
    assert "New workflow" not in body and "New broadcast" not in body
