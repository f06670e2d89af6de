"""Writes of the loyalty core: the bonus ledger, bot users, referrals (variables:
:mod:`users.variables`).

Ledger rules (see docs/loyalty.md):

- Every balance change is one append-only ``BonusTransaction`` written in the same
  transaction as the balance, under the user's row lock (``SELECT ... FOR UPDATE``),
  with a compare-and-set UPDATE; the database CHECKs keep balances non-negative.
- Every operation carries an idempotency key, unique per project in the database.
  The same key again answers with the first result (``replayed=True``), also when
  the duplicate runs concurrently: the unique constraint decides, inside a savepoint.
- Spends also take the Redis lock ``lock:user:{userId}:spend`` to answer a second,
  concurrent press with "in_progress"; correctness does not depend on that lock.
- Every write drops the user's cached state after commit (``transaction.on_commit``).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

from django.core.cache import cache
from django.db import DataError, IntegrityError, connection, transaction
from django.utils import timezone

from botplatform import metrics
from botplatform.cache import (
    USER_STATE_GENERATION_TTL,
    redis_pipeline,
    user_profile_key,
    user_state_generation_key,
    user_variables_key,
)
from botplatform.locks import LockNotAcquired, redis_lock
from botplatform.models import Project
from users.models import BonusTransaction, BotUser
from users.readahead import UsersAhead
from users.selectors import CACHE_ERRORS, cache_error_log, level_for

logger = logging.getLogger(__name__)

Kind = BonusTransaction.Kind

# One operation may move at most this many bonuses (a typo guard far below the
# 64-bit limit of the balance column).
MAX_AMOUNT = 10**12
IDEMPOTENCY_KEY_MAX_LENGTH = 200
REASON_MAX_LENGTH = 500
VARIABLE_KEY_MAX_LENGTH = 64
# last_seen_at is refreshed at most this often, so a chatty user costs no writes.
LAST_SEEN_RESOLUTION = timedelta(seconds=60)
# Only a user who first appeared this recently can still be given a referrer.
REFERRAL_WINDOW = timedelta(hours=24)
REFERRAL_CODE_PREFIX = "ref_"
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


def user_state_changed(*, user_id: int, project_id: int) -> None:
    """THE invalidation of a user's cached state (profile and variables): every writer
    calls it. Drops the cached copies once the current transaction commits (at once
    outside one), so no reader caches the old state again after the write.
    """
    transaction.on_commit(partial(_state_cache_clear, user_id=user_id, project_id=project_id))


def _state_cache_clear(*, user_id: int, project_id: int) -> None:
    """Make every cached copy of the user's state stale, then drop it (after commit).

    Never raises: a cache outage is logged, the keys expire on their own TTLs.
    """
    generation_key = user_state_generation_key(user_id, project_id)
    data_keys = [user_variables_key(user_id, project_id), user_profile_key(user_id, project_id)]
    token = secrets.token_hex(8)
    try:
        pipeline = redis_pipeline()
        if pipeline is None:
            cache.set(generation_key, token, USER_STATE_GENERATION_TTL)
            cache.delete_many(data_keys)
            return
        cache.set(generation_key, token, USER_STATE_GENERATION_TTL, client=pipeline)
        cache.delete_many(data_keys, client=pipeline)
        pipeline.execute()
    except CACHE_ERRORS as exc:
        # The recovery flush (botplatform.cache_backend) drops user:* keys written
        # before an outage, so a copy missed here cannot outlive it.
        cache_error_log(exc, "cache unreachable; user %s state not invalidated", user_id)


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


def _ledger_apply(
    *,
    user_id: int,
    amount: int,
    kind: str,
    idempotency_key: str,
    reason: str = "",
    created_by: Any = None,
) -> BonusResult:
    """Apply one signed ``amount`` to the balance and append its ledger entry, once."""
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
            .only("id", "project_id", "balance", "lifetime_earned", "level", "project__levels")
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
    return _ledger_apply(
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
            return _ledger_apply(
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
    return _ledger_apply(
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
        return _ledger_apply(
            user_id=user_id,
            amount=-expired,
            kind=Kind.EXPIRY,
            idempotency_key=f"expiry:{user_id}:{cutoff.date().isoformat()}",
            reason=f"Bonuses credited before {cutoff.date().isoformat()} expired",
        )


# --- bot users and referrals ------------------------------------------------------


def _truncated(value: str | None, length: int) -> str:
    return (value or "")[:length]


def bot_user_upsert(
    *,
    project_id: int,
    telegram_id: int,
    chat_id: int,
    username: str = "",
    first_name: str = "",
    last_name: str = "",
    language_code: str = "",
    is_test: bool = False,
    ahead: UsersAhead | None = None,
) -> tuple[BotUser, bool]:
    """Find or create the project's user for a Telegram sender; True when created.

    Profile fields are written only when Telegram reports a change; ``last_seen_at``
    at most once a minute, so a known user usually costs one SELECT. A user who writes
    again is no longer "blocked". A new user gets the project's welcome bonus once.
    ``ahead``: a batch's read-ahead: the user row comes from there, and a bare
    last-seen stamp waits for the batch's one write (:func:`last_seen_writes`).
    """
    fields = {
        "chat_id": chat_id,
        "username": _truncated(username, 64),
        "first_name": _truncated(first_name, 128),
        "last_name": _truncated(last_name, 128),
        "language_code": _truncated(language_code, 16),
    }
    user = ahead.user_take(project_id, telegram_id) if ahead is not None else None
    if user is None:
        user = BotUser.objects.filter(project_id=project_id, telegram_id=telegram_id).first()
    if user is None:
        project = Project.objects.only("welcome_bonus", "levels").get(pk=project_id)
        with transaction.atomic():
            user, created = BotUser.objects.get_or_create(
                project_id=project_id,
                telegram_id=telegram_id,
                defaults={
                    **fields,
                    "is_test": is_test,
                    "level": level_for(levels=project.levels, lifetime_earned=0),
                },
            )
            if created and project.welcome_bonus > 0:
                result = bonus_earn(
                    user_id=user.pk,
                    amount=project.welcome_bonus,
                    idempotency_key=f"welcome:{user.pk}",
                    reason="Welcome bonus",
                )
                user.balance = result.balance
                user.lifetime_earned = project.welcome_bonus
                user.level = result.new_level or user.level
        if created:
            return user, True

    changes = {name: value for name, value in fields.items() if getattr(user, name) != value}
    if user.is_blocked:
        changes["is_blocked"] = False
    now = timezone.now()
    if changes or now - user.last_seen_at >= LAST_SEEN_RESOLUTION:
        changes["last_seen_at"] = now
        if ahead is not None and set(changes) == {"last_seen_at"}:
            ahead.last_seen.add(user.pk)  # one UPDATE for the whole batch, at its end
            user.last_seen_at = now
            return user, False
        with transaction.atomic():
            BotUser.objects.filter(pk=user.pk).update(**changes)
            if set(changes) != {"last_seen_at"}:
                user_state_changed(user_id=user.pk, project_id=project_id)
        for name, value in changes.items():
            setattr(user, name, value)
    return user, False


def last_seen_writes(ahead: UsersAhead | None) -> list[tuple[str, list]]:
    """A batch's put-off ``last_seen_at`` stamps as (sql, params), and forget them."""
    if ahead is None or not ahead.last_seen:
        return []
    table = connection.ops.quote_name(BotUser._meta.db_table)
    statement = (
        f"UPDATE {table} SET last_seen_at = %s WHERE id = ANY(%s::bigint[])",  # noqa: S608
        [timezone.now(), sorted(ahead.last_seen)],
    )
    ahead.last_seen = set()
    return [statement]


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


__all__ = [
    "BonusCapExceeded",
    "BonusResult",
    "IdempotencyKeyConflict",
    "bonus_adjust",
    "bonus_earn",
    "bonus_expire",
    "bonus_spend",
    "bonus_spend_for_purchase",
    "bot_user_upsert",
    "referral_apply",
    "referral_reward_grant",
    "user_state_changed",
]
