from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from botplatform.models import Membership
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.factories import project_create

pytestmark = pytest.mark.django_db


def _operator(project):
    user = get_user_model().objects.create_user("operator", password="x", is_staff=True)
    Membership.objects.create(project=project, user=user, role="analyst")
    return user


def test_dashboard_shows_the_last_hour_as_charts(admin_client, demo_bot, double):
    (row,) = updates_record(
        bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, 5151, "/start")]
    )
    assert update_run(update_pk=row.pk) == "done"
    url = reverse("admin:botplatform_project_dashboard", args=[demo_bot.project_id])
    response = admin_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="metric-chart"') == 5
    assert "Messages per minute" in html and "Cache hit rate" in html
    summary = dict(response.context["summary"])
    assert summary["Messages in the last hour"] == "1"
    assert summary["Executions waiting for the user now"] == 1
    assert "<polyline" in html
    changelist = admin_client.get(reverse("admin:botplatform_project_changelist"))
    assert url in changelist.content.decode()


def test_dashboard_is_tenant_scoped(client):
    mine, theirs = project_create(), project_create()
    client.force_login(_operator(mine))
    ok = client.get(reverse("admin:botplatform_project_dashboard", args=[mine.pk]))
    assert ok.status_code == 200
    other = client.get(reverse("admin:botplatform_project_dashboard", args=[theirs.pk]))
    assert other.status_code == 404
    assert theirs.name not in other.content.decode()


def test_dashboard_needs_an_admin_login(client, project):
    url = reverse("admin:botplatform_project_dashboard", args=[project.pk])
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
