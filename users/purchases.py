"""Purchases earn bonuses by the earn rules, once per ``order_id``; refunds claw them
back, never below zero (what the balance lacks is recorded as the shortfall).

Exactly once: every write runs under the customer's row lock, so concurrent reports
of one order serialise and the later ones find the first; the ledger entry is keyed
by the purchase (``purchase:{id}``) and a refund by ``refund:{purchase}:{refund_id}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from users.earn_rules import amount_parse, earn_quote
from users.ledger import bonus_earn, ledger_apply
from users.models import BonusTransaction, BotUser
from users.models_pos import Cashier, Hold, Purchase, Refund
from users.webhooks_out import event_emit

ORDER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,127}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class PurchaseError(ValueError):
    """A purchase or refund that cannot be recorded; ``code`` is stable for the API."""

    code = "invalid"
    status = 400


class CustomerNotFound(PurchaseError):
    code, status = "customer_not_found", 404


class PurchaseNotFound(PurchaseError):
    code, status = "purchase_not_found", 404


class OrderConflict(PurchaseError):
    code, status = "order_conflict", 409


class RefundConflict(PurchaseError):
    code, status = "refund_conflict", 409


class RefundTooLarge(PurchaseError):
    code, status = "refund_too_large", 409


class CashierLimitExceeded(PurchaseError):
    code, status = "cashier_limit_exceeded", 409


def order_id_check(order_id: object, *, what: str = "order_id") -> str:
    if not isinstance(order_id, str) or not ORDER_ID_RE.match(order_id):
        raise PurchaseError(
            f"{what} must be 1 to 128 letters, digits or . _ : / # - (starting with a "
            "letter or digit)"
        )
    return order_id


def currency_check(currency: object) -> str:
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise PurchaseError("currency must be a three-letter ISO code such as EUR")
    return currency


@dataclass(frozen=True)
class PurchaseResult:
    purchase: Purchase
    created: bool
    balance: int
    new_level: str | None = None


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    purchase: Purchase
    created: bool
    balance: int


def _same_order(existing: Purchase, *, customer_id: int, amount: Decimal, currency: str) -> None:
    if (existing.customer_id, existing.amount, existing.currency) != (
        customer_id,
        amount,
        currency,
    ):
        raise OrderConflict(
            f"order {existing.order_id} was already recorded with another customer, "
            "amount or currency"
        )


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def cashier_used_today(cashier_id: int, *, now: datetime | None = None) -> int:
    """Bonuses the cashier has accrued and redeemed today (UTC), for the daily limit."""
    start = _day_start(now or timezone.now())
    accrued = (
        Purchase.objects.filter(cashier_id=cashier_id, created_at__gte=start).aggregate(
            total=Sum("accrued")
        )["total"]
        or 0
    )
    redeemed = (
        Hold.objects.filter(
            cashier_id=cashier_id,
            created_at__gte=start,
            status__in=[Hold.Status.HELD, Hold.Status.CONFIRMED],
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    return accrued + redeemed


def cashier_limit_check(cashier: Cashier, amount: int, *, now: datetime | None = None) -> None:
    """Raise :class:`CashierLimitExceeded` if ``amount`` more bonuses pass the limit.
    Call with the cashier's row locked."""
    if not cashier.is_active:
        raise CashierLimitExceeded("this cashier is not active")
    if cashier.daily_limit is None:
        return
    used = cashier_used_today(cashier.pk, now=now)
    if used + amount > cashier.daily_limit:
        raise CashierLimitExceeded(
            f"the cashier's daily limit of {cashier.daily_limit} bonuses would be passed "
            f"({used} used today)"
        )


