"""Workflows, their immutable published versions, and executions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from botplatform.models import Bot, Project
from users.models import BotUser


def empty_definition() -> dict:
    return {"start": "start", "steps": {"start": {"type": "end"}}}


class Workflow(models.Model):
    """A conversation an operator builds. Users run its published version."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="workflows")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    triggers = models.JSONField(
        default=list,
        blank=True,
        help_text="What starts this workflow: commands, text, button data, fallback.",
    )
    draft = models.JSONField(
        default=empty_definition,
        help_text="The definition being edited. Users only ever see published versions.",
    )
    is_active = models.BooleanField(default=True)
    priority = models.IntegerField(
        default=0, help_text="When several workflows match a message, the highest wins."
    )
    published_version = models.ForeignKey(
        "WorkflowVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version new conversations start on.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "-priority", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "slug"], name="workflow_unique_project_slug"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class WorkflowVersion(models.Model):
    """An immutable, validated snapshot of a workflow definition."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the canonical definition.")
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "number"], name="workflowversion_unique_number"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} v{self.number}"


class WorkflowExecution(models.Model):
    """One run of a workflow version for one user in one chat (session)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting for the user"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="executions")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="executions")
    version = models.ForeignKey(
        WorkflowVersion, on_delete=models.PROTECT, related_name="executions"
    )
    user = models.ForeignKey(BotUser, on_delete=models.CASCADE, related_name="executions")
    bot = models.ForeignKey(
        Bot, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    session_key = models.CharField(
        max_length=128, help_text="Identifies the chat the conversation happens in."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    current_step = models.CharField(max_length=64, blank=True)
    context = models.JSONField(default=dict, blank=True)
    wait_until = models.DateTimeField(
        null=True, blank=True, help_text="A waiting execution times out at this moment."
    )
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["session_key"],
                condition=Q(status="waiting"),
                name="execution_one_waiting_per_session",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "status"]),
            models.Index(
                fields=["wait_until"],
                condition=Q(status="waiting"),
                name="execution_waiting_due_idx",
            ),
            models.Index(fields=["session_key", "status"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.workflow} ({self.get_status_display()})"


class ExecutionStepLog(models.Model):
    """What one step of an execution did: for operators debugging a conversation."""

    execution = models.ForeignKey(
        WorkflowExecution, on_delete=models.CASCADE, related_name="step_logs"
    )
    step = models.CharField(max_length=64)
    step_type = models.CharField(max_length=32)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(default=dict, blank=True)
    duration_ms = models.FloatField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "id"]
        verbose_name = "step log entry"
        verbose_name_plural = "step log"

    def __str__(self) -> str:
        return f"{self.step} ({self.step_type})"
