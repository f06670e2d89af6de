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
    bot = Bot(project=project, token="123456789:AAH" + "x" * 32, username="old_bot")
    bot.save()
    response = admin_client.post(
        reverse("admin:botplatform_bot_change", args=[bot.pk]),
        {"project": project.pk, "username": "@shop_bot", "mode": "polling", "is_active": "on"},
    )
    assert response.status_code == 302
    assert Bot.objects.get().username == "shop_bot"


def test_a_pasted_token_fills_the_username_from_telegram(admin_client, project, double):
    double.bot_add("123456789:AAH" + "x" * 32, "shop_bot")
    response = admin_client.post(
        reverse("admin:botplatform_bot_add"),
        {
            "project": project.pk,
            "new_token": "123456789:AAH" + "x" * 32,
            "mode": "polling",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    assert Bot.objects.get().username == "shop_bot"


def test_broken_draft_json_says_where_it_breaks_and_keeps_the_old_draft(admin_client, project):
    from tests.factories import workflow_create

    workflow = workflow_create(project=project)
    before = workflow.draft
    response = admin_client.post(
        reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        {
            "project": project.pk,
            "name": workflow.name,
            "slug": workflow.slug,
            "description": "",
            "triggers": "[]",
            "draft": '{"start": "hello",\n "steps": {',
            "is_active": "on",
            "priority": 0,
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "This is not valid JSON" in page and "line 2, column" in page
    workflow.refresh_from_db()
    assert workflow.draft == before


def test_a_broadcast_nobody_matched_says_so_instead_of_a_dash(
    admin_client, project, django_capture_on_commit_callbacks
):
    from tests.factories import bot_create
    from workflows.models import Broadcast

    bot_create(project=project)
    form = {
        "project": project.pk,
        "title": "Promo",
        "text": "Hello",
        "buttons_text": "",
        "segment": "level",
        "level": "Platinum",
    }
    admin_client.post(reverse("admin:workflows_broadcast_add"), form)
    broadcast = Broadcast.objects.get()
    change = reverse("admin:workflows_broadcast_change", args=[broadcast.pk])
    page = admin_client.post(change, {**form, "_send_now": "1"}, follow=True).content.decode()
    assert "Nobody matches the segment right now" in page and 'id="confirm-send"' not in page
    # Should someone confirm anyway (the segment emptied meanwhile), it says so.
    send = reverse("admin:workflows_broadcast_send", args=[broadcast.pk])
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(send, {"confirm": "1"})
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.total) == ("done", 0)
    assert "Nobody matched the segment" in admin_client.get(change).content.decode()


def test_a_button_without_https_names_the_bad_target_and_the_fix(admin_client, project):
    from workflows.models import Broadcast

    response = admin_client.post(
        reverse("admin:workflows_broadcast_add"),
        {
            "project": project.pk,
            "title": "Promo",
            "text": "Hello",
            "buttons_text": "Shop | www.shop.example",
            "segment": "all",
        },
    )
    page = response.content.decode()
    assert "www.shop.example" in page and "Start a link with https://" in page
    assert not Broadcast.objects.exists()


def test_a_variable_typed_as_plain_text_is_saved_as_text_and_shown_without_quotes(
    admin_client, bot_user
):
    from tests.admin.helpers import form_data
    from users.models import UserVariable

    UserVariable.objects.create(user=bot_user, key="city", value="Rome")
    UserVariable.objects.create(user=bot_user, key="visits", value=3)
    url = reverse("admin:users_botuser_change", args=[bot_user.pk])
    page = admin_client.get(url).content.decode()
    assert "\nRome</textarea>" in page and "&quot;Rome&quot;" not in page
    data = form_data(page, "botuser_form")
    prefix = next(k for k in data if k.endswith("-0-key")).removesuffix("0-key")
    rows = {data[f"{prefix}{i}-key"]: i for i in range(2)}
    data[f"{prefix}{rows['city']}-value"] = "Paris"
    data[f"{prefix}{rows['visits']}-value"] = "4"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    values = dict(UserVariable.objects.filter(user=bot_user).values_list("key", "value"))
    assert values == {"city": "Paris", "visits": 4}


def test_an_execution_page_offers_no_save_button_that_would_do_nothing(admin_client, bot_user):
    from tests.factories import execution_create, workflow_create

    workflow = workflow_create(project=bot_user.project)
    execution = execution_create(workflow=workflow, user=bot_user)
    page = admin_client.get(
        reverse("admin:workflows_workflowexecution_change", args=[execution.pk])
    ).content.decode()
    assert workflow.name in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page


def test_the_simulator_offers_the_main_workflow_first_and_preselects_the_one_tried(
    admin_client, project
):
    from tests.factories import workflow_create

    workflow_create(project=project, name="Anniversary", priority=0)
    menu = workflow_create(project=project, name="Main menu", priority=10)
    url = reverse("admin:workflows_simulator", args=[project.pk])
    page = admin_client.get(url).content.decode()
    assert page.index("Main menu (v1)") < page.index("Anniversary (v1)")
    change = admin_client.get(reverse("admin:workflows_workflow_change", args=[menu.pk]))
    link = f"{url}?workflow={menu.pk}"
    assert link in change.content.decode()
    page = admin_client.get(link).content.decode()
    assert f'<option value="{menu.pk}" selected>Main menu (v1)</option>' in page


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ("gold", "This is not valid JSON"),
        ('"gold"', "Write the levels as a list in square brackets"),
        ('[{"name": "Gold"}]', "Level “Gold” needs a &quot;threshold&quot;"),
        ('[{"name": "A", "threshold": 1}, {"name": "A", "threshold": 2}]', "Two levels"),
    ],
)
def test_project_levels_that_would_be_silently_ignored_are_refused(
    admin_client, project, levels, message
):
    from botplatform.models import Project
    from tests.admin.helpers import form_data

    url = reverse("admin:botplatform_project_change", args=[project.pk])
    data = form_data(admin_client.get(url).content.decode(), "project_form")
    before = Project.objects.get(pk=project.pk).levels
    response = admin_client.post(url, {**data, "levels": levels})
    page = response.content.decode()
    assert response.status_code == 200 and message in page, page[:2000]
    assert Project.objects.get(pk=project.pk).levels == before


def test_project_levels_written_correctly_are_saved(admin_client, project):
    from botplatform.models import Project
    from tests.admin.helpers import form_data

    url = reverse("admin:botplatform_project_change", args=[project.pk])
    data = form_data(admin_client.get(url).content.decode(), "project_form")
    data["levels"] = '[{"name": "Silver", "threshold": 1000}]'
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Project.objects.get(pk=project.pk).levels == [{"name": "Silver", "threshold": 1000}]


def test_an_unreachable_telegram_is_not_called_a_refusal_and_the_secret_stays_hidden(
    admin_client, project, settings
):
    import socket

    from tests.factories import bot_create

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.TELEGRAM_API_URL = f"http://127.0.0.1:{port}"
    bot = bot_create(project=project)
    response = admin_client.post(
        reverse("admin:botplatform_bot_changelist"),
        {"action": "webhook_set_action", "_selected_action": [bot.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "could not reach Telegram, so nothing changed" in page
    assert bot.webhook_secret not in page and bot.token not in page
    bot.refresh_from_db()
    assert bot.mode == "polling"


def test_redact_masks_a_webhook_secret_in_a_url():
    from botplatform.logging import redact

    text = "Max retries exceeded with url: /bot123456:AAH-token-token-token/setWebhook?url=x&secret_token=s3cr3tS3CR3T&y=1"
    assert "s3cr3tS3CR3T" not in redact(text) and "secret_token=***&y=1" in redact(text)
