"""``/metrics`` (Prometheus text) and the per-project admin dashboard (SVG charts).

Both only read: the figures come from ``botplatform.metrics`` (Redis, flushed by every
process) and a few counts from the database. Charts are drawn here as inline SVG so
the admin needs no JavaScript and no internet.
"""

from __future__ import annotations

import hmac
from datetime import timedelta
from xml.sax.saxutils import escape

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from botplatform import metrics
from botplatform.admin_scoping import projects_for

# --- /metrics --------------------------------------------------------------------


def _bearer_ok(request: HttpRequest) -> bool | None:
    """True/False for a presented bearer token, None when none was presented."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    token = settings.METRICS_TOKEN
    given = header[7:].strip()
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape target: a METRICS_TOKEN bearer token or a superuser session.

    The figures span every tenant, so a staff operator (who manages only their own
    projects) is refused; operators see their projects' figures on the dashboards.
    """
    bearer = _bearer_ok(request)
    if bearer is None and not request.user.is_authenticated:
        response = HttpResponse("Authentication required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not (bearer or (bearer is None and request.user.is_superuser)):
        return HttpResponse("Forbidden.\n", status=403)
    return HttpResponse(
        metrics.prometheus_render(), content_type="text/plain; version=0.0.4; charset=utf-8"
    )


# --- Charts --------------------------------------------------------------------------

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 560, 160, 48, 22, 10


def svg_line_chart(values: list[float | None], *, title: str, unit: str = "") -> SafeString:
    """A small line chart of one value per minute (None: no data that minute)."""
    present = [v for v in values if v is not None]
    top = max(present, default=0) or 1
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = plot_w / max(len(values) - 1, 1)
    segments, current = [], []
    for i, value in enumerate(values):
        if value is None:
            if current:
                segments.append(current)
            current = []
            continue
        x = PAD_LEFT + i * step
        y = PAD_TOP + plot_h - (value / top) * plot_h
        current.append(f"{x:.1f},{y:.1f}")
    if current:
        segments.append(current)
    lines = "".join(
        f'<polyline fill="none" stroke="#417690" stroke-width="2" points="{" ".join(s)}"/>'
        for s in segments
    )
    label = escape(f"{title}")
    top_label = escape(f"{top:.4g}{unit}")
    last = next((v for v in reversed(values) if v is not None), None)
    last_label = escape("no data" if last is None else f"now {last:.4g}{unit}")
    base_y = PAD_TOP + plot_h
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{label}" class="metric-chart">'
        f"<title>{label}</title>"
        f'<line x1="{PAD_LEFT}" y1="{base_y}" x2="{WIDTH - 8}" y2="{base_y}" stroke="#999"/>'
        f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{base_y}" stroke="#999"/>'
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 10}" text-anchor="end" font-size="10">'
        f"{top_label}</text>"
        f'<text x="{PAD_LEFT - 4}" y="{base_y}" text-anchor="end" font-size="10">0</text>'
        f'<text x="{PAD_LEFT}" y="{HEIGHT - 4}" font-size="10">-60 min</text>'
        f'<text x="{WIDTH - 8}" y="{HEIGHT - 4}" text-anchor="end" font-size="10">'
        f"{last_label}</text>{lines}</svg>"
    )
    return mark_safe(svg)  # noqa: S308 - every text in it is escaped above


# --- The dashboard -------------------------------------------------------------------


def _executions_per_minute(project_id: int, since, *, status: str | None, field: str) -> dict:
    from workflows.models import WorkflowExecution

    rows = WorkflowExecution.objects.filter(project_id=project_id, **{f"{field}__gte": since})
    if status:
        rows = rows.filter(status=status)
    rows = rows.annotate(m=TruncMinute(field)).values("m").annotate(n=Count("id"))
    return {int(row["m"].timestamp() // 60): row["n"] for row in rows}


def project_dashboard_context(*, project_id: int) -> dict:
    """Everything the dashboard shows for one project over the last hour."""
    from workflows.models import WorkflowExecution

    series = metrics.project_series(project_id=project_id, minutes=60)
    since = timezone.now() - timedelta(hours=1)
    started = _executions_per_minute(project_id, since, status=None, field="started_at")
    failed = _executions_per_minute(project_id, since, status="failed", field="finished_at")
    messages, latency, hit_rate, failures, starts = [], [], [], [], []
    for point in series:
        minute = point["minute"]
        messages.append(point.get("messages", 0))
        count = point.get("latency_count", 0)
        latency.append(point["latency_ms_sum"] / count if count else None)
        lookups = point.get("cache_hits", 0) + point.get("cache_misses", 0)
        hit_rate.append(100 * point.get("cache_hits", 0) / lookups if lookups else None)
        failures.append(point.get("failures", 0) + failed.get(minute, 0))
        starts.append(started.get(minute, 0))
    counts = dict(
        WorkflowExecution.objects.filter(project_id=project_id, status__in=["running", "waiting"])
        .values("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    total_messages = sum(messages)
    latencies = [v for v in latency if v is not None]
    rates = [v for v in hit_rate if v is not None]
    return {
        "summary": [
            ("Messages in the last hour", f"{int(total_messages)}"),
            (
                "Average response time",
                f"{sum(latencies) / len(latencies):.1f} ms" if latencies else "—",
            ),
            ("Cache hit rate", f"{sum(rates) / len(rates):.1f} %" if rates else "—"),
            ("Active (running) executions now", counts.get("running", 0)),
            ("Executions waiting for the user now", counts.get("waiting", 0)),
            ("Failures in the last hour", int(sum(failures))),
        ],
        "charts": [
            (title, svg_line_chart(values, title=title, unit=unit))
            for title, values, unit in (
                ("Messages per minute", messages, ""),
                ("Average processing time per message", latency, " ms"),
                ("Cache hit rate", hit_rate, " %"),
                ("Executions started per minute", starts, ""),
                ("Failures per minute (updates and executions)", failures, ""),
            )
        ],
    }


def project_dashboard_view(request: HttpRequest, project_id: int, admin_site) -> HttpResponse:
    """The admin page; an operator sees only their own projects (others: 404)."""
    project = projects_for(request.user).filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    context = {
        **admin_site.each_context(request),
        "title": f"Dashboard: {project.name}",
        "project": project,
        **project_dashboard_context(project_id=project.pk),
    }
    return TemplateResponse(request, "admin/botplatform/project/dashboard.html", context)
