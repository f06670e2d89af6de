"""Celery tasks of the engine: HTTP request steps, delays, timeouts, the sweep.

Tasks take ids and are idempotent: each one re-checks the execution's state under
the session lock before doing anything, so a duplicate delivery, a retried task or
the periodic sweep racing a task never continues an execution twice. Due times are
in the database; the sweep (every minute) catches whatever a lost task missed.
Celery's Django fix-up closes stale database connections around every task.
Queueing never fails the caller when the broker is down (``OutboxTask``): the due
work stays in the database and the sweep, also run when a worker starts, queues it.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from celery import shared_task
from celery.signals import worker_ready

from botplatform.locks import LockNotAcquired, advisory_lock
from botplatform.outbox import OutboxTask
from workflows import services
from workflows.engine.steps.http_pinning import (
    BlockedAddress,
    UnresolvableHost,
    addresses_resolve,
    pinned_opener,
)
from workflows.engine.steps.http_request import request_budget
from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)

# Delays up to this long also get an ETA task; longer ones rely on the sweep only.
DELAY_TASK_MAX_SECONDS = 3000
MAX_RESPONSE_BYTES = 1_000_000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: they could lead to a private address."""

    def redirect_request(self, *args, **kwargs):
        return None


def http_perform(request: dict, *, allow_private: bool) -> dict:
    """Perform one request with retries; the result the step's ``timer`` reads."""
    url = request["url"]
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return {"ok": False, "error": f"not an http(s) URL: {url[:200]}"}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
    body = request.get("body")
    data = None
    if body is not None:
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        else:
            data = str(body).encode()
    attempts = int(request.get("retries", 0)) + 1
    result: dict = {"ok": False, "error": "not attempted"}
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(2**attempt, 8) * 0.25)
        # Resolved once per try and connected to exactly the checked addresses: a
        # second lookup could answer differently (DNS rebinding) and reach inside.
        try:
            addresses = addresses_resolve(parts.hostname, port, allow_private=allow_private)
        except UnresolvableHost as exc:
            result = {"ok": False, "error": str(exc)}
            continue
        except BlockedAddress as exc:
            return {"ok": False, "error": str(exc)}
        opener = pinned_opener(addresses, _NoRedirect)
        req = urllib.request.Request(url, data=data, headers=headers, method=request["method"])  # noqa: S310 - scheme checked above
        try:
            with opener.open(req, timeout=float(request.get("timeout", 10))) as response:
                raw = response.read(MAX_RESPONSE_BYTES)
                status = response.status
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, b""
            result = {"ok": False, "status": status, "error": f"HTTP {status}"}
            if status < 500 and status != 429:
                return result
            continue
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            result = {"ok": False, "error": f"request failed: {getattr(exc, 'reason', exc)}"}
            continue
        try:
            document = json.loads(raw) if raw else None
        except ValueError:
            document = None
        return {"ok": 200 <= status < 300, "status": status, "json": document}
    return result


@shared_task(base=OutboxTask, ignore_result=True)
def http_request_run(execution_id: int, seq: int) -> None:
    """Run the pending HTTP request of an execution, then continue it."""
    execution = (
        WorkflowExecution.objects.filter(pk=execution_id)
        .select_related("project")
        .only("project__allow_private_http", "version_id", "context")
        .first()
    )
    if execution is None:
        return
    from workflows.engine.runner import definition_for_version

    pending = execution.context.get("pending") or {}
    step = definition_for_version(execution.version_id)["steps"].get(pending.get("step"), {})
    # While a worker performs the request it holds an advisory lock, so a redelivered
    # copy of this task (or the sweep's) does not run it a second time in parallel;
    # a SIGKILLed worker's session drops the lock and the redo can go ahead.
    try:
        with advisory_lock(f"workflow:http:{execution_id}:{seq}"):
            request = services.http_pending_claim(
                execution_id=execution_id, seq=seq, budget_seconds=request_budget(step)
            )
            if request is None:
                return
            result = http_perform(request, allow_private=execution.project.allow_private_http)
            services.execution_timer_fire(
                execution_id=execution_id, seq=seq, data=result, force=True
            )
    except LockNotAcquired:
        logger.info("HTTP step of execution %s is being performed elsewhere", execution_id)


@shared_task(base=OutboxTask, ignore_result=True)
def delay_continue(execution_id: int, seq: int) -> None:
    """Continue after a delay (a no-op if it is not due yet or already continued)."""
    services.execution_timer_fire(execution_id=execution_id, seq=seq)


@shared_task(base=OutboxTask, ignore_result=True)
def execution_expire(execution_id: int) -> None:
    services.execution_expire(execution_id=execution_id)


@shared_task(base=OutboxTask, ignore_result=True)
def executions_sweep() -> dict:
    """Periodic: time out expired waits, continue overdue delays, re-run lost requests."""
    expired, overdue = services.executions_due()
    for execution_id in expired:
        try:
            services.execution_expire(execution_id=execution_id)
        except Exception:
            logger.exception("expiring execution %s failed", execution_id)
    for execution_id, seq, kind in overdue:
        try:
            if kind == "delay":
                services.execution_timer_fire(execution_id=execution_id, seq=seq)
            elif kind == "http":
                http_request_run.delay(execution_id, seq)
        except Exception:
            logger.exception("continuing execution %s failed", execution_id)
    return {"expired": len(expired), "overdue": len(overdue)}


# --- Admin ---------------------------------------------------------------------------
# Broadcast tasks live with the broadcast services; imported so workers register them.
from workflows.broadcasts import broadcast_send, broadcasts_due  # noqa: E402, F401


@worker_ready.connect
def _sweep_on_worker_start(sender=None, **kwargs) -> None:
    """A worker coming up (e.g. after a broker outage) catches up on due work at once."""
    executions_sweep.delay()
    broadcasts_due.delay()
