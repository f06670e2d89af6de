"""Drafts and versions: save a draft, publish it, restore an old version into the draft.

A workflow's *draft* is its ``draft`` definition plus its ``triggers``; a published
:class:`WorkflowVersion` holds both, frozen. Users only ever get published versions:
the trigger table (``workflows.engine.triggers``) reads the live version's triggers,
and conversations run the definition of the version they started on. So

- saving a draft changes nothing users get;
- publishing swaps definition and triggers together, in one transaction (one write
  of ``published_version``); the trigger table is dropped after the commit;
- restoring copies an old version into the draft only; going live is a publish.

Publishing and restoring by an operator write an admin log entry (who, when, what,
and why: the publish note). Also here: import and export of workflow files.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from botplatform.audit import audit_record
from workflows.engine.definition import definition_checksum
from workflows.engine.validation import (
    StepError,
    WorkflowValidationError,
    triggers_problems,
    workflow_validate,
)
from workflows.engine.version_cache import published_version_remember
from workflows.models import Workflow, WorkflowVersion, empty_definition

FILE_FORMAT = 1
NOTE_MAX = 500


class DraftConflict(Exception):
    """The draft changed since the operator opened it; their edit was not saved."""


class DraftChanged(Exception):
    """The draft is no longer the one the operator reviewed; nothing was published."""


def version_checksum(definition: Any, triggers: Any) -> str:
    """SHA-256 of a definition and its triggers: equal sums, the same workflow."""
    return definition_checksum({"definition": definition, "triggers": triggers or []})


def draft_checksum(workflow: Workflow) -> str:
    return version_checksum(workflow.draft, workflow.triggers)


def draft_is_published(workflow: Workflow) -> bool:
    """Whether the draft (definition and triggers) is exactly the live version."""
    live = workflow.published_version
    return live is not None and live.checksum == draft_checksum(workflow)


def draft_has_unpublished_changes(workflow: Workflow) -> bool:
    """Work in the draft that is not live (a never published workflow: anything but
    the empty draft it was created with). Replacing the draft would lose it."""
    if workflow.published_version is None:
        return workflow.draft != empty_definition() or bool(workflow.triggers)
    return not draft_is_published(workflow)


def _known_workflows(project_id: int) -> set[str]:
    return set(Workflow.objects.filter(project_id=project_id).values_list("slug", flat=True))


def workflow_validate_for(*, workflow: Workflow, definition: dict | None = None) -> None:
    """Validate a definition (the draft by default) and the draft's triggers in the
    workflow's project. Raises :class:`WorkflowValidationError`."""
    workflow_validate(
        workflow.draft if definition is None else definition,
        triggers=workflow.triggers,
        known_workflows=_known_workflows(workflow.project_id),
    )


def _audit(user, workflow: Workflow, message: str) -> None:
    """An entry on the workflow's History page (who, when, what, why)."""
    if user is None or not getattr(user, "pk", None):
        return  # a command line or a test: no operator to name
    audit_record(actor=user, obj=workflow, message=message)


def _version_cache_write(version: WorkflowVersion, project_id: int) -> None:
    transaction.on_commit(
        lambda: published_version_remember(project_id=project_id, version=version)
    )


def workflow_publish(
    *,
    workflow: Workflow,
    published_by=None,
    definition: dict | None = None,
    triggers: list | None = None,
    note: str = "",
    expected_checksum: str | None = None,
) -> WorkflowVersion:
    """Validate the draft and publish it: new conversations start on the new version.

    ``definition`` / ``triggers`` replace the draft's first (tests, import). With
    ``expected_checksum`` (the :func:`draft_checksum` the operator reviewed) a draft
    changed since raises :class:`DraftChanged` and nothing is published.

    One transaction, the workflow row locked: the version (definition and triggers)
    is created and made live by one write of ``published_version``; the trigger
    table is dropped after commit (the post_save receiver). Conversations in flight
    stay on their version. An unchanged draft returns the live version, no
    duplicate. Raises :class:`WorkflowValidationError` listing every problem by step.
    """
    note = note.replace("\x00", "").strip()[:NOTE_MAX]  # PostgreSQL text holds no NUL
    with transaction.atomic():
        locked = (
            Workflow.objects.select_for_update(of=("self",))
            .select_related("published_version")
            .get(pk=workflow.pk)
        )
        if expected_checksum is not None and draft_checksum(locked) != expected_checksum:
            raise DraftChanged("the draft was changed after it was reviewed")
        changed = []
        if definition is not None and definition != locked.draft:
            locked.draft = definition
            changed.append("draft")
        if triggers is not None and triggers != locked.triggers:
            locked.triggers = triggers
            changed.append("triggers")
        workflow_validate_for(workflow=locked)
        if changed:
            locked.save(update_fields=[*changed, "updated_at"])
        current = locked.published_version
        checksum = draft_checksum(locked)
        if current is None or current.checksum != checksum:
            number = (locked.versions.aggregate(top=Max("number"))["top"] or 0) + 1
            current = WorkflowVersion.objects.create(
                workflow=locked,
                number=number,
                definition=locked.draft,
                triggers=locked.triggers,
                checksum=checksum,
                published_by=published_by,
                note=note,
            )
            locked.published_version = current
            locked.save(update_fields=["published_version", "updated_at"])
            _version_cache_write(current, locked.project_id)
            _audit(published_by, locked, f"Published version {current.number}. Note: {note}")
    workflow.draft, workflow.triggers = locked.draft, locked.triggers
    workflow.published_version, workflow.updated_at = current, locked.updated_at
    return current


