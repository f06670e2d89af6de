"""The step editor: forms in, a draft out; publish with errors beside their steps."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.admin.helpers import form_data
from tests.workflows.conftest import publish
from workflows.models import Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


def _url(workflow) -> str:
    return reverse("admin:workflows_workflow_editor", args=[workflow.pk])


def _form(client, workflow) -> dict:
    response = client.get(_url(workflow))
    assert response.status_code == 200
    return form_data(response.content.decode(), "editor-form")


def _card(data: dict, step_id: str) -> str:
    return next(
        key.split("-")[0]
        for key, value in data.items()
        if key.endswith("-_orig") and value == step_id
    )


def test_an_operator_builds_and_publishes_a_workflow_without_json(
    operator_client, project, operator
):
    workflow = Workflow.objects.create(project=project, name="Menu", slug="menu")
    # The new workflow has one "end" step called "start"; add a message and a reply.
    data = _form(operator_client, workflow)
    data.update(_action="add_step", new_type="message", new_id="hello")
    response = operator_client.post(_url(workflow), data)
    assert response.status_code == 302
    data = _form(operator_client, workflow)
    data.update(_action="add_step", new_type="message", new_id="bonus_info")
    operator_client.post(_url(workflow), data)

    data = _form(operator_client, workflow)
    hello, info, old = _card(data, "hello"), _card(data, "bonus_info"), _card(data, "start")
    data.update(
        {
            "start": "hello",
            f"{hello}-text": "Hi {{ user.first_name }}!",
            f"{hello}-btn0-text": "Bonuses",
            f"{hello}-btn0-kind": "next",
            f"{hello}-btn0-next": "bonus_info",
            f"{hello}-btn1-text": "Site",
            f"{hello}-btn1-row": "1",
            f"{hello}-btn1-kind": "url",
            f"{hello}-btn1-value": "https://example.com",
            f"{hello}-timeout": "600",
            f"{info}-text": "You have {{ user.balance }} bonuses.",
            f"{old}-_delete": "1",
            "t0-type": "command",
            "t0-value": "/start",
            "t0-interrupt": "1",
            "_action": "publish",
        }
    )
    response = operator_client.post(_url(workflow), data, follow=True)
    page = response.content.decode()
    # "Publish" saves the draft and shows what would change; nothing is live yet.
    assert response.redirect_chain[-1][0].endswith("/publish/"), page[:3000]
    assert not WorkflowVersion.objects.exists()
    assert "Command /start (interrupts a waiting conversation)" in page
    confirm = form_data(page, "publish-form")
    response = operator_client.post(
        response.redirect_chain[-1][0], {**confirm, "note": "first menu"}, follow=True
    )
    page = response.content.decode()
    assert "is live as version 1" in page, page[:3000]
    workflow.refresh_from_db()
    assert workflow.triggers == [{"type": "command", "command": "start", "interrupt": True}]
    assert workflow.draft == {
        "start": "hello",
        "steps": {
            "hello": {
                "type": "message",
                "text": "Hi {{ user.first_name }}!",
                "buttons": [
                    [
                        {"text": "Bonuses", "next": "bonus_info"},
                        {"text": "Site", "url": "https://example.com"},
                    ]
                ],
                "timeout": 600,
            },
            "bonus_info": {"type": "message", "text": "You have {{ user.balance }} bonuses."},
        },
    }
    version = WorkflowVersion.objects.get(workflow=workflow)
    assert version.published_by == operator and version.definition == workflow.draft
    assert version.triggers == workflow.triggers and version.note == "first menu"


def test_publish_errors_are_shown_beside_the_step_and_the_draft_is_kept(operator_client, project):
    workflow = Workflow.objects.create(
        project=project,
        name="W",
        slug="w",
        draft={
            "start": "a",
            "steps": {
                "a": {"type": "message", "text": "Hi", "next": "b"},
                "b": {"type": "message", "text": "Bye"},
            },
        },
    )
    data = _form(operator_client, workflow)
    data[f"{_card(data, 'a')}-text"] = "Hi {{ balance }}"
    data[f"{_card(data, 'b')}-_delete"] = "1"
    data["_action"] = "publish"
    response = operator_client.post(_url(workflow), data)
    page = response.content.decode()
    assert response.status_code == 200 and "Traceback" not in page
    assert "The draft is saved but cannot be published yet" in page
    # The card of step "a" carries both of its problems, as a list inside the card.
    card = page.split('id="step-a"', 1)[1].split("</fieldset>", 1)[0]
    assert "step-errors" in card
    assert "unknown variable &#x27;balance&#x27;" in card
    assert "which does not exist" in card
    workflow.refresh_from_db()
    assert workflow.published_version is None
    assert set(workflow.draft["steps"]) == {"a"}  # the draft was saved anyway


def test_unreadable_fields_save_nothing_and_say_why(operator_client, project):
    draft = {"start": "a", "steps": {"a": {"type": "delay", "minutes": 5}}}
    workflow = Workflow.objects.create(project=project, name="W", slug="w", draft=draft)
    data = _form(operator_client, workflow)
    data[f"{_card(data, 'a')}-minutes"] = "five"
    response = operator_client.post(_url(workflow), data)
    page = response.content.decode()
    assert response.status_code == 200
    assert "Nothing was saved" in page and "Enter a number, e.g. 1.5." in page
    workflow.refresh_from_db()
    assert workflow.draft == draft


def test_renaming_a_step_updates_every_reference_and_unknown_fields_survive(
    operator_client, project
):
    draft = {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "input",
                "text": "City?",
                "variable": "city",
                "validate": {"type": "text", "min": 2},
                "next": "check",
                "x_custom": {"keep": True},
            },
            "check": {
                "type": "condition",
                "branches": [{"if": 'vars.city == "Paris"', "next": "paris"}],
                "default": "ask",
            },
            "paris": {
                "type": "message",
                "text": "Bonjour",
                "buttons": [[{"text": "Again", "next": "ask"}]],
            },
        },
    }
    workflow = Workflow.objects.create(project=project, name="W", slug="w", draft=draft)
    data = _form(operator_client, workflow)
    data[f"{_card(data, 'ask')}-_id"] = "ask_city"
    response = operator_client.post(_url(workflow), data)
    assert response.status_code == 302
    workflow.refresh_from_db()
    steps = workflow.draft["steps"]
    assert workflow.draft["start"] == "ask_city"
    assert steps["ask_city"]["x_custom"] == {"keep": True}
    assert steps["ask_city"]["validate"] == {"type": "text", "min": 2}
    assert steps["check"]["default"] == "ask_city"
    assert steps["check"]["branches"] == [{"if": 'vars.city == "Paris"', "next": "paris"}]
    assert steps["paris"]["buttons"] == [[{"text": "Again", "next": "ask_city"}]]


def test_a_round_trip_through_the_form_changes_nothing(operator_client, project):
    import json
    from pathlib import Path

    from workflows.publishing import workflow_import

    demo = json.loads(Path("workflows/fixtures/demo.json").read_text())
    files = demo if isinstance(demo, list) else demo.get("workflows", [demo])
    for file in files:
        workflow, _ = workflow_import(project_id=project.pk, data=file)
        before = (workflow.draft, workflow.triggers)
        data = _form(operator_client, workflow)
        response = operator_client.post(_url(workflow), data)
        assert response.status_code == 302, response.content.decode()[:2000]
        workflow.refresh_from_db()
        assert (workflow.draft, workflow.triggers) == before


def test_invalid_triggers_are_refused_and_nothing_is_saved(operator_client, project):
    workflow = Workflow.objects.create(project=project, name="W", slug="w")
    data = _form(operator_client, workflow)
    data.update({"t0-type": "regex", "t0-value": "("})
    response = operator_client.post(_url(workflow), data)
    assert "not a regular expression" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.triggers == []


def test_the_workflow_page_shows_the_diagram_and_the_json_fallback(operator_client, project):
    workflow = publish(
        project,
        {
            "start": "a",
            "steps": {
                "a": {"type": "message", "text": "Hi", "buttons": [[{"text": "Go", "next": "b"}]]},
                "b": {"type": "end"},
            },
        },
    )
    page = operator_client.get(
        reverse("admin:workflows_workflow_change", args=[workflow.pk])
    ).content.decode()
    assert "<svg" in page and 'data-step="a"' in page and 'data-from="a" data-to="b"' in page
    assert "Advanced: edit as JSON" in page and 'name="draft"' in page
    assert reverse("admin:workflows_workflow_editor", args=[workflow.pk]) in page


def test_two_operators_never_overwrite_each_other(operator_client, project):
    draft = {"start": "a", "steps": {"a": {"type": "message", "text": "One"}}}
    workflow = Workflow.objects.create(project=project, name="W", slug="w", draft=draft)
    mine = _form(operator_client, workflow)
    theirs = _form(operator_client, workflow)
    card = _card(mine, "a")
    theirs[f"{card}-text"] = "Theirs"
    assert operator_client.post(_url(workflow), theirs).status_code == 302
    mine[f"{card}-text"] = "Mine"
    response = operator_client.post(_url(workflow), mine)
    page = response.content.decode()
    assert response.status_code == 200 and "Someone else saved this workflow" in page
    assert "Mine" in page  # the operator's text is still in the form
    workflow.refresh_from_db()
    assert workflow.draft["steps"]["a"]["text"] == "Theirs"
    # Submitting the same stale form again is still refused.
    assert "Someone else saved" in operator_client.post(_url(workflow), mine).content.decode()


def test_drafts_the_editor_cannot_show_are_sent_to_the_json_editor(operator_client, project):
    workflow = Workflow.objects.create(project=project, name="W", slug="w", draft={"steps": []})
    page = operator_client.get(_url(workflow)).content.decode()
    assert "not in a shape this editor understands" in page and "Traceback" not in page
    odd = {
        "start": "a",
        "steps": {"a": {"type": "message", "text": "x", "buttons": "oops", "timeout": "soon"}},
    }
    workflow.draft = odd
    workflow.save(update_fields=["draft"])
    data = _form(operator_client, workflow)
    response = operator_client.post(_url(workflow), data)
    assert response.status_code == 200 and "Enter a whole number" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.draft == odd


def test_an_invalid_new_step_name_is_explained(operator_client, project):
    workflow = Workflow.objects.create(project=project, name="W", slug="w")
    data = _form(operator_client, workflow)
    data.update(_action="add_step", new_type="end", new_id="two words")
    response = operator_client.post(_url(workflow), data, follow=True)
    assert "“two words” was taken or is not a valid name" in response.content.decode()
    workflow.refresh_from_db()
    assert "end_2" in workflow.draft["steps"]
