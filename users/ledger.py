"""The bonus ledger: earn, spend, spend for a purchase, adjust, expire.

Rules (see docs/loyalty.md):

- Every balance change is one append-only ``BonusTransaction`` written in the same
  transaction as the balance, under the user's row lock (``SELECT ... FOR UPDATE``),
  with a compare-and-set UPDATE; the database CHECKs keep balances non-negative.
- Every operation carries an idempotency key, unique per project in the database.
  The same key again answers with the first result (``replayed=True``), also when
  the duplicate runs concurrently: the unique constraint decides, inside a savepoint.
- Spends also take the Redis lock ``lock:user:{userId}:spend`` to answer a second,
  concurrent press with "in_progress"; correctness does not depend on that lock.
- A level move is recorded (``LevelChange``, ``customer.level_changed``) in the same
  savepoint as its entry (:mod:`users.levels`), keyed ``ledger:<entry id>``.
- Every write drops the user's cached state after commit
  (:func:`users.invalidation.user_state_changed`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from botplatform import metrics
from botplatform.locks import LockNotAcquired, redis_lock
from botplatform.models import Project
from users.invalidation import user_state_changed
from users.levels import level_change_record
from users.models import BonusTransaction, BotUser, LevelChange
from users.selectors import level_for

Kind = BonusTransaction.Kind

# One operation may move at most this many bonuses (a typo guard far below the
# 64-bit limit of the balance column).
MAX_AMOUNT = 10**12
IDEMPOTENCY_KEY_MAX_LENGTH = 200
REASON_MAX_LENGTH = 500
# Compare-and-set retries (only needed where the database has no row locks: SQLite).
_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class BonusResult:
    """The outcome of one ledger operation (also what a replay answers)."""

    status: Literal["ok", "insufficient", "in_progress"]
    balance: int  # balance after (or current balance if not applied)
    transaction_id: int | None
    replayed: bool = False  # the idempotency key had already been applied
    new_level: str | None = None  # set when this operation moved the user to a new level


class IdempotencyKeyConflict(ValueError):
    """The key was already used for a different operation: a caller bug, not a retry."""


class BonusCapExceeded(ValueError):
    """More bonuses than the project's share of the purchase allows."""

    def __init__(self, *, amount: int, cap: int) -> None:
        self.amount = amount
        self.cap = cap
        super().__init__(f"at most {cap} bonuses may pay for this purchase, not {amount}")


class _Retry(Exception):
    """The compare-and-set lost a race: roll back and try again."""


# --- validation -------------------------------------------------------------------


def _amount_checked(amount: object, *, signed: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"amount must be a whole number of bonuses, got {amount!r}")
    if signed and amount == 0:
        raise ValueError("amount must not be zero")
    if not signed and amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    if abs(amount) > MAX_AMOUNT:
        raise ValueError(f"amount {amount} is larger than the maximum of {MAX_AMOUNT}")
    return amount


