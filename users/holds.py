"""Redemptions in two steps: hold, then confirm (one ledger spend) or release.

- A hold counts against the available balance (balance minus open holds), checked
  under the customer's row lock, so concurrent holds never promise more than there is.
- Confirm and release take the customer's row lock, then the hold's: one order
  everywhere, so they serialise with holds and with each other. Confirm writes one
  ``spend`` keyed ``hold:{id}``; the database CHECK keeps the balance non-negative
  even if the bot spent the bonuses meanwhile (then confirm answers "insufficient").
- With the project's ``hold_approval_required`` the customer approves in Telegram
  first (:func:`hold_approve`, called by the bot); senders of that question register
  with :func:`approval_sender_register`.
- Open holds past ``expires_at`` are released by :func:`holds_expire` (periodic sweep).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from users.ledger import MAX_AMOUNT, bonus_spend
from users.models import BotUser
from users.models_pos import Cashier, Hold
from users.purchases import cashier_limit_check
from users.webhooks_out import event_emit

logger = logging.getLogger(__name__)

MAX_HOLD_MINUTES = 7 * 24 * 60

_approval_senders: list[Callable[[Hold], None]] = []


class HoldError(ValueError):
    """A hold operation that cannot be done; ``code`` is stable for the API."""

    code = "invalid"
    status = 400


class HoldNotFound(HoldError):
    code, status = "hold_not_found", 404


class InsufficientBalance(HoldError):
    code, status = "insufficient_balance", 409


class HoldNotOpen(HoldError):
    code, status = "hold_not_open", 409


class ApprovalPending(HoldError):
    code, status = "approval_pending", 409


class ApprovalDeclined(HoldError):
    code, status = "approval_declined", 409


class Busy(HoldError):
    code, status = "busy", 409


def approval_sender_register(sender: Callable[[Hold], None]) -> None:
    """Register who asks the customer "Spend N bonuses at Store 5?" (the bot side).

    Called after the hold commits; it should queue its message, not block."""
    if sender not in _approval_senders:
        _approval_senders.append(sender)


def available_balance(customer_id: int, *, now: datetime | None = None) -> int:
    """The balance minus open, unexpired holds (what a new hold may take)."""
    now = now or timezone.now()
    balance = BotUser.objects.values_list("balance", flat=True).get(pk=customer_id)
    return balance - held_total(customer_id, now=now)


def held_total(customer_id: int, *, now: datetime | None = None) -> int:
    now = now or timezone.now()
    return (
        Hold.objects.filter(
            customer_id=customer_id, status=Hold.Status.HELD, expires_at__gt=now
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )


def _amount_check(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise HoldError("amount must be a positive whole number of bonuses")
    if amount > MAX_AMOUNT:
        raise HoldError(f"amount must be at most {MAX_AMOUNT}")
    return amount


def hold_create(
    *,
    project_id: int,
    customer_id: int,
    amount: int,
    expires_in_minutes: int | None = None,
    order_id: str = "",
    store: str = "",
    cashier_id: int | None = None,
    api_key_id: int | None = None,
    require_approval: bool | None = None,
    now: datetime | None = None,
) -> Hold:
    """Hold ``amount`` bonuses of the customer, or :class:`InsufficientBalance`.

    The customer approves in Telegram first when ``require_approval`` says so; by
    default when the project asks for it or a cashier redeems in the bot (customers
    created at a till, without Telegram, are never asked)."""
    amount = _amount_check(amount)
    now = now or timezone.now()
    with transaction.atomic():
        cashier = None
        if cashier_id is not None:
            cashier = Cashier.objects.select_for_update().get(pk=cashier_id, project_id=project_id)
            store = store or cashier.store_name
        customer = (
            BotUser.objects.select_for_update(of=("self",))
            .select_related("project")
            .filter(pk=customer_id, project_id=project_id)
            .first()
        )
        if customer is None:
            raise HoldNotFound("no such customer in this project")
        project = customer.project
        minutes = expires_in_minutes if expires_in_minutes is not None else project.hold_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise HoldError("expires_in_minutes must be a whole number")
        if not 1 <= minutes <= MAX_HOLD_MINUTES:
            raise HoldError(f"expires_in_minutes must be between 1 and {MAX_HOLD_MINUTES}")
        available = customer.balance - held_total(customer.pk, now=now)
        if amount > available:
            raise InsufficientBalance(f"only {max(available, 0)} bonuses are available")
        if cashier is not None:
            cashier_limit_check(cashier, amount, now=now)
        if require_approval is None:
            require_approval = project.hold_approval_required or cashier is not None
        needs_approval = require_approval and customer.telegram_id is not None
        hold = Hold.objects.create(
            project_id=project_id,
            customer=customer,
            amount=amount,
            expires_at=now + timedelta(minutes=minutes),
            needs_customer_approval=needs_approval,
            order_id=order_id[:128],
            store=store[:100],
            cashier=cashier,
            api_key_id=api_key_id,
        )
        if needs_approval:
            transaction.on_commit(lambda: _ask_approval(hold))
    return hold


def _ask_approval(hold: Hold) -> None:
    if not _approval_senders:
        logger.warning("Hold %s needs approval but no sender is registered", hold.pk)
    for sender in _approval_senders:
        try:
            sender(hold)
        except Exception:
            logger.exception("Asking approval of hold %s failed", hold.pk)


def _locked(hold_id: int, project_id: int | None) -> tuple[BotUser, Hold]:
    """The hold's customer, then the hold, both row-locked (always in that order)."""
    found = Hold.objects.filter(pk=hold_id)
    if project_id is not None:
        found = found.filter(project_id=project_id)
    customer_id = found.values_list("customer_id", flat=True).first()
    if customer_id is None:
        raise HoldNotFound("no such hold in this project")
    customer = BotUser.objects.select_for_update(of=("self",)).get(pk=customer_id)
    hold = Hold.objects.select_for_update().get(pk=hold_id)
    if hold.customer_id != customer.pk:  # moved by a merge between the two reads
        return _locked(hold_id, project_id)
    return customer, hold


