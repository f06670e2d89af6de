"""The bonus ledger: earn, spend, spend for a purchase, adjust, expire.

Rules (see docs/loyalty.md):

- Every balance change is one append-only ``BonusTransaction`` written in the same
  transaction as the balance, under the user's row lock (``SELECT ... FOR UPDATE``),
  with a compare-and-set UPDATE (in the one-statement spend, the UPDATE writes the
  balance read under the row lock that the same statement still holds); the database
  CHECKs keep balances non-negative.
- Every operation carries an idempotency key, unique per project in the database.
  The same key again answers with the first result (``replayed=True``), also when
  the duplicate runs concurrently: the unique constraint decides (inside a savepoint,
  or by ``ON CONFLICT DO NOTHING`` in the one-statement spend).
- A spend answers a second, concurrent press with "in_progress": on PostgreSQL by
  trying the user's spend lock, a transaction-scoped advisory lock
  (:func:`botplatform.locks.user_spend_lock_try_sql`, held until the spending
  transaction ends), elsewhere by the Redis lock ``lock:user:{userId}:spend``.
  Correctness does not depend on either lock.
- On PostgreSQL a spend is one statement (:func:`_spend_in_one_statement`): lock
  try, row lock, key lookup, entry and balance together, no savepoint (a spend
  cannot fail for data reasons) and no Redis command. Other kinds, and spends on
  other databases, take the general path (:func:`ledger_apply`).
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

from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from botplatform import metrics
from botplatform.locks import LockNotAcquired, redis_lock, user_spend_lock_try_sql
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

    While another transaction's spend of this user holds the user's spend lock the
    answer is "in_progress" (or the first result, if this key already applied). On
    PostgreSQL that lock is an advisory lock held until the spending transaction ends
    and the whole spend is one statement (:func:`_spend_in_one_statement`); elsewhere
    it is the Redis lock ``lock:user:{userId}:spend``, held for the write. The row lock
    and the balance check make a double spend impossible even without either lock.
    """
    amount = _amount_checked(amount)
    idempotency_key = _key_checked(idempotency_key)
    if spends_in_one_statement():
        return _spend_in_one_statement(
            user_id=user_id, amount=amount, idempotency_key=idempotency_key, reason=reason
        )
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


def spends_in_one_statement() -> bool:
    """Spends are one statement where the database has data-modifying CTEs, ``ON
    CONFLICT`` and advisory locks: PostgreSQL."""
    return connection.vendor == "postgresql"


_USERS = BotUser._meta.db_table
_ENTRIES = BonusTransaction._meta.db_table


# One spend, one statement (READ COMMITTED; every CTE sees the statement's snapshot):
#
# - ``lock_try``: the user's spend lock, tried first and once (MATERIALIZED: a volatile
#   call is never inlined or repeated). False: another transaction's spend holds it.
# - ``known``: the user as of the snapshot (unlocked): the project for the key lookup,
#   and the balance an "in_progress" answer shows.
# - ``prior``: the entry already written under this key (a replay), as of the snapshot.
# - ``locked``: only with the lock and no prior entry, the user's row under
#   ``FOR UPDATE``. If a concurrent transaction holds the row, this waits for it and
#   then reads the row's newest version (not the snapshot's): the balance is current.
# - ``entry``: the ledger entry, only if the balance suffices. ``ON CONFLICT DO
#   NOTHING`` catches a duplicate of the key committed after the snapshot (the caller
#   then re-reads it and answers replayed); its ``balance_after`` is the locked balance
#   minus the amount, and the CHECKs keep it non-negative.
# - ``moved``: the balance, only if the entry was written (``FROM entry``), to exactly
#   the entry's ``balance_after``: the row is still locked by this statement, so no
#   other write can come between the read and this update.
def _spend_sql(lock_try: str) -> str:
    """The statement, with ``lock_try`` as the lock's boolean expression (the tests
    swap in ``true`` to race spends with no lock at all)."""
    return f"""
    WITH lock_try AS MATERIALIZED (
        SELECT {lock_try} AS taken
    ),
    known AS MATERIALIZED (
        SELECT id, project_id, balance FROM {_USERS} WHERE id = %(user_id)s
    ),
    prior AS MATERIALIZED (
        SELECT t.id, t.user_id, t.amount, t.kind, t.balance_after
        FROM {_ENTRIES} t JOIN known k ON t.project_id = k.project_id
        WHERE t.idempotency_key = %(key)s
    ),
    locked AS MATERIALIZED (
        SELECT u.id, u.project_id, u.balance FROM {_USERS} u
        WHERE u.id = %(user_id)s
          AND (SELECT taken FROM lock_try)
          AND NOT EXISTS (SELECT FROM prior)
        FOR UPDATE OF u
    ),
    entry AS (
        INSERT INTO {_ENTRIES}
            (project_id, user_id, amount, kind, reason, idempotency_key, balance_after,
             created_by_id, created_at)
        SELECT l.project_id, l.id, %(amount)s, %(kind)s, %(reason)s, %(key)s,
               l.balance + %(amount)s, NULL, %(now)s
        FROM locked l
        WHERE l.balance + %(amount)s >= 0
        ON CONFLICT (project_id, idempotency_key) DO NOTHING
        RETURNING id, balance_after
    ),
    moved AS (
        UPDATE {_USERS} u SET balance = e.balance_after
        FROM entry e
        WHERE u.id = %(user_id)s
        RETURNING u.balance
    )
    SELECT (SELECT taken FROM lock_try), k.project_id, k.balance, l.balance,
           p.id, p.user_id, p.amount, p.kind, p.balance_after,
           e.id, e.balance_after, m.balance
    FROM known k
    LEFT JOIN locked l ON true
    LEFT JOIN prior p ON true
    LEFT JOIN entry e ON true
    LEFT JOIN moved m ON true
    """  # noqa: S608 (table names from the models, values as placeholders)


