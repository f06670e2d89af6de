"""Events out: what a project's webhook endpoints are told, signed, retried, logged.

:func:`event_emit` records one ``WebhookDelivery`` per subscribed endpoint in the
caller's transaction and queues the sending task once it commits, so an event is sent
only for work that happened, and is never lost when the broker is down (the periodic
sweep queues due deliveries again). The HTTP part (with the HTTP step's SSRF guard)
lives in ``workflows/webhooks_send.py``: the loyalty core never imports the engine.

Signature (docs/api.md): header ``X-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>.<raw body>")``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from botplatform.queueing import task_named
from users.models_pos import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

EVENTS = tuple(WebhookEndpoint.Event.values)
DELIVER_TASK = "workflows.webhook_deliver"
MAX_ATTEMPTS = 8
# Backoff after attempt n: 30 s, 1 min, 2 min, ... at most 6 hours.
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 6 * 3600
RESPONSE_SNAPSHOT_CHARS = 2000
SIGNATURE_HEADER = "X-Signature"


def webhook_secret_generate() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def endpoint_url_check(url: object) -> str:
    """The endpoint URL's shape: https only, a host, no credentials (the address itself
    is checked by the SSRF guard when saved and on every send)."""
    if not isinstance(url, str) or len(url) > 500:
        raise ValueError("give an https:// address of at most 500 characters")
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("the address must start with https://")
    if parts.username or parts.password:
        raise ValueError("the address must not contain a user name or password")
    return url.strip()


def events_check(events: object) -> list[str]:
    if not isinstance(events, list) or not events:
        raise ValueError("choose at least one event")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise ValueError(f"unknown events: {', '.join(map(str, unknown))[:200]}")
    return sorted(set(events))


def event_emit(*, project_id: int, event: str, data: dict[str, Any]) -> int:
    """Record ``event`` for every active endpoint of the project that wants it; the
    deliveries are queued after commit. Returns how many were recorded."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(project_id=project_id, is_active=True)
        if event in (endpoint.events or [])
    ]
    if not endpoints:
        return 0
    now = timezone.now()
    ids = []
    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event=event, payload={}, next_attempt_at=now
        )
        delivery.payload = {
            "id": str(delivery.event_id),
            "event": event,
            "created_at": now.isoformat(),
            "project_id": project_id,
            "data": data,
        }
        delivery.save(update_fields=["payload"])
        ids.append(delivery.pk)
    transaction.on_commit(lambda: [deliver_queue(pk) for pk in ids])
    return len(ids)


def deliver_queue(delivery_id: int, *, countdown: float | None = None) -> None:
    """Queue the sending task (broker down: the sweep picks the due row up later)."""
    try:
        options = {"countdown": countdown} if countdown else {}
        task_named(DELIVER_TASK).apply_async(args=(delivery_id,), **options)
    except KeyError:
        logger.warning("Task %s is not registered; delivery %s waits", DELIVER_TASK, delivery_id)


def signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signature_verify(
    *, secret: str, header: str, body: bytes, now: int, tolerance: int = 300
) -> bool:
    """What a receiver does (and the docs show): recompute and compare in constant time."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, header)


def body_bytes(delivery: WebhookDelivery) -> bytes:
    return json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()


def delivery_claim(delivery_id: int) -> WebhookDelivery | None:
    """The pending, due delivery locked for this sender, or None (done, not due, or
    another worker has it). Call inside a transaction."""
    return (
        WebhookDelivery.objects.select_for_update(skip_locked=True)
        .select_related("endpoint", "endpoint__project")
        .filter(
            pk=delivery_id,
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=timezone.now(),
        )
        .first()
    )


def backoff(attempts: int) -> timedelta:
    return timedelta(
        seconds=min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)
    )


def delivery_result(
    delivery: WebhookDelivery,
    *,
    ok: bool,
    status_code: int | None,
    body: str,
    error: str,
    now: datetime | None = None,
) -> float | None:
    """Record one attempt; the seconds until the next one, or None when finished."""
    now = now or timezone.now()
    delivery.attempts += 1
    delivery.response_code = status_code
    delivery.response_body = body[:RESPONSE_SNAPSHOT_CHARS]
    delivery.error = error[:500]
    retry_in = None
    if ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
    else:
        wait = backoff(delivery.attempts)
        delivery.next_attempt_at = now + wait
        retry_in = wait.total_seconds()
    delivery.save(
        update_fields=[
            "attempts",
            "response_code",
            "response_body",
            "error",
            "status",
            "delivered_at",
            "next_attempt_at",
        ]
    )
    return retry_in


def delivery_replay(delivery: WebhookDelivery) -> None:
    """Send a delivery again (an operator's replay): same event id, fresh attempts."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
    )
    transaction.on_commit(lambda: deliver_queue(delivery.pk))


def deliveries_due(limit: int = 500) -> list[int]:
    """Pending deliveries whose time has come (the sweep queues them again)."""
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=timezone.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