def hold_approve(hold: Hold | int, approved: bool, *, now: datetime | None = None) -> Hold:
    """The customer's Yes (``approved``) or No in Telegram. A No releases the hold.

    Idempotent: answering again after the first answer changes nothing."""
    now = now or timezone.now()
    hold_id = hold if isinstance(hold, int) else hold.pk
    with transaction.atomic():
        _customer, hold = _locked(hold_id, None)
        if hold.status != Hold.Status.HELD or hold.approved_at or hold.declined_at:
            return hold
        if hold.expires_at <= now:
            return _close(hold, Hold.Status.EXPIRED, now)
        if approved:
            hold.approved_at = now
            hold.save(update_fields=["approved_at"])
            return hold
        hold.declined_at = now
        hold.save(update_fields=["declined_at"])
        return _close(hold, Hold.Status.RELEASED, now)


def hold_confirm(*, hold_id: int, project_id: int, now: datetime | None = None) -> Hold:
    """Spend the held bonuses (one ledger entry). Confirming a confirmed hold answers
    it again; a released, expired, unapproved or declined hold is refused."""
    now = now or timezone.now()
    with transaction.atomic():
        customer, hold = _locked(hold_id, project_id)
        if hold.status == Hold.Status.CONFIRMED:
            return hold
        if hold.declined_at:
            raise ApprovalDeclined("the customer declined this redemption")
        if hold.status != Hold.Status.HELD:
            raise HoldNotOpen(f"the hold is {hold.status}")
        if hold.expires_at <= now:
            _close(hold, Hold.Status.EXPIRED, now)
            raise HoldNotOpen("the hold has expired")
        if hold.needs_customer_approval and not hold.approved_at:
            raise ApprovalPending("the customer has not approved this redemption yet")
        where = f" at {hold.store}" if hold.store else ""
        result = bonus_spend(
            user_id=customer.pk,
            amount=hold.amount,
            idempotency_key=f"hold:{hold.pk}",
            reason=f"Redeemed{where}" + (f" (order {hold.order_id})" if hold.order_id else ""),
        )
        if result.status == "in_progress":
            raise Busy("another spend of this customer is running; try again")
        if result.status == "insufficient":
            raise InsufficientBalance(f"only {result.balance} bonuses are left")
        hold.status = Hold.Status.CONFIRMED
        hold.transaction_id = result.transaction_id
        hold.resolved_at = now
        hold.save(update_fields=["status", "transaction", "resolved_at"])
        event_emit(
            project_id=hold.project_id,
            event="bonus.redeemed",
            data={
                "customer_id": customer.pk,
                "hold_id": hold.pk,
                "amount": hold.amount,
                "balance": result.balance,
                "store": hold.store,
                "order_id": hold.order_id,
            },
        )
    return hold


def hold_release(*, hold_id: int, project_id: int, now: datetime | None = None) -> Hold:
    """Give the held bonuses back (nothing is written to the ledger). Idempotent."""
    now = now or timezone.now()
    with transaction.atomic():
        _customer, hold = _locked(hold_id, project_id)
        if hold.status in (Hold.Status.RELEASED, Hold.Status.EXPIRED):
            return hold
        if hold.status != Hold.Status.HELD:
            raise HoldNotOpen(f"the hold is {hold.status}")
        return _close(hold, Hold.Status.RELEASED, now)


def _close(hold: Hold, status: str, now: datetime) -> Hold:
    hold.status = status
    hold.resolved_at = now
    hold.save(update_fields=["status", "resolved_at"])
    return hold


def holds_expire(*, now: datetime | None = None, limit: int = 1000) -> int:
    """Mark open holds past their expiry as expired (the bonuses become available
    again); returns how many. Idempotent; safe beside confirms (row locks)."""
    now = now or timezone.now()
    due = list(
        Hold.objects.filter(status=Hold.Status.HELD, expires_at__lte=now).values_list(
            "pk", flat=True
        )[:limit]
    )
    done = 0
    for hold_id in due:
        with transaction.atomic():
            _customer, hold = _locked(hold_id, None)
            if hold.status == Hold.Status.HELD and hold.expires_at <= now:
                _close(hold, Hold.Status.EXPIRED, now)
                done += 1
    return done
