"""Test data builders, in one place. Each returns a saved object."""

from __future__ import annotations

import itertools

from botplatform.models import Bot, Project
from users.models import BotUser
from workflows.models import Workflow, WorkflowExecution, WorkflowVersion

_seq = itertools.count(1)


def project_create(**fields) -> Project:
    n = next(_seq)
    fields.setdefault("name", f"Project {n}")
    fields.setdefault("slug", f"project-{n}")
    return Project.objects.create(**fields)


def bot_create(*, project: Project | None = None, **fields) -> Bot:
    n = next(_seq)
    fields.setdefault("token", f"{100000 + n}:AAH{'x' * 30}{n:04d}")
    fields.setdefault("username", f"test_{n}_bot")
    return Bot.objects.create(project=project or project_create(), **fields)


def bot_user_create(*, project: Project | None = None, **fields) -> BotUser:
    n = next(_seq)
    fields.setdefault("telegram_id", 5_000_000 + n)
    fields.setdefault("chat_id", fields["telegram_id"])
    fields.setdefault("first_name", f"User{n}")
    return BotUser.objects.create(project=project or project_create(), **fields)


def workflow_create(*, project: Project | None = None, definition: dict | None = None, **fields):
    """A workflow with one published version of ``definition``."""
    n = next(_seq)
    project = project or project_create()
    definition = definition or {"start": "hello", "steps": {"hello": {"type": "end"}}}
    fields.setdefault("name", f"Workflow {n}")
    fields.setdefault("slug", f"workflow-{n}")
    workflow = Workflow.objects.create(project=project, draft=definition, **fields)
    version = WorkflowVersion.objects.create(
        workflow=workflow, number=1, definition=definition, checksum="0" * 64
    )
    workflow.published_version = version
    workflow.save(update_fields=["published_version"])
    return workflow


def execution_create(*, workflow: Workflow, user: BotUser, **fields) -> WorkflowExecution:
    fields.setdefault("session_key", f"{user.project_id}:{user.chat_id}")
    return WorkflowExecution.objects.create(
        project=workflow.project,
        workflow=workflow,
        version=workflow.published_version,
        user=user,
        **fields,
    )
