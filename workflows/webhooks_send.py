"""Sending outgoing webhooks (the loyalty core records them: ``users/webhooks_out.py``).

Each attempt goes through the HTTP step's client, so it passes the same SSRF guard:
addresses resolved once and pinned, private ranges refused unless the project allows
them, no redirects, a total deadline, a bounded answer. A failed attempt is retried
with backoff by Celery (``countdown``) and, should that message be lost, by the
periodic ``workflows.webhooks_due`` sweep.
"""

from __future__ import annotations

import json
import logging
import time

from celery import shared_task
from django.db import transaction

from botplatform.queueing import BrokerSafeTask
from users.webhooks_out import (
    SIGNATURE_HEADER,
    body_bytes,
    deliver_queue,
    deliveries_due,
    delivery_claim,
    delivery_result,
    signature,
)
from workflows.engine.steps.http_client import http_perform
from workflows.engine.steps.http_pinning import BlockedAddress, addresses_resolve

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10


def endpoint_address_check(url: str, *, allow_private: bool) -> None:
    """Refuse an endpoint whose host resolves to a blocked address (the SSRF guard),
    as the admin saves it. Raises ValueError with the reason."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        addresses_resolve(parts.hostname or "", parts.port or 443, allow_private=allow_private)
    except BlockedAddress as exc:
        raise ValueError(str(exc)) from None


def webhook_attempt(delivery_id: int) -> str:
    """One attempt of one delivery: "delivered", "retry", "failed" or "skipped"."""
    with transaction.atomic():
        delivery = delivery_claim(delivery_id)
        if delivery is None:
            return "skipped"
        endpoint = delivery.endpoint
        body = body_bytes(delivery)
        timestamp = int(time.time())
        result = http_perform(
            {
                "method": "POST",
                "url": endpoint.url,
                "headers": {
                    "Content-Type": "application/json",
                    "User-Agent": "botplatform-webhooks/1",
                    SIGNATURE_HEADER: signature(
                        secret=endpoint.secret, timestamp=timestamp, body=body
                    ),
                    "X-Event-Id": str(delivery.event_id),
                    "X-Event": delivery.event,
                },
                "body": body.decode(),
                "timeout": TIMEOUT_SECONDS,
                "retries": 0,
            },
            allow_private=endpoint.project.allow_private_http,
        )
        document = result.get("json")
        snapshot = "" if document is None else json.dumps(document)[:2000]
        retry_in = delivery_result(
            delivery,
            ok=bool(result.get("ok")),
            status_code=result.get("status"),
            body=snapshot,
            error=str(result.get("error", "")),
        )
    if result.get("ok"):
        return "delivered"
    if retry_in is None:
        return "failed"
    deliver_queue(delivery_id, countdown=retry_in)
    return "retry"


@shared_task(base=BrokerSafeTask, name="workflows.webhook_deliver", ignore_result=True)
def webhook_deliver(delivery_id: int) -> str:
    return webhook_attempt(delivery_id)


@shared_task(base=BrokerSafeTask, name="workflows.webhooks_due", ignore_result=True)
def webhooks_due() -> int:
    """Queue every pending delivery whose next attempt is due (lost messages too)."""
    due = deliveries_due()
    for delivery_id in due:
        deliver_queue(delivery_id)
    return len(due)
