"""Daily rollups: the figures the programme dashboard reads (never the raw rows).

Kept by ``analytics.rollups`` from the ledger (``users``), executions and step logs
(``workflows``). A day's rows are recomputed whole (deleted and written again in one
transaction), so re-running a day yields the same rows and a late event is corrected
by recomputing the days it touches.
"""

from __future__ import annotations

from django.db import models

from botplatform.models import Project


class ProjectDay(models.Model):
    """One project's programme figures for one day (UTC)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    members_new = models.IntegerField(default=0)
    members_total = models.IntegerField(default=0, help_text="Members at the end of the day.")
    active_1d = models.IntegerField(default=0)
    active_7d = models.IntegerField(default=0, help_text="Active in the 7 days ending here.")
    active_30d = models.IntegerField(default=0, help_text="Active in the 30 days ending here.")
    earned = models.BigIntegerField(default=0, help_text="Earned, welcome and referral bonuses.")
    spent = models.BigIntegerField(default=0)
    expired = models.BigIntegerField(default=0)
    clawed_back = models.BigIntegerField(default=0, help_text="Taken away by an operator.")
    added_by_operator = models.BigIntegerField(default=0)
    net = models.BigIntegerField(default=0, help_text="Change of what the programme owes.")
    redemptions = models.IntegerField(default=0)
    referrals_joined = models.IntegerField(default=0)
    referrers = models.IntegerField(default=0, help_text="Members whose invitation was used.")
    referrals_rewarded = models.IntegerField(default=0)
    executions_started = models.IntegerField(default=0)
    executions_completed = models.IntegerField(default=0)
    executions_failed = models.IntegerField(default=0)
    levels = models.JSONField(
        default=dict, blank=True, help_text="Members per level, as seen on that day."
    )
    phone_linked = models.IntegerField(null=True, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "day"]
        constraints = [
            models.UniqueConstraint(fields=["project", "day"], name="projectday_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} {self.day}"


class UserDay(models.Model):
    """A member was active that day (a conversation started or a ledger entry)."""

    project_id = models.IntegerField()
    user_id = models.BigIntegerField()
    day = models.DateField()
    cohort_week = models.DateField(help_text="Monday of the week the member joined.")
    last_at = models.DateTimeField(
        null=True, blank=True, help_text="The member's last activity that day (empty: older rows)."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project_id", "day", "user_id"], name="userday_unique"),
        ]
        indexes = [
            models.Index(fields=["project_id", "cohort_week", "day"]),
            models.Index(fields=["day"]),  # the active-in-N-days counts of a day
        ]

    def __str__(self) -> str:
        return f"user {self.user_id} active {self.day}"


class CohortWeek(models.Model):
    """Members who joined in one week and were active in another (weekly retention)."""

    project_id = models.IntegerField()
    cohort_week = models.DateField(help_text="Monday of the week the members joined.")
    active_week = models.DateField(help_text="Monday of the week they were active.")
    users = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "active_week", "cohort_week"], name="cohortweek_unique"
            ),
        ]
        indexes = [models.Index(fields=["project_id", "cohort_week"])]

    def __str__(self) -> str:
        return f"joined {self.cohort_week}, active {self.active_week}: {self.users}"


class WorkflowDay(models.Model):
    """Conversations of one workflow version started on one day, by how they ended."""

    project_id = models.IntegerField()
    workflow_id = models.IntegerField()
    version_id = models.IntegerField()
    day = models.DateField()
    started = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    timed_out = models.IntegerField(default=0)
    interrupted = models.IntegerField(default=0)
    in_progress = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "day", "workflow_id", "version_id"],
                name="workflowday_unique",
            ),
        ]
        indexes = [models.Index(fields=["workflow_id", "day"])]

    def __str__(self) -> str:
        return f"workflow {self.workflow_id} v{self.version_id} {self.day}"


class StepDay(models.Model):
    """How many conversations started on one day reached one step."""

    project_id = models.IntegerField()
    workflow_id = models.IntegerField()
    version_id = models.IntegerField()
    day = models.DateField()
    step = models.CharField(max_length=64)
    reached = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "day", "workflow_id", "version_id", "step"],
                name="stepday_unique",
            ),
        ]
        indexes = [models.Index(fields=["workflow_id", "day"])]

    def __str__(self) -> str:
        return f"{self.step} {self.day}"


class LevelMoveDay(models.Model):
    """Members of a project who moved from one level to another on one day."""

    project_id = models.IntegerField()
    day = models.DateField()
    from_level = models.CharField(max_length=64, blank=True)
    to_level = models.CharField(max_length=64, blank=True)
    moves = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project_id", "day", "from_level", "to_level"], name="levelmoveday_unique"
            ),
        ]
        indexes = [models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.day}: {self.from_level} → {self.to_level}: {self.moves}"


class BroadcastPress(models.Model):
    """One press of a button on a message a broadcast sent (a callback query).

    Read from the update journal by ``analytics.presses`` and kept here, because the
    journal is pruned; unique per (bot, update), so reading an update twice adds
    nothing.
    """

    project_id = models.IntegerField()
    broadcast_id = models.IntegerField()
    user_id = models.BigIntegerField()
    bot_id = models.IntegerField()
    update_id = models.BigIntegerField()
    message_id = models.BigIntegerField()
    pressed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bot_id", "update_id"], name="broadcastpress_unique"),
        ]
        indexes = [models.Index(fields=["broadcast_id", "user_id"])]

    def __str__(self) -> str:
        return f"broadcast {self.broadcast_id}: press by {self.user_id}"


class BroadcastResult(models.Model):
    """A broadcast's presses and returns (``analytics.broadcast_results``)."""

    broadcast_id = models.IntegerField(unique=True)
    project_id = models.IntegerField(db_index=True)
    presses = models.IntegerField(default=0)
    members_pressed = models.IntegerField(default=0)
    returned = models.JSONField(
        default=dict,
        blank=True,
        help_text="Recipients by the first day (0 = the send day) they were active after "
        "their delivery.",
    )
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"broadcast {self.broadcast_id}: {self.presses} presses"


class RollupState(models.Model):
    """How far the rollup has read each source (one row): what arrived since is new."""

    name = models.CharField(max_length=32, primary_key=True, default="default")
    ledger_id = models.BigIntegerField(default=0)
    step_log_id = models.BigIntegerField(default=0)
    member_id = models.BigIntegerField(default=0)
    level_change_id = models.BigIntegerField(default=0)
    update_id = models.BigIntegerField(
        default=0, help_text="Telegram updates read for broadcast button presses."
    )
    executions_changed_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollup read up to ledger {self.ledger_id}"
