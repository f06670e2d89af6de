"""Referrals: who invited whom (``/start ref_<code>``), and the referrer's reward."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from botplatform.models import Project
from users.invalidation import user_state_changed
from users.ledger import BonusResult, Kind, bonus_earn
from users.models import BotUser

# Only a user who first appeared this recently can still be given a referrer.
REFERRAL_WINDOW = timedelta(hours=24)
REFERRAL_CODE_PREFIX = "ref_"


def referral_apply(*, user: BotUser, code: str) -> bool:
    """Set ``user``'s referrer from ``/start ref_<code>``; True when it was set now.

    The referrer is set once and never changed, never the user themself, never so as
    to close a cycle, and only for a user first seen within ``REFERRAL_WINDOW``. The
    referrer is rewarded at once (the invited user qualifies on the first start).
    Referral applies of one project are serialised on the project row, so two
    concurrent applies cannot build a cycle between them.
    """
    code = (code or "").strip()
    if code.startswith(REFERRAL_CODE_PREFIX):
        code = code[len(REFERRAL_CODE_PREFIX) :]
    if not code or user.referrer_id is not None:
        return False
    with transaction.atomic():
        Project.objects.select_for_update(no_key=True).only("id").get(pk=user.project_id)
        invited = (
            BotUser.objects.select_for_update()
            .only("id", "project_id", "referrer_id", "first_seen_at", "is_test")
            .get(pk=user.pk)
        )
        if invited.referrer_id is not None:
            return False
        if invited.first_seen_at < timezone.now() - REFERRAL_WINDOW:
            return False
        # Simulator test users and real users never refer each other (no real rewards
        # from a test conversation, no test referrer on a real user).
        referrer = (
            BotUser.objects.filter(
                project_id=invited.project_id, referral_code=code, is_test=invited.is_test
            )
            .only("id", "referrer_id")
            .first()
        )
        if referrer is None or referrer.pk == invited.pk:
            return False
        if _referral_chain_contains(start_id=referrer.referrer_id, user_id=invited.pk):
            return False
        BotUser.objects.filter(pk=invited.pk, referrer__isnull=True).update(referrer=referrer)
        referral_reward_grant(invited_user_id=invited.pk)
        user_state_changed(user_id=invited.pk, project_id=invited.project_id)
        user_state_changed(user_id=referrer.pk, project_id=invited.project_id)
    user.referrer_id = referrer.pk
    return True


def _referral_chain_contains(*, start_id: int | None, user_id: int) -> bool:
    """Whether walking referrers up from ``start_id`` reaches ``user_id``."""
    seen: set[int] = set()
    current = start_id
    while current is not None and current not in seen:
        if current == user_id:
            return True
        seen.add(current)
        current = BotUser.objects.filter(pk=current).values_list("referrer_id", flat=True).first()
    return False


def referral_reward_grant(*, invited_user_id: int) -> BonusResult | None:
    """Reward the invited user's referrer with the project's ``referral_reward``, once.

    Keyed ``referral:{invited_user_id}``: calling it again (a later qualification
    rule, a retried task) replays instead of paying twice. None when nothing is due.
    """
    row = (
        BotUser.objects.filter(pk=invited_user_id)
        .values("referrer_id", "project__referral_reward")
        .first()
    )
    if row is None or row["referrer_id"] is None or row["project__referral_reward"] <= 0:
        return None
    return bonus_earn(
        user_id=row["referrer_id"],
        amount=row["project__referral_reward"],
        idempotency_key=f"referral:{invited_user_id}",
        reason=f"Invited user {invited_user_id}",
        kind=Kind.REFERRAL,
    )
