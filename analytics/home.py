"""The operator's home (the admin index): one project at a glance.

Bots with their live state, workflows with their published version and problems,
today's figures (from the rollups), shortcuts, and warnings in plain words: is
anything broken right now?
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from analytics.models import ProjectDay, WorkflowDay
from botplatform import roles
from botplatform.bots import bot_live_state
from botplatform.heartbeat import background_report
from botplatform.models import Bot, Project, TelegramUpdate
from workflows.models import Broadcast, Workflow
from workflows.publishing import draft_has_unpublished_changes, workflow_validate_for

STALLED_AFTER = timedelta(minutes=5)  # a sending broadcast that moved no further
JOURNAL_LAG = timedelta(minutes=1)  # updates waiting longer than this...
JOURNAL_BACKLOG = 20  # ...and more of them than this: the journal is backing up


def _warnings(project: Project, bots: list[Bot], background: dict, *, now) -> list[str]:
    warnings = list(background["warnings"])
    for bot in bots:
        if bot.status == Bot.Status.UNAUTHORIZED:
            warnings.append(
                f"Telegram refuses the token of @{bot.username or bot.pk}: the bot does not "
                "answer. Paste a new token from @BotFather on the bot's page."
            )
    waiting = TelegramUpdate.objects.filter(
        bot__project=project,
        status__in=[TelegramUpdate.Status.PENDING, TelegramUpdate.Status.HANDLED],
        received_at__lt=now - JOURNAL_LAG,
    ).count()
    if waiting > JOURNAL_BACKLOG:
        warnings.append(
            f"{waiting} Telegram messages have waited more than a minute to be answered: "
            "the bot runner is behind or stopped (manage.py runbot --all)."
        )
    for broadcast in Broadcast.objects.filter(
        project=project, status=Broadcast.Status.SENDING, updated_at__lt=now - STALLED_AFTER
    ):
        minutes = int((now - broadcast.updated_at).total_seconds() // 60)
        warnings.append(
            f"The broadcast “{broadcast.title}” is stalled at {broadcast.sent} of "
            f"{broadcast.total} for {minutes} minutes: is a Celery worker running?"
        )
    return warnings


def _workflows(project: Project, *, now) -> list[dict]:
    # From the rollup (conversations started yesterday or today), not the raw rows:
    # a project's failed executions are too many to count on every home page.
    failed = dict(
        WorkflowDay.objects.filter(
            project_id=project.pk, day__gte=now.date() - timedelta(days=1), failed__gt=0
        )
        .values("workflow_id")
        .annotate(n=Sum("failed"))
        .values_list("workflow_id", "n")
    )
    out = []
    for workflow in Workflow.objects.filter(project=project).select_related("published_version"):
        problems = []
        pending = draft_has_unpublished_changes(workflow)
        if workflow.published_version is None:
            problems.append("never published: users cannot reach it")
        if not workflow.is_active:
            problems.append("switched off")
        if pending:
            try:
                workflow_validate_for(workflow=workflow)
            except Exception as exc:  # the validator's errors, said as it says them
                errors = getattr(exc, "errors", None) or [exc]
                problems.append(f"the draft cannot be published: {str(errors[0])[:160]}")
        if failed.get(workflow.pk):
            problems.append(f"{failed[workflow.pk]} conversation(s) started since yesterday failed")
        out.append(
            {
                "workflow": workflow,
                "version": workflow.published_version.number
                if workflow.published_version
                else None,
                "pending": pending,
                "problems": problems,
            }
        )
    return out


def _today(project: Project, *, today) -> list[tuple[str, object]]:
    row = ProjectDay.objects.filter(project=project, day=today).first()
    owed = ProjectDay.objects.filter(project=project).aggregate(s=Sum("net"))["s"] or 0
    if row is None:
        return [("Members", "not computed yet"), ("What the programme owes", owed)]
    return [
        ("Members", row.members_total),
        ("New members today", row.members_new),
        ("Active today", row.active_1d),
        ("Active in the last 30 days", row.active_30d),
        ("Bonuses earned today", row.earned),
        ("Bonuses spent today", row.spent),
        ("Redemptions today", row.redemptions),
        ("Conversations started today", row.executions_started),
        ("What the programme owes", owed),
    ]


def _shortcuts(user, project: Project) -> list[tuple[str, str]]:
    pk = project.pk
    links = []
    if roles.may(user, roles.ADD, Workflow, project_id=pk):
        links.append(("New workflow", reverse("admin:workflows_workflow_add")))
    if roles.may(user, roles.SIMULATE, project_id=pk):
        links.append(("Try it in the simulator", reverse("admin:workflows_simulator_index")))
    if roles.may(user, roles.ADD, Broadcast, project_id=pk):
        links.append(("New broadcast", reverse("admin:workflows_broadcast_add")))
    if roles.may(user, roles.DASHBOARD, project_id=pk):
        links.append(
            ("Programme figures", reverse("admin:botplatform_project_programme", args=[pk]))
        )
        links.append(
            ("Where people drop out", reverse("admin:botplatform_project_funnel", args=[pk]))
        )
        links.append(
            (
                "Broadcast results",
                reverse("admin:botplatform_project_broadcast_results", args=[pk]),
            )
        )
    return links


def home_context(user, project_id: object = None) -> dict:
    """Everything the home page shows for the chosen (or first) project of ``user``."""
    projects = list(roles.projects_for(user).order_by("name"))
    if not projects:
        return {"projects": []}
    chosen = next((p for p in projects if str(p.pk) == str(project_id)), projects[0])
    now = timezone.now()
    bots = list(Bot.objects.filter(project=chosen).order_by("pk"))
    may_bots = roles.may(user, roles.VIEW, Bot, project_id=chosen.pk)
    may_figures = roles.may(user, roles.DASHBOARD, project_id=chosen.pk)
    may_workflows = roles.may(user, roles.VIEW, Workflow, project_id=chosen.pk)
    background = background_report(now=now)
    return {
        "projects": projects,
        "project": chosen,
        "bots": [{"bot": b, "live": bot_live_state(bot=b)} for b in bots] if may_bots else None,
        "workflows": _workflows(chosen, now=now) if may_workflows else None,
        "today": _today(chosen, today=now.date()) if may_figures else None,
        "shortcuts": _shortcuts(user, chosen),
        "warnings": _warnings(chosen, bots, background, now=now),
        "background": background,
    }


DIAGNOSTICS = {
    ("botplatform", "telegramupdate"),
    ("botplatform", "deferredsend"),
    ("workflows", "executionsteplog"),
}


def app_list_split(app_list: list[dict], user) -> tuple[list[dict], list[dict]]:
    """The admin's app list without the internal tables, and those tables apart
    (empty for non-superusers: they never see them listed)."""
    apps, diagnostics = [], []
    for app in app_list:
        models = []
        for model in app["models"]:
            key = (app["app_label"], model["object_name"].lower())
            (diagnostics if key in DIAGNOSTICS else models).append(model)
        if models:
            apps.append({**app, "models": models})
    return apps, diagnostics if getattr(user, "is_superuser", False) else []
