"""Background work of the loyalty core. Tasks take ids and are idempotent."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db.models import Exists, OuterRef
from django.utils import timezone

from botplatform.models import Project
from users.ledger import bonus_expire, bonus_expiry_cutoff
from users.models import BonusTransaction, BotUser

logger = logging.getLogger(__name__)


@shared_task(name="users.bonuses_expire")
def bonuses_expire() -> int:
    """Write expiry entries for every project with an expiry period; returns how many.

    Safe to run any number of times: each user's expiry is computed from the ledger
    and keyed by the day, so a second run writes nothing. One failing user is logged
    and does not stop the others.
    """
    now = timezone.now()
    written = 0
    projects = Project.objects.filter(is_active=True, bonus_expiry_days__gt=0)
    for project_id, days in projects.values_list("id", "bonus_expiry_days"):
        cutoff = bonus_expiry_cutoff(days=days, now=now)
        old_credit = BonusTransaction.objects.filter(
            user_id=OuterRef("pk"), amount__gt=0, created_at__lt=cutoff
        )
        candidates = (
            BotUser.objects.filter(project_id=project_id, balance__gt=0)
            .filter(Exists(old_credit))
            .values_list("pk", flat=True)
        )
        for user_id in candidates.iterator():
            try:
                result = bonus_expire(user_id=user_id, now=now)
            except Exception:
                logger.exception("bonus expiry failed for user %s", user_id)
                continue
            if result is not None and result.status == "ok" and not result.replayed:
                written += 1
                _expired_event(project_id, user_id, result)
    return written


def _expired_event(project_id: int, user_id: int, result) -> None:
    """Tell the project's webhooks (``bonus.expired``); never fails the expiry."""
    from users.webhooks_out import event_emit

    try:
        amount = BonusTransaction.objects.values_list("amount", flat=True).get(
            pk=result.transaction_id
        )
        event_emit(
            project_id=project_id,
            event="bonus.expired",
            data={"customer_id": user_id, "amount": -amount, "balance": result.balance},
        )
    except Exception:
        logger.exception("bonus.expired webhook for user %s not recorded", user_id)


@shared_task(name="users.api_idempotency_prune")
def api_idempotency_prune() -> int:
    """Forget API idempotency records older than a day (retries come within minutes)."""
    from datetime import timedelta

    from users.models_pos import ApiIdempotency

    cutoff = timezone.now() - timedelta(days=1)
    deleted, _ = ApiIdempotency.objects.filter(created_at__lt=cutoff).delete()
    return deleted


@shared_task(name="users.holds_expire")
def holds_expire() -> int:
    """Release open redemption holds past their expiry (the bonuses are free again)."""
    from users.holds import holds_expire as expire

    return expire()
