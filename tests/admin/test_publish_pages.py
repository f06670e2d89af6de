"""The publish page (changes in words, conversations in flight, a required note), the
restore warning, and the broadcast's send confirmation."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.core.cache import cache
from django.urls import reverse

from botplatform.cache import workflow_triggers_key
from tests.admin.conftest import operator_create
from tests.admin.helpers import form_data
from tests.factories import bot_create, bot_user_create, execution_create
from tests.workflows.conftest import publish, text, texts
from workflows.engine.triggers import trigger_candidates
from workflows.models import Broadcast, Workflow, WorkflowVersion
from workflows.publishing import workflow_draft_save

pytestmark = pytest.mark.django_db

V1 = {"start": "a", "steps": {"a": {"type": "message", "text": "Tea is\nready"}}}
V2 = {"start": "a", "steps": {"a": {"type": "message", "text": "Coffee is\nready"}}}


@pytest.fixture
def user(project):
    return bot_user_create(project=project, first_name="Ann")


def _publish_url(workflow) -> str:
    return reverse("admin:workflows_workflow_publish", args=[workflow.pk])


def test_the_publish_page_shows_changes_in_flight_and_requires_a_note(
    operator_client, operator, project, user
):
    workflow = publish(project, V1, triggers=[{"type": "command", "command": "start"}])
    execution_create(workflow=workflow, user=bot_user_create(project=project), status="waiting")
    execution_create(workflow=workflow, user=bot_user_create(project=project), status="running")
    workflow_draft_save(
        workflow=workflow, definition=V2, triggers=[{"type": "text", "text": "coffee"}]
    )
    page = operator_client.get(_publish_url(workflow)).content.decode()
    assert "Publish version 2" in page
    words = " ".join(page.split())
    assert (
        "<b>2</b> conversations on version 1 (1 waiting for the user\u2019s answer) finish" in words
    )
    assert '<td class="vdiff-old">Tea is\nready</td>' in page  # a real line break
    assert '<td class="vdiff-new">Coffee is\nready</td>' in page
    assert "added</span> Exact text: coffee" in page
    assert "removed</span> Command /start" in page
    assert "\\n" not in page.split('class="vdiff"', 1)[1].split("</form>", 1)[0]

    data = form_data(page, "publish-form")
    response = operator_client.post(_publish_url(workflow), {**data, "note": "   "})
    assert "Write a short note: why this version goes live." in response.content.decode()
    for hostile, message in (
        ("a\x00b", "Null characters are not allowed."),
        ("x" * 501, "at most 500"),
    ):
        response = operator_client.post(_publish_url(workflow), {**data, "note": hostile})
        assert response.status_code == 200 and message in response.content.decode()
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1
    assert texts(text(user, "coffee")) == []

    response = operator_client.post(
        _publish_url(workflow), {**data, "note": "Coffee season"}, follow=True
    )
    assert "is live as version 2" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.published_version.note == "Coffee season"
    assert texts(text(user, "coffee")) == ["Coffee is\nready"]
    entry = LogEntry.objects.get(object_id=str(workflow.pk))
    assert entry.user == operator and "Coffee season" in entry.change_message
    history = operator_client.get(reverse("admin:workflows_workflow_history", args=[workflow.pk]))
    assert "Published version 2. Note: Coffee season" in history.content.decode()


def test_a_draft_changed_during_the_review_is_not_published(operator_client, project):
    workflow = publish(project, V1)
    workflow_draft_save(workflow=workflow, definition=V2, triggers=workflow.triggers)
    data = form_data(operator_client.get(_publish_url(workflow)).content.decode(), "publish-form")
    changed = {"start": "a", "steps": {"a": {"type": "message", "text": "Someone else"}}}
    workflow_draft_save(workflow=workflow, definition=changed, triggers=workflow.triggers)
    response = operator_client.post(_publish_url(workflow), {**data, "note": "mine"})
    page = response.content.decode()
    assert "Someone changed the draft while you were reviewing it" in page
    assert '<td class="vdiff-new">Someone else</td>' in page
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1
    # Confirming what is now shown publishes it, with the note kept in the form.
    again = form_data(page, "publish-form")
    assert again["note"] == "mine"
    operator_client.post(_publish_url(workflow), again)
    workflow.refresh_from_db()
    assert workflow.published_version.definition == changed


def test_an_unchanged_draft_has_nothing_to_publish(operator_client, project):
    workflow = publish(project, V1)
    page = operator_client.get(_publish_url(workflow)).content.decode()
    assert "Nothing to publish: the draft is version 1" in page
    assert 'id="publish-form"' not in page


def test_a_read_only_operator_cannot_publish_or_restore(client, project):
    workflow = publish(project, V1)
    reader = operator_create("reader", project, role="analyst")
    client.force_login(reader)
    assert client.get(_publish_url(workflow)).status_code == 403
    restore = reverse(
        "admin:workflows_workflow_restore", args=[workflow.pk, workflow.published_version_id]
    )
    assert client.post(restore, {"confirm": "1"}).status_code == 403


def test_another_projects_workflow_is_not_found(operator_client, other_project):
    foreign = publish(other_project, V1)
    assert operator_client.get(_publish_url(foreign)).status_code == 404


def test_restore_warns_before_replacing_unpublished_changes(operator_client, project, user):
    workflow = publish(project, V1, triggers=[{"type": "command", "command": "start"}])
    v1 = workflow.published_version
    from workflows.publishing import workflow_publish

    workflow_publish(workflow=workflow, definition=V2, triggers=[{"type": "text", "text": "c"}])
    unfinished = {"start": "a", "steps": {"a": {"type": "message", "text": "Half done"}}}
    workflow_draft_save(workflow=workflow, definition=unfinished, triggers=[])
    versions = operator_client.get(reverse("admin:workflows_workflow_versions", args=[workflow.pk]))
    assert "The draft has unpublished changes: review and publish" in versions.content.decode()
    restore = reverse("admin:workflows_workflow_restore", args=[workflow.pk, v1.pk])
    page = operator_client.post(restore, {}).content.decode()
    assert "The draft has <b>unpublished changes</b>" in page
    assert 'value="Replace the draft with version 1"' in page
    assert '<td class="vdiff-old">Half done</td>' in page
    workflow.refresh_from_db()
    assert workflow.draft == unfinished  # the warning changes nothing

    data = form_data(page, "restore-form")
    workflow_draft_save(workflow=workflow, definition=V2, triggers=[])  # someone else
    response = operator_client.post(restore, data, follow=True)
    assert "The draft changed while you were deciding" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.draft == V2

    data = form_data(response.content.decode(), "restore-form")
    response = operator_client.post(restore, data, follow=True)
    assert "Version 1 is now in the draft. Users still get version 2" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.draft == V1 and workflow.published_version.number == 2
    assert texts(text(user, "c")) == ["Coffee is\nready"]


def test_triggers_edited_as_json_on_the_change_form_are_not_live_and_keep_the_cache(
    operator_client, project, user
):
    workflow = publish(project, V1, triggers=[{"type": "command", "command": "start"}])
    table = trigger_candidates(project.pk)
    change = reverse("admin:workflows_workflow_change", args=[workflow.pk])
    data = form_data(operator_client.get(change).content.decode(), "workflow_form")
    data["triggers"] = '[{"type": "fallback"}]'
    response = operator_client.post(change, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert cache.get(workflow_triggers_key(project.pk)) == table
    assert Workflow.objects.get(pk=workflow.pk).triggers == [{"type": "fallback"}]
    assert texts(text(user, "hello?")) == []
    data["is_active"] = ""  # switching it off is live at once
    operator_client.post(change, data)
    assert cache.get(workflow_triggers_key(project.pk)) is None


def test_send_now_on_another_projects_broadcast_is_not_found(operator_client, other_project):
    broadcast = Broadcast.objects.create(
        project=other_project, bot=bot_create(project=other_project), title="T", text="x"
    )
    url = reverse("admin:workflows_broadcast_send", args=[broadcast.pk])
    assert operator_client.post(url, {"confirm": "1"}).status_code == 404
    broadcast.refresh_from_db()
    assert broadcast.status == "draft"