def purchase_record(
    *,
    project_id: int,
    customer_id: int,
    order_id: str,
    amount: Any,
    currency: str = "USD",
    items: list | None = None,
    store: str = "",
    cashier_id: int | None = None,
    api_key_id: int | None = None,
    now: datetime | None = None,
) -> PurchaseResult:
    """Record a purchase and accrue its bonuses, once per (project, ``order_id``).

    The same order again (same customer, amount, currency) answers the first result
    with ``created=False``; with different values, :class:`OrderConflict`.
    """
    order_id = order_id_check(order_id)
    amount = amount_parse(amount)
    currency = currency_check(currency)
    now = now or timezone.now()
    existing = Purchase.objects.filter(project_id=project_id, order_id=order_id).first()
    if existing is not None:
        _same_order(existing, customer_id=customer_id, amount=amount, currency=currency)
        return _result(existing, created=False)
    with transaction.atomic():
        cashier = None
        if cashier_id is not None:
            cashier = Cashier.objects.select_for_update().get(pk=cashier_id, project_id=project_id)
            store = store or cashier.store_name
        customer = (
            BotUser.objects.select_for_update(of=("self",))
            .filter(pk=customer_id, project_id=project_id)
            .first()
        )
        if customer is None:
            raise CustomerNotFound("no such customer in this project")
        existing = Purchase.objects.filter(project_id=project_id, order_id=order_id).first()
        if existing is not None:  # a concurrent report of the same order committed first
            _same_order(existing, customer_id=customer_id, amount=amount, currency=currency)
            return _result(existing, created=False)
        quote = earn_quote(
            project_id=project_id,
            customer_id=customer.pk,
            level=customer.level,
            amount=amount,
            now=now,
        )
        if cashier is not None:
            cashier_limit_check(cashier, quote.bonuses, now=now)
        try:
            with transaction.atomic():
                purchase = Purchase.objects.create(
                    project_id=project_id,
                    customer=customer,
                    order_id=order_id,
                    amount=amount,
                    currency=currency,
                    items=items or [],
                    store=store[:100],
                    cashier=cashier,
                    api_key_id=api_key_id,
                )
        except IntegrityError:  # the same order for another customer, committed first
            existing = Purchase.objects.get(project_id=project_id, order_id=order_id)
            _same_order(existing, customer_id=customer_id, amount=amount, currency=currency)
            return _result(existing, created=False)
        balance, new_level = customer.balance, None
        if quote.bonuses > 0:
            who = f" by {cashier}" if cashier is not None else ""
            result = bonus_earn(
                user_id=customer.pk,
                amount=quote.bonuses,
                idempotency_key=f"purchase:{purchase.pk}",
                reason=f"Purchase {order_id}{who}" + (f" at {store}" if store else ""),
            )
            purchase.accrued = quote.bonuses
            purchase.earn_transaction_id = result.transaction_id
            purchase.save(update_fields=["accrued", "earn_transaction"])
            balance, new_level = result.balance, result.new_level
            event_emit(
                project_id=project_id,
                event="bonus.accrued",
                data=_event_data(purchase, balance=balance, amount=quote.bonuses),
            )
            # A level move was recorded and announced by the ledger (users/levels.py).
    return PurchaseResult(purchase=purchase, created=True, balance=balance, new_level=new_level)


def _result(purchase: Purchase, *, created: bool) -> PurchaseResult:
    balance = BotUser.objects.values_list("balance", flat=True).get(pk=purchase.customer_id)
    return PurchaseResult(purchase=purchase, created=created, balance=balance)


def _event_data(purchase: Purchase, *, balance: int, amount: int) -> dict:
    return {
        "customer_id": purchase.customer_id,
        "order_id": purchase.order_id,
        "amount": amount,
        "balance": balance,
        "store": purchase.store,
    }


def refund_record(
    *, project_id: int, order_id: str, refund_id: str, amount: Any = None
) -> RefundResult:
    """Refund ``amount`` of an order (None: all that is left) and claw back its share of
    the accrued bonuses: at most the balance; the rest is the recorded shortfall.

    The same ``refund_id`` again answers the first result (``created=False``).
    """
    order_id = order_id_check(order_id)
    refund_id = order_id_check(refund_id, what="refund_id")
    amount = None if amount is None else amount_parse(amount)
    found = Purchase.objects.filter(project_id=project_id, order_id=order_id).first()
    if found is None:
        raise PurchaseNotFound(f"no order {order_id} in this project")
    with transaction.atomic():
        customer = BotUser.objects.select_for_update(of=("self",)).get(pk=found.customer_id)
        purchase = Purchase.objects.select_for_update().get(pk=found.pk)
        existing = Refund.objects.filter(purchase=purchase, refund_id=refund_id).first()
        if existing is not None:
            if amount is not None and existing.amount != amount:
                raise RefundConflict(f"refund {refund_id} was already recorded with another amount")
            return RefundResult(existing, purchase, created=False, balance=customer.balance)
        remaining = purchase.amount - purchase.refunded_amount
        amount = remaining if amount is None else amount
        if remaining <= 0:
            raise RefundTooLarge(f"order {order_id} is already fully refunded")
        if amount <= 0 or amount > remaining:
            raise RefundTooLarge(f"at most {remaining} of order {order_id} is left to refund")
        refunded = purchase.refunded_amount + amount
        if refunded == purchase.amount:
            target = purchase.accrued
        else:
            share = Decimal(purchase.accrued) * refunded / purchase.amount
            target = int(share.to_integral_value(rounding=ROUND_DOWN))
        clawback = max(target - purchase.clawed_back - purchase.shortfall, 0)
        taken = min(clawback, customer.balance)
        balance, entry_id = customer.balance, None
        if taken > 0:
            result = ledger_apply(
                user_id=customer.pk,
                amount=-taken,
                kind=BonusTransaction.Kind.CLAWBACK,
                idempotency_key=f"refund:{purchase.pk}:{refund_id}",
                reason=f"Refund {refund_id} of order {order_id}",
            )
            balance, entry_id = result.balance, result.transaction_id
        refund = Refund.objects.create(
            purchase=purchase,
            refund_id=refund_id,
            amount=amount,
            clawback=clawback,
            taken=taken,
            shortfall=clawback - taken,
            transaction_id=entry_id,
        )
        purchase.refunded_amount = refunded
        purchase.clawed_back += taken
        purchase.shortfall += clawback - taken
        purchase.save(update_fields=["refunded_amount", "clawed_back", "shortfall"])
        if taken > 0:
            event_emit(
                project_id=project_id,
                event="bonus.clawed_back",
                data={
                    **_event_data(purchase, balance=balance, amount=taken),
                    "refund_id": refund_id,
                    "shortfall": clawback - taken,
                },
            )
    return RefundResult(refund, purchase, created=True, balance=balance)
