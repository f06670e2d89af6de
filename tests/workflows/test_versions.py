"""Publishing, version pinning, restore, and the published-version cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from botplatform.cache import workflow_version_key
from tests.workflows.conftest import command, publish, text, texts
from workflows.engine.validation import WorkflowValidationError
from workflows.models import WorkflowExecution, WorkflowVersion
from workflows.publishing import workflow_publish, workflow_restore_version


def ask(reply: str) -> dict:
    return {
        "start": "ask",
        "steps": {
            "ask": {"type": "input", "text": "Name?", "variable": "name", "next": "reply"},
            "reply": {"type": "message", "text": reply},
        },
    }


def test_publish_creates_immutable_numbered_versions(project):
    workflow = publish(project, ask("v1 {{ vars.name }}"))
    v1 = workflow.published_version
    assert v1.number == 1 and len(v1.checksum) == 64
    # Publishing the same definition again does not create a duplicate.
    assert workflow_publish(workflow=workflow) == v1
    v2 = workflow_publish(workflow=workflow, definition=ask("v2"))
    assert v2.number == 2
    workflow.refresh_from_db()
    assert workflow.published_version == v2 and workflow.draft == ask("v2")
    assert WorkflowVersion.objects.get(pk=v1.pk).definition == ask("v1 {{ vars.name }}")


def test_invalid_publish_changes_nothing(project):
    workflow = publish(project, ask("v1"))
    bad = {"start": "a", "steps": {"a": {"type": "message", "text": "x", "next": "ghost"}}}
    with pytest.raises(WorkflowValidationError) as info:
        workflow_publish(workflow=workflow, definition=bad)
    assert [(e.step, "ghost" in e.message) for e in info.value.errors] == [("a", True)]
    workflow.refresh_from_db()
    assert workflow.published_version.number == 1 and workflow.draft == ask("v1")
    assert WorkflowVersion.objects.count() == 1


def test_conversation_in_flight_stays_on_its_version(project, user, bot_user):
    workflow = publish(project, ask("old reply"))
    command(user, "start")
    workflow_publish(workflow=workflow, definition=ask("new reply"))
    # The user who started on v1 finishes on v1; a new conversation gets v2.
    assert texts(text(user, "Ann")) == ["old reply"]
    command(bot_user, "start")
    assert texts(text(bot_user, "Bob")) == ["new reply"]
    numbers = sorted(WorkflowExecution.objects.values_list("version__number", flat=True))
    assert numbers == [1, 2]


def test_publish_that_removes_the_waiting_step_does_not_break_the_wait(project, user):
    workflow = publish(project, ask("old reply"))
    command(user, "start")
    workflow_publish(
        workflow=workflow,
        definition={"start": "hi", "steps": {"hi": {"type": "message", "text": "hi"}}},
    )
    assert texts(text(user, "Ann")) == ["old reply"]


def test_restore_copies_an_old_version_into_the_draft_and_publishing_makes_it_live(
    project, user, bot_user
):
    workflow = publish(project, ask("first"), triggers=[{"type": "command", "command": "one"}])
    v1 = workflow.published_version
    workflow_publish(
        workflow=workflow,
        definition=ask("second"),
        triggers=[{"type": "command", "command": "two"}],
    )
    workflow_restore_version(version=v1)
    workflow.refresh_from_db()
    # Definition and triggers are back in the draft; users still get version 2.
    assert workflow.draft == v1.definition and workflow.triggers == v1.triggers
    assert workflow.published_version.number == 2
    assert texts(command(user, "one")) == []
    assert texts(command(user, "two")) == ["Name?"]
    assert texts(text(user, "x")) == ["second"]
    restored = workflow_publish(workflow=workflow, note="back to the first")
    assert restored.number == 3 and restored.note == "back to the first"
    assert restored.definition == v1.definition and restored.triggers == v1.triggers
    assert texts(command(bot_user, "two")) == []
    command(bot_user, "one")
    assert texts(text(bot_user, "x")) == ["first"]


def test_version_cache_is_rewritten_on_publish_and_never_served_stale(
    project, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        workflow = publish(project, ask("one"))
    key = workflow_version_key(project.pk, workflow.pk)
    assert cache.get(key)["number"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        workflow_publish(workflow=workflow, definition=ask("two"))
    assert cache.get(key)["number"] == 2
    # Even if the cache held an old version, the workflow row's pointer wins.
    cache.set(
        key, {"id": workflow.versions.get(number=1).pk, "number": 1, "definition": ask("one")}, 60
    )
    command(user, "start")
    assert texts(text(user, "x")) == ["two"]
    assert cache.get(key)["number"] == 2
