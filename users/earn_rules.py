"""How many bonuses a purchase earns, by the project's earn rules.

The base rule for the customer's level (else the rule for every level) gives
``percent`` of the amount, rounded down, if the amount reaches its minimum; the
highest multiplier of the promo rules active that day (for that level or all levels)
multiplies it; then the per-purchase cap, then what is left of the per-day cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from django.db.models import Sum

from users.models_pos import EarnRule, Purchase

MAX_PURCHASE_AMOUNT = Decimal("1000000000")  # 10^9 in the currency: a typo guard


class AmountInvalid(ValueError):
    code = "invalid_amount"


def amount_parse(raw: object) -> Decimal:
    """A purchase amount: a non-negative number with at most 2 decimals, below 10^9.

    Accepts a JSON number or a decimal string ("12.50"); refuses NaN, infinities,
    exponents of absurd size, booleans and more than two decimals.
    """
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise AmountInvalid("the amount must be a number")
    if isinstance(raw, str) and (len(raw) > 32 or not raw.strip()):
        raise AmountInvalid("the amount must be a number like 12.50")
    try:
        value = Decimal(str(raw).strip()) if not isinstance(raw, Decimal) else raw
    except (InvalidOperation, ValueError):
        raise AmountInvalid("the amount must be a number like 12.50") from None
    if not value.is_finite():
        raise AmountInvalid("the amount must be a finite number")
    if value < 0:
        raise AmountInvalid("the amount must not be negative")
    if value >= MAX_PURCHASE_AMOUNT:
        raise AmountInvalid(f"the amount must be below {MAX_PURCHASE_AMOUNT}")
    if value != value.quantize(Decimal("0.01"), rounding=ROUND_DOWN):
        raise AmountInvalid("the amount may have at most 2 decimals")
    return value.quantize(Decimal("0.01"))


@dataclass(frozen=True)
class EarnQuote:
    bonuses: int
    percent: Decimal
    multiplier: Decimal
    capped: str  # "", "purchase", "day"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    from django.utils import timezone

    start = datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())
    return start, start + timedelta(days=1)


def earn_quote(
    *, project_id: int, customer_id: int, level: str, amount: Decimal, now: datetime
) -> EarnQuote:
    """The bonuses a purchase of ``amount`` earns now. Call under the customer's row
    lock so the per-day cap counts every purchase of that day."""
    rules = list(EarnRule.objects.filter(project_id=project_id, is_active=True))
    base_rules = [r for r in rules if r.kind == EarnRule.Kind.BASE]
    base = next((r for r in base_rules if r.level and r.level == level), None) or next(
        (r for r in base_rules if not r.level), None
    )
    if base is None or amount < base.min_purchase_amount:
        return EarnQuote(0, Decimal(0), Decimal(1), "")
    today = now.date()
    multiplier = max(
        (
            r.multiplier
            for r in rules
            if r.kind == EarnRule.Kind.PROMO
            and (not r.level or r.level == level)
            and (r.starts_on is None or r.starts_on <= today)
            and (r.ends_on is None or today <= r.ends_on)
        ),
        default=Decimal(1),
    )
    raw = amount * base.percent / 100 * multiplier
    bonuses = int(raw.to_integral_value(rounding=ROUND_DOWN))
    capped = ""
    if base.max_per_purchase is not None and bonuses > base.max_per_purchase:
        bonuses, capped = int(base.max_per_purchase), "purchase"
    if base.max_per_day is not None:
        start, end = _day_bounds(today)
        earned_today = (
            Purchase.objects.filter(
                customer_id=customer_id, created_at__gte=start, created_at__lt=end
            ).aggregate(total=Sum("accrued"))["total"]
            or 0
        )
        left = max(int(base.max_per_day) - earned_today, 0)
        if bonuses > left:
            bonuses, capped = left, "day"
    return EarnQuote(bonuses, base.percent, multiplier, capped)