_SPEND_SQL = _spend_sql(user_spend_lock_try_sql("%(user_id)s"))


def _spend_in_one_statement(
    *, user_id: int, amount: int, idempotency_key: str, reason: str
) -> BonusResult:
    """:func:`bonus_spend` on PostgreSQL: one statement (``_SPEND_SQL``), no savepoint.

    No savepoint, because the statement cannot fail for data reasons: the amount is
    validated, a spend cannot overflow, the balance check is in the statement, and a
    duplicate key is ``ON CONFLICT DO NOTHING``. What can still fail (a deadlock, a
    lost connection) fails the caller's transaction, which must roll back anyway.
    Only a duplicate committed after the statement's snapshot costs a second
    statement (re-reading the entry to answer it).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _SPEND_SQL,
            {
                "user_id": user_id,
                "amount": -amount,
                "kind": str(Kind.SPEND),
                "reason": reason[:REASON_MAX_LENGTH],
                "key": idempotency_key,
                "now": timezone.now(),
            },
        )
        row = cursor.fetchone()
    if row is None:
        raise BotUser.DoesNotExist(f"no bot user {user_id}")
    (taken, project_id, balance_seen, balance_locked, *prior, entry_id, balance_after, moved) = row
    if prior[0] is not None:
        if not taken:
            metrics.inc("bp_lock_contention_total", lock="user_spend")
        return _replayed(
            _entry_from(prior, idempotency_key=idempotency_key),
            user_id=user_id,
            amount=-amount,
            kind=Kind.SPEND,
        )
    if not taken:
        metrics.inc("bp_lock_contention_total", lock="user_spend")
        return BonusResult(status="in_progress", balance=balance_seen, transaction_id=None)
    if balance_locked is None:  # deleted after the snapshot (users are PROTECTed)
        raise BotUser.DoesNotExist(f"no bot user {user_id}")
    if balance_locked < amount:
        return BonusResult(status="insufficient", balance=balance_locked, transaction_id=None)
    if entry_id is None:
        # A concurrent duplicate committed the key after this statement's snapshot.
        entry = _entry_by_key(project_id=project_id, idempotency_key=idempotency_key)
        if entry is None:
            raise RuntimeError(f"idempotency key {idempotency_key!r} conflicted but is gone")
        return _replayed(entry, user_id=user_id, amount=-amount, kind=Kind.SPEND)
    if moved != balance_after:  # cannot happen: the statement held the row lock
        raise RuntimeError(f"spend {entry_id} of user {user_id} did not move the balance")
    user_state_changed(user_id=user_id, project_id=project_id)
    return BonusResult(status="ok", balance=balance_after, transaction_id=entry_id)


def _entry_from(columns: list[Any], *, idempotency_key: str) -> BonusTransaction:
    """The prior entry's columns as read by ``_SPEND_SQL``, for :func:`_replayed`."""
    entry_id, entry_user_id, entry_amount, entry_kind, entry_balance_after = columns
    return BonusTransaction(
        pk=entry_id,
        user_id=entry_user_id,
        amount=entry_amount,
        kind=entry_kind,
        balance_after=entry_balance_after,
        idempotency_key=idempotency_key,
    )


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