def workflow_restore_version(
    *, version: WorkflowVersion, restored_by=None, expected_checksum: str | None = None
) -> Workflow:
    """Copy an earlier version (definition and triggers) into the draft. Not live.

    Users keep the live version until someone publishes. With ``expected_checksum``
    (the draft the operator was warned about) a draft changed since raises
    :class:`DraftChanged` and nothing is written.
    """
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update(of=("self",)).get(pk=version.workflow_id)
        if expected_checksum is not None and draft_checksum(workflow) != expected_checksum:
            raise DraftChanged("the draft was changed after the warning was shown")
        workflow.draft, workflow.triggers = version.definition, version.triggers
        # Draft fields only: the trigger table stays cached, nothing goes live.
        workflow.save(update_fields=["draft", "triggers", "updated_at"])
        _audit(
            restored_by,
            workflow,
            f"Copied version {version.number} into the draft (not live until published).",
        )
    return workflow


def workflow_draft_save(
    *, workflow: Workflow, definition: dict, triggers: list, expected_updated_at=None
) -> None:
    """Store an edited draft and its triggers. Users keep the published version.

    A draft may be unfinished (publish checks it), but its triggers must be valid
    to be saved at all. With ``expected_updated_at`` the write is a conditional
    UPDATE: if someone saved the workflow in the meantime, nothing is written and
    :class:`DraftConflict` is raised, so two operators never silently overwrite
    each other. The trigger table is not touched: the draft is not live.
    """
    problems = triggers_problems(triggers)
    if problems:
        raise WorkflowValidationError(problems)
    rows = Workflow.objects.filter(pk=workflow.pk)
    if expected_updated_at is not None:
        rows = rows.filter(updated_at=expected_updated_at)
    now = timezone.now()
    if not rows.update(draft=definition, triggers=triggers, updated_at=now):
        raise DraftConflict("the workflow was changed by someone else since it was opened")
    workflow.draft, workflow.triggers, workflow.updated_at = definition, triggers, now


def workflow_preview_version(*, workflow: Workflow, created_by=None) -> WorkflowVersion:
    """The draft as a preview version (number 0, never live) for the chat simulator.

    Validated like a publish; an unchanged draft reuses its preview, so trying the
    same draft twice creates nothing new. Raises :class:`WorkflowValidationError`.
    """
    workflow_validate_for(workflow=workflow)
    checksum = draft_checksum(workflow)
    existing = WorkflowVersion.objects.filter(
        workflow=workflow, is_preview=True, checksum=checksum
    ).first()
    if existing is not None:
        return existing
    return WorkflowVersion.objects.create(
        workflow=workflow,
        number=0,
        definition=workflow.draft,
        triggers=workflow.triggers,
        checksum=checksum,
        published_by=created_by,
        note="draft preview (chat simulator)",
        is_preview=True,
    )


# --- Files -------------------------------------------------------------------------


def workflow_export(*, workflow: Workflow) -> dict[str, Any]:
    """The workflow's draft as a file (see docs/workflows.md): definition and triggers."""
    return {
        "format": FILE_FORMAT,
        "slug": workflow.slug,
        "name": workflow.name,
        "description": workflow.description,
        "priority": workflow.priority,
        "is_active": workflow.is_active,
        "triggers": workflow.triggers,
        "definition": workflow.draft,
    }


def workflow_import(
    *,
    project_id: int,
    data: dict,
    publish: bool = False,
    published_by=None,
    note: str = "",
) -> tuple[Workflow, WorkflowVersion | None]:
    """Create or update (by slug) a workflow's draft from a file; optionally publish it.

    Without ``publish`` only the draft (definition and triggers) changes: users keep
    the live version. All or nothing: with ``publish`` an invalid file raises
    :class:`WorkflowValidationError` and nothing is written.
    """
    if not isinstance(data, dict) or not isinstance(data.get("slug"), str) or not data["slug"]:
        raise WorkflowValidationError([StepError("", "the file needs a 'slug'")])
    if data.get("format", FILE_FORMAT) != FILE_FORMAT:
        raise WorkflowValidationError([StepError("", f"unsupported format {data.get('format')}")])
    if "definition" not in data:
        raise WorkflowValidationError([StepError("", "the file needs a 'definition'")])
    triggers = data.get("triggers") or []
    problems = triggers_problems(triggers)
    if problems:
        raise WorkflowValidationError(problems)
    with transaction.atomic():
        workflow, _ = Workflow.objects.select_for_update().get_or_create(
            project_id=project_id,
            slug=data["slug"],
            defaults={"name": data.get("name") or data["slug"]},
        )
        workflow.name = data.get("name") or workflow.name
        workflow.description = data.get("description", workflow.description) or ""
        workflow.priority = int(data.get("priority", workflow.priority) or 0)
        workflow.is_active = bool(data.get("is_active", True))
        workflow.triggers = triggers
        workflow.draft = data["definition"]
        workflow.save(
            update_fields=[
                "name",
                "description",
                "priority",
                "is_active",
                "triggers",
                "draft",
                "updated_at",
            ]
        )
        version = None
        if publish:
            version = workflow_publish(
                workflow=workflow,
                published_by=published_by,
                note=note or "imported from a workflow file",
            )
    return workflow, version
