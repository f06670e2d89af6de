"""The programme dashboard, the workflow funnel, broadcast results and their exports.

Every page is scoped to one project of the operator (others: 404) and needs the
"dashboard" right; exports need "export" too (``botplatform.roles``).
"""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from analytics import selectors
from analytics.broadcasts import broadcasts_table
from analytics.charts import time_chart
from analytics.periods import KINDS, period_parse
from analytics.tables import Table, table_csv, tables_json
from botplatform import roles
from botplatform.admin_scoping import project_or_404
from workflows.diagram import diagram_svg
from workflows.models import Workflow, WorkflowVersion

TABLE_KEYS = (
    "summary",
    "daily",
    "levels",
    "level_moves",
    "retention",
    "workflows",
    "funnel",
    "broadcasts",
)


def _int(value, default=None):
    if isinstance(value, str) and value.isdigit() and len(value) < 12:
        return int(value)
    return default


def _workflow_names(project_id: int) -> dict[int, str]:
    return dict(Workflow.objects.filter(project_id=project_id).values_list("pk", "name"))


def _step_order(definition) -> list[str]:
    """Steps from the start, breadth first: the order a funnel reads in."""
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), dict):
        return []
    steps = definition["steps"]
    order, queue = [], [definition.get("start")]
    while queue:
        step = queue.pop(0)
        if not isinstance(step, str) or step not in steps or step in order:
            continue
        order.append(step)
        found: list[str] = []

        def walk(value, found=found):
            if isinstance(value, str) and value in steps:
                found.append(value)
            elif isinstance(value, dict):
                for v in value.values():
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        walk({k: v for k, v in steps[step].items() if k not in ("text", "type")})
        queue.extend(found)
    return order + [s for s in steps if s not in order]


