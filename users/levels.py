"""Level moves: the one place a member's level change is recorded and announced.

Called by the ledger (``users.ledger``) and the customer merge (``users.customers``)
inside their transaction, right where they write the new level: the history row
(``LevelChange``) and the ``customer.level_changed`` webhook event are written in the
same savepoint as the cause, so a retried operation (the same idempotency key) or a
rolled-back one never records a move twice or a move that did not happen.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction

from users.models import BonusTransaction, LevelChange
from users.webhooks_out import event_emit


def level_change_record(
    *,
    project_id: int,
    user_id: int,
    from_level: str,
    to_level: str,
    key: str,
    at: datetime,
    cause: str,
    ledger_entry: BonusTransaction | None = None,
    announce: bool = True,
) -> LevelChange | None:
    """Record one move (``key`` e.g. ``ledger:<entry id>``) and tell the webhooks
    (``announce=False`` for the simulator's test users: the business's systems must
    not hear of them).

    Returns None when nothing moved or the key was recorded already (a replay).
    Must run inside the caller's transaction.
    """
    if from_level == to_level:
        return None
    try:
        with transaction.atomic():  # a savepoint: a duplicate key leaves the caller intact
            change = LevelChange.objects.create(
                project_id=project_id,
                user_id=user_id,
                from_level=from_level,
                to_level=to_level,
                cause=cause,
                ledger_entry=ledger_entry,
                idempotency_key=key,
                at=at,
            )
    except IntegrityError:
        if LevelChange.objects.filter(project_id=project_id, idempotency_key=key).exists():
            return None
        raise
    if not announce:
        return change
    event_emit(
        project_id=project_id,
        event="customer.level_changed",
        data={"customer_id": user_id, "level": to_level, "from": from_level},
    )
    return change
