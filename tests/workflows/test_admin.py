"""Admin additions: publish with readable per-step errors, restore, draft check."""

from __future__ import annotations

from django.urls import reverse

from tests.workflows.conftest import publish
from workflows.models import Workflow, WorkflowVersion

GOOD = {"start": "hi", "steps": {"hi": {"type": "message", "text": "Hi {{ user.first_name }}"}}}
BAD = {
    "start": "hi",
    "steps": {"hi": {"type": "message", "text": "Hi {{ user.first_name", "next": "gone"}},
}


def test_publish_action_leads_to_the_review_page_with_errors_per_step(admin_client, project):
    good = Workflow.objects.create(project=project, name="Good", slug="good", draft=GOOD)
    bad = Workflow.objects.create(project=project, name="Bad", slug="bad", draft=BAD)
    url = reverse("admin:workflows_workflow_changelist")
    response = admin_client.post(
        url, {"action": "publish_drafts", "_selected_action": [good.pk, bad.pk]}, follow=True
    )
    assert "Choose one workflow: publishing shows its changes" in response.content.decode()

    response = admin_client.post(
        url, {"action": "publish_drafts", "_selected_action": [bad.pk]}, follow=True
    )
    page = response.content.decode()
    assert response.status_code == 200 and "Traceback" not in page
    assert "The draft cannot be published yet" in page and 'id="confirm-publish"' not in page
    assert "<b>hi</b>: next points to the step &#x27;gone&#x27;" in page
    assert "never closed" in page

    response = admin_client.post(
        url, {"action": "publish_drafts", "_selected_action": [good.pk]}, follow=True
    )
    page = response.content.decode()
    assert 'value="Publish version 1"' in page
    assert not WorkflowVersion.objects.exists()  # reviewing publishes nothing
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.published_version is None and bad.published_version is None

    change = admin_client.get(
        reverse("admin:workflows_workflow_change", args=[bad.pk])
    ).content.decode()
    assert "Not publishable yet" in change and "never closed" in change


def test_invalid_triggers_are_refused_by_the_form(admin_client, project):
    workflow = Workflow.objects.create(project=project, name="W", slug="w", draft=GOOD)
    url = reverse("admin:workflows_workflow_change", args=[workflow.pk])
    response = admin_client.post(
        url,
        {
            "project": project.pk,
            "name": "W",
            "slug": "w",
            "description": "",
            "triggers": '[{"type": "regex", "pattern": "("}]',
            "draft": '{"start": "hi", "steps": {"hi": {"type": "end"}}}',
            "is_active": "on",
            "priority": 0,
        },
    )
    assert response.status_code == 200
    assert "not a regular expression" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.triggers == []


def test_restore_action_copies_into_the_draft_and_nothing_goes_live(admin_client, project):
    workflow = publish(project, GOOD)
    v1 = workflow.published_version
    from workflows.publishing import workflow_publish

    end = {"start": "e", "steps": {"e": {"type": "end"}}}
    v2 = workflow_publish(workflow=workflow, definition=end)
    response = admin_client.post(
        reverse("admin:workflows_workflowversion_changelist"),
        {"action": "restore", "_selected_action": [v1.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert 'value="Copy version 1 into the draft"' in page and "unpublished changes" not in page
    workflow.refresh_from_db()
    assert workflow.draft == end  # asking is not doing
    restore = reverse("admin:workflows_workflow_restore", args=[workflow.pk, v1.pk])
    response = admin_client.post(restore, {"confirm": "1"}, follow=True)
    assert "Version 1 is now in the draft. Users still get version 2" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.draft == GOOD and workflow.published_version == v2
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 2