def _key_checked(idempotency_key: object) -> str:
    if not isinstance(idempotency_key, str) or not idempotency_key.strip():
        raise ValueError("idempotency_key must be a non-empty string")
    if len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise ValueError(f"idempotency_key is longer than {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
    return idempotency_key


# --- the ledger -------------------------------------------------------------------


def _replayed(entry: BonusTransaction, *, user_id: int, amount: int, kind: str) -> BonusResult:
    if (entry.user_id, entry.amount, entry.kind) != (user_id, amount, kind):
        raise IdempotencyKeyConflict(
            f"idempotency key {entry.idempotency_key!r} was already used for another "
            f"operation (user {entry.user_id}, {entry.kind} {entry.amount:+d})"
        )
    return BonusResult(
        status="ok", balance=entry.balance_after, transaction_id=entry.pk, replayed=True
    )


def _entry_by_key(*, project_id: int, idempotency_key: str) -> BonusTransaction | None:
    return BonusTransaction.objects.filter(
        project_id=project_id, idempotency_key=idempotency_key
    ).first()


def ledger_apply(
    *,
    user_id: int,
    amount: int,
    kind: str,
    idempotency_key: str,
    reason: str = "",
    created_by: Any = None,
) -> BonusResult:
    """Apply one signed ``amount`` to the balance and append its ledger entry, once.

    The one write path of the ledger: the bonus functions here and the till's purchases
    and customer merges (``users/purchases.py``, ``users/customers.py``) all go through it.
    """
    for _attempt in range(_MAX_ATTEMPTS):
        try:
            return _ledger_apply_once(
                user_id=user_id,
                amount=amount,
                kind=kind,
                idempotency_key=idempotency_key,
                reason=reason,
                created_by=created_by,
            )
        except _Retry:
            continue
    raise RuntimeError(f"bonus operation on user {user_id} kept losing races; try again")


def _ledger_apply_once(
    *,
    user_id: int,
    amount: int,
    kind: str,
    idempotency_key: str,
    reason: str,
    created_by: Any,
) -> BonusResult:
    with transaction.atomic():
        user = (
            BotUser.objects.select_for_update(of=("self",))
            .select_related("project")
            .only(
                "id",
                "project_id",
                "balance",
                "lifetime_earned",
                "level",
                "is_test",
                "project__levels",
            )
            .get(pk=user_id)
        )
        entry = _entry_by_key(project_id=user.project_id, idempotency_key=idempotency_key)
        if entry is not None:
            return _replayed(entry, user_id=user_id, amount=amount, kind=kind)

        balance = user.balance + amount
        if balance < 0:
            return BonusResult(status="insufficient", balance=user.balance, transaction_id=None)
        earns = kind in (Kind.EARN, Kind.REFERRAL)
        lifetime_earned = user.lifetime_earned + (amount if earns else 0)
        level = (
            level_for(levels=user.project.levels, lifetime_earned=lifetime_earned)
            if earns
            else user.level
        )
        try:
            with transaction.atomic():
                updated = BotUser.objects.filter(pk=user_id, balance=user.balance).update(
                    balance=balance, lifetime_earned=lifetime_earned, level=level
                )
                if updated != 1:
                    raise _Retry
                entry = BonusTransaction.objects.create(
                    project_id=user.project_id,
                    user_id=user_id,
                    amount=amount,
                    kind=kind,
                    reason=reason[:REASON_MAX_LENGTH],
                    idempotency_key=idempotency_key,
                    balance_after=balance,
                    created_by=created_by,
                )
                level_change_record(
                    project_id=user.project_id,
                    user_id=user_id,
                    from_level=user.level,
                    to_level=level,
                    key=f"ledger:{entry.pk}",
                    at=entry.created_at,
                    cause=LevelChange.Cause.LEDGER,
                    ledger_entry=entry,
                    announce=not user.is_test,
                )
        except IntegrityError:
            # A concurrent duplicate committed the same key first: answer with its result.
            entry = _entry_by_key(project_id=user.project_id, idempotency_key=idempotency_key)
            if entry is None:
                raise
            return _replayed(entry, user_id=user_id, amount=amount, kind=kind)
        except DataError as error:
            raise ValueError(f"user {user_id}'s balance would overflow") from error

        user_state_changed(user_id=user_id, project_id=user.project_id)
        return BonusResult(
            status="ok",
            balance=balance,
            transaction_id=entry.pk,
            new_level=level if level != user.level else None,
        )


def bonus_earn(
    *,
    user_id: int,
    amount: int,
    idempotency_key: str,
    reason: str = "",
    kind: str = "earn",
    created_by: Any = None,
) -> BonusResult:
    """Add ``amount`` bonuses; counts toward lifetime earnings and the user's level.

    ``kind`` is "earn" or "referral". A replay of ``idempotency_key`` answers the first
    result with ``replayed=True``. Raises ValueError for a bad amount or key and
    BotUser.DoesNotExist for an unknown user.
    """
    amount = _amount_checked(amount)
    if kind not in (Kind.EARN, Kind.REFERRAL):
        raise ValueError(f"kind must be 'earn' or 'referral', got {kind!r}")
    return ledger_apply(
        user_id=user_id,
        amount=amount,
        kind=str(kind),
        idempotency_key=_key_checked(idempotency_key),
        reason=reason,
        created_by=created_by,
    )


def bonus_spend(
    *, user_id: int, amount: int, idempotency_key: str, reason: str = ""
) -> BonusResult:
    """Take ``amount`` bonuses, or answer "insufficient" (nothing written).

    Runs under ``lock:user:{userId}:spend``: while another spend of this user holds it
    the answer is "in_progress" (or the first result, if this key already applied).
    The row lock and compare-and-set make a double spend impossible even without it.
    """
    amount = _amount_checked(amount)
    idempotency_key = _key_checked(idempotency_key)
    try:
        with redis_lock("user", f"{user_id}:spend"):
            return ledger_apply(
                user_id=user_id,
                amount=-amount,
                kind=Kind.SPEND,
                idempotency_key=idempotency_key,
                reason=reason,
            )
    except LockNotAcquired:
        metrics.inc("bp_lock_contention_total", lock="user_spend")
        user = BotUser.objects.only("id", "project_id", "balance").get(pk=user_id)
        entry = _entry_by_key(project_id=user.project_id, idempotency_key=idempotency_key)
        if entry is not None:
            return _replayed(entry, user_id=user_id, amount=-amount, kind=Kind.SPEND)
        return BonusResult(status="in_progress", balance=user.balance, transaction_id=None)


def bonus_spend_for_purchase(
    *,
    user_id: int,
    amount: int,
    purchase_amount: int,
    idempotency_key: str,
    reason: str = "",
) -> BonusResult:
    """Spend bonuses toward a purchase, at most the project's share of its price.

    Raises BonusCapExceeded (a ValueError) above ``max_bonus_share_percent`` of
    ``purchase_amount``; ``users.selectors.bonus_spend_limit_get`` tells the limit.
    """
    amount = _amount_checked(amount)
    purchase_amount = _amount_checked(purchase_amount)
    percent = Project.objects.filter(users__pk=user_id).values_list(
        "max_bonus_share_percent", flat=True
    )
    percent_value = percent.first()
    if percent_value is None:
        raise BotUser.DoesNotExist(f"no bot user {user_id}")
    cap = purchase_amount * percent_value // 100
    if amount > cap:
        raise BonusCapExceeded(amount=amount, cap=cap)
    return bonus_spend(
        user_id=user_id, amount=amount, idempotency_key=idempotency_key, reason=reason
    )


def bonus_adjust(
    *,
    user_id: int,
    amount: int,
    reason: str,
    created_by: Any,
    idempotency_key: str | None = None,
) -> BonusResult:
    """An operator's correction: signed ``amount``, mandatory ``reason``, who did it.

    A deduction larger than the balance answers "insufficient" and writes nothing.
    Adjustments do not count toward lifetime earnings or levels.
    """
    amount = _amount_checked(amount, signed=True)
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("an adjustment needs a reason")
    if len(reason) > REASON_MAX_LENGTH:
        raise ValueError(f"the reason is longer than {REASON_MAX_LENGTH} characters")
    key = _key_checked(idempotency_key) if idempotency_key is not None else None
    return ledger_apply(
        user_id=user_id,
        amount=amount,
        kind=Kind.ADJUST,
        idempotency_key=key or f"adjust:{uuid.uuid4().hex}",
        reason=reason.strip(),
        created_by=created_by,
    )


def bonus_expiry_cutoff(*, days: int, now: datetime | None = None) -> datetime:
    """Bonuses credited before this moment have expired: midnight UTC, ``days`` ago.

    Stable for a whole day, so repeated runs of the expiry task agree on the amount.
    """
    now = now or timezone.now()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


def bonus_expire(*, user_id: int, now: datetime | None = None) -> BonusResult | None:
    """Write the user's expiry entry for bonuses credited before the cutoff, if any.

    First in, first out: debits (spends, deductions, earlier expiries) consume the
    oldest credits first, so what expires is the part of the old credits that no debit
    has consumed. Idempotent: a second run finds nothing left (and the same day's key
    replays). Returns None when nothing expires or the project has no expiry.
    """
    from django.db.models import Sum

    with transaction.atomic():
        user = (
            BotUser.objects.select_for_update(of=("self",))
            .select_related("project")
            .only("id", "project_id", "balance", "project__bonus_expiry_days")
            .get(pk=user_id)
        )
        days = user.project.bonus_expiry_days
        if not days or user.balance <= 0:
            return None
        cutoff = bonus_expiry_cutoff(days=days, now=now)
        entries = BonusTransaction.objects.filter(user_id=user_id)
        old_credits = (
            entries.filter(amount__gt=0, created_at__lt=cutoff).aggregate(total=Sum("amount"))[
                "total"
            ]
            or 0
        )
        debits = -(entries.filter(amount__lt=0).aggregate(total=Sum("amount"))["total"] or 0)
        expired = min(user.balance, old_credits - debits)
        if expired <= 0:
            return None
        return ledger_apply(
            user_id=user_id,
            amount=-expired,
            kind=Kind.EXPIRY,
            idempotency_key=f"expiry:{user_id}:{cutoff.date().isoformat()}",
            reason=f"Bonuses credited before {cutoff.date().isoformat()} expired",
        )


__all__ = [
    "BonusCapExceeded",
    "BonusResult",
    "IdempotencyKeyConflict",
    "bonus_adjust",
    "bonus_earn",
    "bonus_expire",
    "bonus_expiry_cutoff",
    "bonus_spend",
    "bonus_spend_for_purchase",
]
