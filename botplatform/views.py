from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from botplatform.health import health_report


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when database, cache and broker answer; 503 (with details) otherwise."""
    report = health_report()
    return JsonResponse(report, status=200 if report["ok"] else 503)
