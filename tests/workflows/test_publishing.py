"""Triggers are versioned with the definition: drafts are never live, publishing swaps
both in one transaction, restoring fills the draft only, and both leave an audit entry."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import bot_user_create, execution_create, project_create
from tests.workflows.conftest import command, publish, text, texts
from workflows.engine.validation import WorkflowValidationError
from workflows.models import Workflow, WorkflowVersion
from workflows.publishing import (
    DraftChanged,
    draft_checksum,
    workflow_draft_save,
    workflow_import,
    workflow_publish,
    workflow_restore_version,
)
from workflows.selectors import in_flight_get

HI = {"start": "m", "steps": {"m": {"type": "message", "text": "hi there"}}}
ASK = {
    "start": "ask",
    "steps": {
        "ask": {"type": "input", "text": "Name?", "variable": "name", "next": "bye"},
        "bye": {"type": "message", "text": "bye {{ vars.name }}"},
    },
}


@pytest.fixture
def ann(db):
    return User.objects.create_user("ann", is_staff=True)


def test_a_fallback_or_start_trigger_in_a_draft_takes_over_nobody(project, user):
    live = publish(project, HI, slug="menu", triggers=[{"type": "command", "command": "menu"}])
    other = publish(project, HI, slug="other", triggers=[{"type": "command", "command": "x"}])
    workflow_draft_save(
        workflow=other,
        definition={"start": "m", "steps": {"m": {"type": "message", "text": "TEST"}}},
        triggers=[{"type": "command", "command": "menu", "interrupt": True}, {"type": "fallback"}],
    )
    assert texts(command(user, "menu")) == ["hi there"]
    assert texts(text(user, "anything")) == []
    assert live.published_version.triggers == [{"type": "command", "command": "menu"}]


def test_publish_stores_definition_triggers_and_note_on_the_version_and_logs_it(project, ann, user):
    workflow = publish(project, HI, triggers=[{"type": "command", "command": "start"}])
    workflow_draft_save(
        workflow=workflow, definition=ASK, triggers=[{"type": "text", "text": "coffee"}]
    )
    version = workflow_publish(workflow=workflow, published_by=ann, note="  Coffee\x00 menu  ")
    assert (version.number, version.definition, version.note) == (2, ASK, "Coffee menu")
    assert version.triggers == [{"type": "text", "text": "coffee"}]
    assert texts(command(user, "start")) == []  # the old trigger left with the old version
    assert texts(text(user, "coffee")) == ["Name?"]
    entry = LogEntry.objects.get(object_id=str(workflow.pk))
    assert entry.user == ann and entry.get_edited_object() == workflow
    assert entry.change_message == "Published version 2. Note: Coffee menu"
    # Triggers alone make a new version too; the same draft twice does not.
    workflow_draft_save(workflow=workflow, definition=ASK, triggers=[])
    assert workflow_publish(workflow=workflow, note="no triggers").number == 3
    assert workflow_publish(workflow=workflow, note="again").number == 3


def test_a_conversation_in_flight_keeps_its_version_when_triggers_change(project, user):
    workflow = publish(project, ASK, triggers=[{"type": "command", "command": "start"}])
    assert texts(command(user, "start")) == ["Name?"]
    workflow_publish(
        workflow=workflow,
        definition={"start": "m", "steps": {"m": {"type": "message", "text": "new"}}},
        triggers=[{"type": "command", "command": "hello"}],
    )
    assert texts(text(user, "Ann")) == ["bye Ann"]


def test_publishing_a_draft_changed_since_it_was_reviewed_publishes_nothing(project, ann):
    workflow = publish(project, HI)
    reviewed = draft_checksum(workflow)
    workflow_draft_save(workflow=workflow, definition=ASK, triggers=workflow.triggers)
    with pytest.raises(DraftChanged):
        workflow_publish(workflow=workflow, published_by=ann, note="x", expected_checksum=reviewed)
    workflow.refresh_from_db()
    assert workflow.published_version.number == 1 and not LogEntry.objects.exists()


def test_an_invalid_draft_publishes_nothing_and_leaves_the_live_triggers(project, user):
    workflow = publish(project, HI, triggers=[{"type": "command", "command": "start"}])
    bad = {"start": "m", "steps": {"m": {"type": "message", "text": "x", "next": "ghost"}}}
    with pytest.raises(WorkflowValidationError):
        workflow_publish(workflow=workflow, definition=bad, triggers=[{"type": "fallback"}])
    workflow.refresh_from_db()
    assert workflow.draft == HI and workflow.triggers == [{"type": "command", "command": "start"}]
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1
    assert texts(text(user, "anything")) == []


def test_a_failure_inside_the_publish_leaves_no_half_published_version(
    project, user, ann, monkeypatch
):
    """Definition and triggers go live in one transaction: a failure at its very end
    (after the version row and the live pointer were written) rolls both back."""
    import workflows.publishing

    workflow = publish(project, HI, triggers=[{"type": "command", "command": "start"}])
    workflow_draft_save(workflow=workflow, definition=ASK, triggers=[{"type": "fallback"}])

    def audit_fails(*args, **kwargs):
        raise RuntimeError("the audit write failed")

    monkeypatch.setattr(workflows.publishing, "_audit", audit_fails)  # fault injection
    with pytest.raises(RuntimeError):
        workflow_publish(workflow=workflow, published_by=ann, note="x")
    workflow = Workflow.objects.select_related("published_version").get(pk=workflow.pk)
    assert workflow.published_version.number == 1
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1
    assert texts(command(user, "start")) == ["hi there"]
    assert texts(text(user, "anything")) == []


def test_restore_fills_the_draft_only_logs_it_and_refuses_a_draft_changed_meanwhile(
    project, ann, user
):
    workflow = publish(project, HI, triggers=[{"type": "command", "command": "one"}])
    v1 = workflow.published_version
    workflow_publish(workflow=workflow, definition=ASK, triggers=[{"type": "text", "text": "b"}])
    warned = draft_checksum(workflow)
    workflow_draft_save(workflow=workflow, definition=HI, triggers=[])
    with pytest.raises(DraftChanged):
        workflow_restore_version(version=v1, restored_by=ann, expected_checksum=warned)
    restored = workflow_restore_version(
        version=v1, restored_by=ann, expected_checksum=draft_checksum(workflow)
    )
    assert restored.draft == HI and restored.triggers == [{"type": "command", "command": "one"}]
    assert restored.published_version.number == 2
    assert texts(command(user, "one")) == []
    assert texts(text(user, "b")) == ["Name?"]
    (entry,) = LogEntry.objects.all()
    assert entry.user == ann
    assert entry.change_message == ("Copied version 1 into the draft (not live until published).")


def test_import_without_publish_changes_only_the_draft(project, user):
    publish(project, HI, slug="city", triggers=[{"type": "command", "command": "start"}])
    file = {"slug": "city", "definition": ASK, "triggers": [{"type": "fallback"}]}
    workflow, version = workflow_import(project_id=project.pk, data=file)
    assert version is None and workflow.triggers == [{"type": "fallback"}]
    assert texts(text(user, "whatever")) == []
    assert texts(command(user, "start")) == ["hi there"]
    _, version = workflow_import(project_id=project.pk, data=file, publish=True, note="go")
    assert version.triggers == [{"type": "fallback"}] and version.note == "go"
    assert texts(text(user, "whatever")) == ["Name?"]


def test_in_flight_counts_the_live_version_waiting_and_older_ones(project):
    workflow = publish(project, ASK)
    for status in ("waiting", "waiting", "running", "completed", "failed"):
        execution_create(workflow=workflow, user=bot_user_create(project=project), status=status)
    workflow_publish(workflow=workflow, definition=HI)
    execution_create(workflow=workflow, user=bot_user_create(project=project), status="waiting")
    execution_create(workflow=workflow, user=bot_user_create(project=project), status="cancelled")
    counts = in_flight_get(workflow=workflow)
    assert (counts.live, counts.live_waiting, counts.older) == (1, 1, 3)


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_every_version_its_workflows_triggers():
    """Before: triggers lived on the workflow only (and were live at once)."""
    before = [("workflows", "0003_version_preview")]
    after = [("workflows", "0004_version_triggers")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        # Projects are created with today's model: other apps' later migrations (new
        # project columns) stay applied while this app is rolled back.
        project_id = project_create(name="P").pk
        Workflow_ = old.get_model("workflows", "Workflow")
        Version_ = old.get_model("workflows", "WorkflowVersion")
        triggers = [{"type": "command", "command": "start", "interrupt": True}]
        workflow = Workflow_.objects.create(
            project_id=project_id, name="W", slug="w", draft=ASK, triggers=triggers
        )
        v1 = Version_.objects.create(workflow=workflow, number=1, definition=HI, checksum="a")
        v2 = Version_.objects.create(workflow=workflow, number=2, definition=ASK, checksum="b")
        workflow.published_version = v2
        workflow.save()
        bare = Workflow_.objects.create(project_id=project_id, name="B", slug="b", draft=HI)
        Version_.objects.create(workflow=bare, number=1, definition=HI, checksum="c")
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(after)
        # Then every later migration (new columns the models below read) as well.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    migrated = Workflow.objects.select_related("published_version").get(slug="w")
    assert migrated.triggers == triggers  # the draft keeps them
    assert migrated.published_version.triggers == triggers
    assert WorkflowVersion.objects.get(pk=v1.pk).triggers == triggers
    # Checksums now cover definition and triggers: the draft is the live version.
    assert migrated.published_version.checksum == draft_checksum(migrated)
    assert WorkflowVersion.objects.get(workflow__slug="b").triggers == []
    # Users get the migrated triggers.
    from workflows.engine.triggers import trigger_candidates

    (live,) = [c for c in trigger_candidates(migrated.project_id) if c["slug"] == "w"]
    assert live["triggers"] == triggers and live["published_version_id"] == v2.pk
