"""Versions (who, when, diff, restore, conversations in flight) and import/export."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.factories import bot_user_create, execution_create
from tests.workflows.conftest import publish
from workflows.diagram import diagram_svg
from workflows.models import Workflow, WorkflowVersion
from workflows.publishing import workflow_publish

pytestmark = pytest.mark.django_db

V1 = {"start": "a", "steps": {"a": {"type": "message", "text": "Hello"}}}
V2 = {"start": "a", "steps": {"a": {"type": "message", "text": "Hello again"}}}


def test_versions_page_shows_who_when_diff_and_conversations_in_flight(
    operator_client, operator, project
):
    workflow = publish(project, V1)
    v1 = workflow.published_version
    user = bot_user_create(project=project)
    for _ in range(2):
        execution_create(workflow=workflow, user=bot_user_create(project=project), status="running")
    execution_create(workflow=workflow, user=user, status="waiting")
    execution_create(workflow=workflow, user=user, status="completed")
    workflow_publish(workflow=workflow, definition=V2, published_by=operator)
    url = reverse("admin:workflows_workflow_versions", args=[workflow.pk])
    page = operator_client.get(url).content.decode()
    row1 = page.split('id="version-1"', 1)[1].split("</tr>", 1)[0]
    row2 = page.split('id="version-2"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="in-flight">3 (1 waiting for the user)</td>' in row1
    assert '<td class="in-flight">0</td>' in row2 and "live" in row2 and "ann" in row2
    # The changes read as fields with old → new text, not as a JSON diff.
    changed = page.split('data-step="a"', 1)[1].split("</section>", 1)[0]
    assert "changed</span> step <code>a</code> · Send a message" in changed
    assert '<td class="vdiff-old">Hello</td>' in changed
    assert '<td class="vdiff-new">Hello again</td>' in changed
    assert "&quot;text&quot;" not in page and "@@" not in page

    # "Copy into the draft": the draft is version 2 (published), so no warning.
    restore = reverse("admin:workflows_workflow_restore", args=[workflow.pk, v1.pk])
    assert f'action="{restore}"' in page
    response = operator_client.post(restore, {}, follow=True)
    assert "Version 1 is now in the draft. Users still get version 2" in (response.content.decode())
    workflow.refresh_from_db()
    assert workflow.published_version.number == 2 and workflow.draft == V1
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 2


def test_export_then_import_into_a_project_and_publish(operator_client, project, other_project):
    from tests.admin.conftest import operator_create

    workflow = publish(project, V1, triggers=[{"type": "command", "command": "hello"}])
    response = operator_client.get(reverse("admin:workflows_workflow_export", args=[workflow.pk]))
    assert response["Content-Disposition"] == f'attachment; filename="{workflow.slug}.json"'
    data = json.loads(response.content)
    assert data["definition"] == V1 and data["triggers"] == [
        {"type": "command", "command": "hello"}
    ]

    operator_client.force_login(operator_create("both", project, other_project))
    upload = SimpleUploadedFile("w.json", response.content, content_type="application/json")
    response = operator_client.post(
        reverse("admin:workflows_workflow_import"),
        {"project": other_project.pk, "file": upload, "publish": "on", "note": "copy"},
        follow=True,
    )
    assert "imported and published as version 1" in response.content.decode()
    copy = Workflow.objects.get(project=other_project, slug=workflow.slug)
    assert copy.published_version.definition == V1 and copy.published_version.note == "copy"
    assert copy.published_version.triggers == [{"type": "command", "command": "hello"}]


def test_import_refuses_bad_files_with_readable_errors_and_changes_nothing(
    operator_client, project
):
    url = reverse("admin:workflows_workflow_import")
    cases = [
        (b"not json", "This is not a JSON file"),
        (b"[1, 2]", "The file must hold one workflow"),
        (
            json.dumps(
                {"slug": "x", "definition": {"start": "a", "steps": {"a": {"type": "message"}}}}
            ).encode(),
            "&#x27;text&#x27; is missing",
        ),
    ]
    for content, message in cases:
        response = operator_client.post(
            url,
            {
                "project": project.pk,
                "file": SimpleUploadedFile("w.json", content),
                "publish": "on",
                "note": "try",
            },
        )
        page = response.content.decode()
        assert response.status_code == 200 and message in page, page[:3000]
    assert not Workflow.objects.filter(project=project).exists()
    assert not WorkflowVersion.objects.exists()


def test_diagram_draws_steps_arrows_and_marks_problems():
    svg = diagram_svg(
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "<b>Pick</b> & go",
                    "buttons": [[{"text": "Quiz", "next": "check"}]],
                },
                "check": {
                    "type": "condition",
                    "branches": [{"if": "user.balance > 5", "next": "menu"}],
                    "default": "gone",
                },
                "orphan": {"type": "end"},
            },
        }
    )
    assert svg.startswith("<svg") and svg.count('class="step"') == 3
    assert 'data-from="menu" data-to="check"' in svg and 'data-from="check" data-to="menu"' in svg
    assert ">Quiz<" in svg and "if user.balance &gt; 5" in svg
    assert "missing: gone" in svg and "unreachable" in svg
    assert "<b>Pick" not in svg and "&amp; go" in svg  # text is escaped
    assert "<svg" not in diagram_svg({"steps": "nonsense"})


def test_the_version_list_counts_conversations_in_one_query(operator_client, project):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = reverse("admin:workflows_workflowversion_changelist")
    workflow = publish(project, V1)
    execution_create(workflow=workflow, user=bot_user_create(project=project), status="waiting")
    operator_client.get(url)
    with CaptureQueriesContext(connection) as few:
        page = operator_client.get(url).content.decode()
    assert '<td class="field-in_flight">1</td>' in page
    for n in range(5):
        other = publish(
            project, {"start": "a", "steps": {"a": {"type": "message", "text": f"{n}"}}}
        )
        execution_create(workflow=other, user=bot_user_create(project=project), status="running")
    with CaptureQueriesContext(connection) as many:
        operator_client.get(url)
    assert len(many) == len(few)


def test_admin_export_and_import_carry_every_language(operator_client, project, other_project):
    from tests.admin.conftest import operator_create

    bilingual = {
        "start": "hi",
        "steps": {
            "hi": {
                "type": "message",
                "text": {"en": "Hello", "ru": "Привет"},
                "buttons": [{"text": {"en": "Go", "ru": "Вперёд"}, "next": "bye"}],
            },
            "bye": {"type": "message", "text": {"ru": "Пока", "en": "Bye"}},
        },
    }
    workflow = publish(project, bilingual, triggers=[{"type": "command", "command": "hi"}])
    response = operator_client.get(reverse("admin:workflows_workflow_export", args=[workflow.pk]))
    assert json.loads(response.content)["definition"] == bilingual
    operator_client.force_login(operator_create("both", project, other_project))
    upload = SimpleUploadedFile("w.json", response.content, content_type="application/json")
    operator_client.post(
        reverse("admin:workflows_workflow_import"),
        {"project": other_project.pk, "file": upload, "publish": "on", "note": "copy"},
    )
    copy = Workflow.objects.get(project=other_project, slug=workflow.slug)
    assert copy.published_version.definition == bilingual
