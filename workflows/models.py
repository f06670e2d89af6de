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
        "triggers of the draft",
        default=list,
        blank=True,
        help_text="What will start this workflow once published: commands, text, button "
        "data, fallback. Users get the published version's triggers until you publish.",
    )
    draft = models.JSONField(
        default=empty_definition,
        help_text="The definition being edited. Users only ever see published versions.",
    )
    layout = models.JSONField(
        default=dict,
        blank=True,
        help_text="Where the visual editor draws each step: layout only, never behaviour.",
    )
    draft_saved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who last saved the draft in the visual editor (named in a conflict).",
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
    triggers = models.JSONField(
        default=list,
        blank=True,
        help_text="What starts this version while it is live (published with the definition).",
    )
    checksum = models.CharField(
        max_length=64, help_text="SHA-256 of the canonical definition and triggers."
    )
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(
        max_length=500, blank=True, help_text="Why it was published, as the operator wrote it."
    )
    is_preview = models.BooleanField(
        default=False,
        help_text="A draft tried in the chat simulator (number 0): never live, never listed.",
    )

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "number"],
                condition=Q(is_preview=False),
                name="workflowversion_unique_number",
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
            # Paused executions (a delay, an HTTP call) by due time: the timer poller.
            models.Index(
                fields=["wait_until"],
                condition=Q(status="running"),
                name="execution_paused_due_idx",
            ),
            models.Index(fields=["session_key", "status"]),
            # The daily rollups: conversations started in a range of days, and those
            # finished since the last run (workflows/migrations/0007: built concurrently).
            models.Index(fields=["started_at"], name="execution_started_idx"),
            models.Index(fields=["finished_at"], name="execution_finished_idx"),
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


# --- Admin: simulator and broadcasts ---------------------------------------------


class SimulatorMessage(models.Model):
    """One line of a simulator conversation (never sent to Telegram).

    Bot messages keep their buttons so the operator can press them; the row id is
    the "message id" an edit or a button press refers to.
    """

    class Direction(models.TextChoices):
        USER = "user", "Test user"
        BOT = "bot", "Bot"
        NOTICE = "notice", "Notice"

    user = models.ForeignKey(BotUser, on_delete=models.CASCADE, related_name="simulator_messages")
    direction = models.CharField(max_length=8, choices=Direction.choices)
    text = models.TextField(blank=True)
    buttons = models.JSONField(default=list, blank=True)
    reply_keyboard = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user", "id"]

    def __str__(self) -> str:
        return f"{self.direction}: {self.text[:40]}"


class Broadcast(models.Model):
    """A message (or a workflow) sent to a segment of a project's users."""

    class Segment(models.TextChoices):
        ALL = "all", "All users (blocked ones are counted, not sent to)"
        NOT_BLOCKED = "not_blocked", "Users who have not blocked the bot"
        LEVEL = "level", "Users of one level"
        CONDITION = "condition", "Users matching a condition on their variables"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        DONE = "done", "Sent"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="broadcasts")
    bot = models.ForeignKey(
        Bot,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="broadcasts",
        help_text="The bot that sends it. Empty: the project's first active bot.",
    )
    title = models.CharField(max_length=200, help_text="For you; users do not see it.")
    text = models.TextField(
        blank=True,
        help_text="The message (Telegram HTML; templates like {{ user.first_name }} work). "
        "Leave empty when a workflow is started instead.",
    )
    buttons = models.JSONField(
        default=list,
        blank=True,
        help_text="Buttons under the message: links or callback data for a trigger.",
    )
    workflow = models.ForeignKey(
        Workflow,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="broadcasts",
        help_text="Start this workflow for every recipient instead of sending the text.",
    )
    segment = models.CharField(max_length=16, choices=Segment.choices, default=Segment.NOT_BLOCKED)
    level = models.CharField(max_length=64, blank=True, help_text="For the segment “one level”.")
    condition = models.CharField(
        max_length=1000,
        blank=True,
        help_text='For the segment “condition”, e.g. vars.city == "Paris" and user.balance > 100.',
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.DRAFT, editable=False
    )
    scheduled_at = models.DateTimeField(
        null=True, blank=True, help_text="When to send it (server time, UTC)."
    )
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    total = models.PositiveIntegerField(default=0, editable=False)
    sent = models.PositiveIntegerField(default=0, editable=False)
    failed = models.PositiveIntegerField(default=0, editable=False)
    blocked = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "scheduled_at"])]

    def __str__(self) -> str:
        return self.title


class BroadcastDelivery(models.Model):
    """One recipient of a broadcast: claimed once, sent at most once."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        SENDING = "sending", "Being sent"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        BLOCKED = "blocked", "Blocked the bot"

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="deliveries")
    user = models.ForeignKey(BotUser, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=500, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["broadcast", "id"]
        verbose_name_plural = "broadcast deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["broadcast", "user"], name="broadcastdelivery_unique_user"
            ),
        ]
        indexes = [models.Index(fields=["broadcast", "status"])]

    def __str__(self) -> str:
        return f"{self.broadcast} → {self.user_id} ({self.status})"


class BroadcastMessage(models.Model):
    """A Telegram message a broadcast sent to one recipient (so that presses of its
    buttons can be counted per broadcast: ``analytics.presses``).

    Message ids are per chat and per bot, hence the unique (bot, chat, message).
    Written in bulk, once per batch of deliveries.
    """

    broadcast = models.ForeignKey(Broadcast, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(BotUser, on_delete=models.CASCADE, related_name="+")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="+")
    chat_id = models.BigIntegerField()
    message_id = models.BigIntegerField()
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["broadcast", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["bot", "chat_id", "message_id"], name="broadcastmessage_unique_message"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.broadcast_id}: message {self.message_id} in chat {self.chat_id}"