def _with_badges(svg: str, reached: dict[str, int], started: int) -> str:
    """The flow diagram with each step's count and share drawn on its box."""

    def badge(match: re.Match) -> str:
        step, x, y = match.group(1), float(match.group(2)), float(match.group(3))
        n = reached.get(step.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
        if n is None:
            n = 0
        share = f"{100 * n / started:.0f}%" if started else "-"
        return (
            match.group(0)
            + f'<rect x="{x + 112:.0f}" y="{y - 12:.0f}" width="78" height="20" rx="10" '
            f'fill="#1b5e20"/><text x="{x + 151:.0f}" y="{y + 2:.0f}" fill="#fff" '
            f'text-anchor="middle" font-weight="bold">{n} · {share}</text>'
        )

    return re.sub(
        r'<g class="step" data-step="([^"]*)"><rect x="([\d.]+)" y="([\d.]+)"[^>]*/>',
        badge,
        svg,
    )


def _programme_tables(project_id: int, period) -> tuple[list[Table], list[dict]]:
    summary, rows = selectors.summary_table(project_id, period)
    return [
        summary,
        selectors.daily_table(rows),
        selectors.levels_table(project_id, period),
        selectors.level_moves_table(project_id, period),
        selectors.retention_table(project_id, period),
        selectors.workflows_table(project_id, period, _workflow_names(project_id)),
    ], rows


def _base(request: HttpRequest, project, admin_site, title: str) -> dict:
    period = period_parse(request.GET, today=timezone.now().date())
    return {
        **admin_site.each_context(request),
        "title": title,
        "project": project,
        "period": period,
        "kinds": KINDS,
        "may_export": roles.may(request.user, roles.EXPORT, project_id=project.pk),
    }


@require_GET
def programme_view(request: HttpRequest, project, admin_site) -> HttpResponse:
    context = _base(request, project, admin_site, f"Programme: {project.name}")
    period = context["period"]
    tables, rows = _programme_tables(project.pk, period)
    days = [r["day"] for r in rows]
    moves = selectors.level_moves_per_day(project.pk, period)
    charts = [
        time_chart(
            days,
            [("new", [r.get("members_new", 0) for r in rows])],
            title="New members per day",
            unit="members",
            bars=True,
        ),
        time_chart(
            days,
            [
                ("earned", [r.get("earned", 0) for r in rows]),
                ("spent", [r.get("spent", 0) for r in rows]),
                ("expired", [r.get("expired", 0) for r in rows]),
            ],
            title="Bonuses earned, spent and expired per day",
            unit="bonuses",
        ),
        time_chart(
            days,
            [("owed", [r["outstanding"] for r in rows])],
            title="Outstanding balance (what the programme owes)",
            unit="bonuses",
        ),
        time_chart(
            days,
            [
                ("7 days", [r.get("active_7d", 0) for r in rows]),
                ("30 days", [r.get("active_30d", 0) for r in rows]),
            ],
            title="Active members",
            unit="members",
        ),
        time_chart(
            days,
            [("moves", [moves.get(day, 0) for day in days])],
            title="Level moves per day",
            unit="members",
            bars=True,
        ),
    ]
    context.update(tables=tables, charts=charts, page="programme")
    return TemplateResponse(request, "admin/analytics/programme.html", context)


def _funnel_parts(request: HttpRequest, project, period):
    workflows = list(Workflow.objects.filter(project=project).order_by("name"))
    chosen = _int(request.GET.get("workflow"))
    workflow = next((w for w in workflows if w.pk == chosen), None)
    if workflow is None and workflows:  # the busiest of the period first
        busiest = selectors.busiest_workflow(project.pk, period)
        workflow = next((w for w in workflows if w.pk == busiest), workflows[0])
    if workflow is None:
        return workflows, None, [], None, None, "", 0
    versions = list(
        WorkflowVersion.objects.filter(workflow=workflow, is_preview=False).order_by("-number")
    )
    version_id = _int(request.GET.get("version"))
    version = next((v for v in versions if v.pk == version_id), None)
    shown = version or next((v for v in versions if v.pk == workflow.published_version_id), None)
    definition = shown.definition if shown else workflow.draft
    table, reached, started = selectors.funnel(
        project.pk, workflow.pk, version.pk if version else None, period, _step_order(definition)
    )
    svg = _with_badges(str(diagram_svg(definition)), reached, started)
    return workflows, workflow, versions, version, table, svg, started


@require_GET
def funnel_view(request: HttpRequest, project, admin_site) -> HttpResponse:
    context = _base(request, project, admin_site, f"Workflow funnel: {project.name}")
    workflows, workflow, versions, version, table, svg, started = _funnel_parts(
        request, project, context["period"]
    )
    context.update(
        workflows=workflows,
        workflow=workflow,
        versions=versions,
        version=version,
        tables=[table] if table else [],
        diagram=mark_safe(svg),  # noqa: S308 - diagram_svg escapes; badges are numbers
        started=started,
        page="funnel",
        extra_query=f"&workflow={workflow.pk}" + (f"&version={version.pk}" if version else "")
        if workflow
        else "",
    )
    return TemplateResponse(request, "admin/analytics/funnel.html", context)


def _broadcast_args(request: HttpRequest, project) -> tuple[int, int | None]:
    days = _int(request.GET.get("days"), 7)
    workflow_id = _int(request.GET.get("workflow"))
    if (
        workflow_id is not None
        and not Workflow.objects.filter(project=project, pk=workflow_id).exists()
    ):
        workflow_id = None
    return days, workflow_id


@require_GET
def broadcasts_view(request: HttpRequest, project, admin_site) -> HttpResponse:
    context = _base(request, project, admin_site, f"Broadcast results: {project.name}")
    days, workflow_id = _broadcast_args(request, project)
    table = broadcasts_table(project.pk, context["period"], days=days, workflow_id=workflow_id)
    context.update(
        tables=[table],
        days=min(max(days, 1), 90),
        workflow_id=workflow_id,
        workflows=Workflow.objects.filter(project=project).order_by("name"),
        page="broadcasts",
        extra_query=f"&days={days}" + (f"&workflow={workflow_id}" if workflow_id else ""),
    )
    return TemplateResponse(request, "admin/analytics/broadcasts.html", context)


@require_GET
def export_view(request: HttpRequest, project, admin_site) -> HttpResponse:
    """One table as CSV (``table=<key>``) or every table of a page as JSON."""
    period = period_parse(request.GET, today=timezone.now().date())
    key = request.GET.get("table") or "summary"
    fmt = request.GET.get("format", "csv")
    if key not in TABLE_KEYS or fmt not in ("csv", "json"):
        return HttpResponse(
            "Unknown table or format. Tables: " + ", ".join(TABLE_KEYS) + "; formats: csv, json.",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    if key == "funnel":
        *_rest, table, _svg, _started = _funnel_parts(request, project, period)
        tables = [table] if table else []
    elif key == "broadcasts":
        days, workflow_id = _broadcast_args(request, project)
        tables = [broadcasts_table(project.pk, period, days=days, workflow_id=workflow_id)]
    else:
        tables = _programme_tables(project.pk, period)[0]
    name = f"{project.slug}-{key}-{period.start}-{period.end}"
    if fmt == "json":
        body = tables_json(
            tables,
            project=project.slug,
            start=period.start,
            end=period.end,
            previous_start=period.previous.start,
            previous_end=period.previous.end,
        )
        response = HttpResponse(body, content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}.json"'
        return response
    table = next((t for t in tables if t.key == key), None)
    if table is None:
        return HttpResponse("Nothing to export.", status=404, content_type="text/plain")
    response = HttpResponse(table_csv(table), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return response


def project_urls(model_admin) -> list:
    """The analytics pages under a project in the admin (ProjectAdmin.get_urls)."""

    def scoped(view, *, export: bool = False):
        def wrapped(request, project_id: int):
            project = project_or_404(request, project_id)
            if not roles.may(request.user, roles.DASHBOARD, project_id=project.pk):
                raise PermissionDenied
            if export and not roles.may(request.user, roles.EXPORT, project_id=project.pk):
                raise PermissionDenied
            return view(request, project, model_admin.admin_site)

        return model_admin.admin_site.admin_view(wrapped)

    return [
        path(
            "<int:project_id>/programme/",
            scoped(programme_view),
            name="botplatform_project_programme",
        ),
        path(
            "<int:project_id>/programme/funnel/",
            scoped(funnel_view),
            name="botplatform_project_funnel",
        ),
        path(
            "<int:project_id>/programme/broadcasts/",
            scoped(broadcasts_view),
            name="botplatform_project_broadcast_results",
        ),
        path(
            "<int:project_id>/programme/export/",
            scoped(export_view, export=True),
            name="botplatform_project_programme_export",
        ),
    ]


def export_url(project_id: int, key: str, query: str, fmt: str = "csv") -> str:
    return (
        reverse("admin:botplatform_project_programme_export", args=[project_id])
        + f"?table={key}&format={fmt}&{query}"
    )
