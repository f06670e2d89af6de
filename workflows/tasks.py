"""Celery tasks of the engine: HTTP request steps, delays, timeouts, the sweep.

Tasks take ids and are idempotent: each one re-checks the execution's state under
the session lock before doing anything, so a duplicate delivery, a retried task or
the periodic sweep racing a task never continues an execution twice. Due times are
in the database; the sweep (every minute) catches whatever a lost task missed.
Celery's Django fix-up closes stale database connections around every task.
Queueing never fails the caller when the broker is down (``BrokerSafeTask``): the due
work stays in the database and the sweep, also run when a worker starts, queues it.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from botplatform.locks import LockNotAcquired, advisory_lock
from botplatform.queueing import BrokerSafeTask
from workflows import services
from workflows.engine.steps.http_client import http_perform
from workflows.engine.steps.http_request import request_budget
from workflows.models import WorkflowExecution
from workflows.timers import timers_fire_due

logger = logging.getLogger(__name__)


def _result_report(*, execution_id: int, seq: int, result: dict) -> None:
    """Continue the execution with ``result``; if that fails, with a plain failure.

    ``execution_timer_fire`` continues a pause at most once (its ``seq`` is checked
    under the row lock), so a second call after a first that did commit, or a
    retried task, changes nothing. A result that cannot be processed (e.g. an answer
    the database refuses) still ends in ``on_failure``, never in ``running``.
    """
    try:
        services.execution_timer_fire(execution_id=execution_id, seq=seq, data=result, force=True)
    except Exception:
        logger.exception("continuing execution %s with its HTTP result failed", execution_id)
        failure = {"ok": False, "error": "the answer could not be processed"}
        services.execution_timer_fire(execution_id=execution_id, seq=seq, data=failure, force=True)


@shared_task(base=BrokerSafeTask, ignore_result=True)
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
    from workflows.engine.version_cache import definition_for_version

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
            _result_report(execution_id=execution_id, seq=seq, result=result)
    except LockNotAcquired:
        logger.info("HTTP step of execution %s is being performed elsewhere", execution_id)


@shared_task(base=BrokerSafeTask, ignore_result=True)
def delay_continue(execution_id: int, seq: int) -> None:
    """Continue after a delay (a no-op if it is not due yet or already continued)."""
    services.execution_timer_fire(execution_id=execution_id, seq=seq)


@shared_task(base=BrokerSafeTask, ignore_result=True)
def execution_expire(execution_id: int) -> None:
    services.execution_expire(execution_id=execution_id)


@shared_task(base=BrokerSafeTask, ignore_result=True)
def timers_fire() -> int:
    """Fire due wait timeouts and delays now (run in-process by the timer poller,
    ``botplatform.periodic.TimerLoop``; see workflows/timers.py)."""
    return timers_fire_due()


@shared_task(base=BrokerSafeTask, ignore_result=True)
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
            if kind in {"delay", "call"}:  # "call": a sub-flow that never came back
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


from workflows.webhooks_send import webhook_deliver, webhooks_due  # noqa: E402, F401


@shared_task(base=BrokerSafeTask, ignore_result=True)
def purchase_event(purchase_id: int) -> None:
    """A purchase recorded in the cashier menu starts the customer's ``purchase`` event
    workflow (stamp cards), as one recorded through the API does. Queued after the
    purchase commits; at most once (a broker outage loses it)."""
    from users.models import Purchase
    from workflows.events_in import purchase_event as purchase_event_start

    purchase = Purchase.objects.select_related("customer").filter(pk=purchase_id).first()
    if purchase is not None:
        purchase_event_start(purchase)
