"""Payments of ``invoice`` steps: the pre-checkout decision, recording a payment once,
crediting its bonuses through the ledger, and refunding Stars from the admin.

- :func:`pre_checkout_decide`: Telegram asks whether a payment may go ahead and waits
  at most 10 s. The answer is decided from the database at once (one indexed read of
  the execution, one count for the stock): the invoice must still be the one the
  conversation waits for, with the same amount and currency, and the item in stock.
- :func:`payment_record`: one :class:`users.models.Payment` per Telegram charge
  (unique), the step's bonus credited with ``payment:<charge id>`` as idempotency
  key: a replayed ``successful_payment`` records and credits nothing twice.
- :func:`payment_refund`: ``refundStarPayment``, at most once per payment (row lock
  and status check), from the admin.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from botplatform.conversation import AnswerPreCheckout, InputEvent
from users import ledger
from users.models import BotUser, Payment
from workflows.engine.steps.invoice import invoice_payload_parse
from workflows.engine.version_cache import definition_for_version
from workflows.models import WorkflowExecution

logger = logging.getLogger(__name__)

EXPIRED = "This invoice has expired. Please ask for a new one."
CHANGED = "The price has changed. Please ask for a new invoice."
SOLD_OUT = "Sorry, this is sold out."


def _invoice_of(user: BotUser, payload: str) -> tuple[WorkflowExecution | None, int, dict]:
    """The execution an invoice payload names (the user's own), its seq and step."""
    parsed = invoice_payload_parse(payload)
    if parsed is None:
        return None, -1, {}
    execution_id, seq, step_id = parsed
    execution = (
        WorkflowExecution.objects.filter(pk=execution_id, user_id=user.pk)
        .only("id", "status", "context", "version_id", "project_id", "current_step")
        .first()
    )
    if execution is None:
        return None, seq, {}
    step = definition_for_version(execution.version_id)["steps"].get(step_id) or {}
    return execution, seq, step if step.get("type") == "invoice" else {}


def pre_checkout_decide(*, user: BotUser, event: InputEvent) -> AnswerPreCheckout:
    """Whether the payment may go ahead; always an answer (Telegram needs one)."""
    execution, seq, step = _invoice_of(user, event.invoice_payload)
    wait = (execution.context.get("wait") or {}) if execution is not None else {}
    answer = AnswerPreCheckout(pre_checkout_query_id=event.pre_checkout_query_id, ok=True)
    if (
        not step
        or execution.status != WorkflowExecution.Status.WAITING
        or wait.get("kind") != "invoice"
        or wait.get("seq") != seq
    ):
        return AnswerPreCheckout(event.pre_checkout_query_id, ok=False, error_message=EXPIRED)
    if event.total_amount != step.get("amount") or event.currency != step.get("currency", "XTR"):
        return AnswerPreCheckout(event.pre_checkout_query_id, ok=False, error_message=CHANGED)
    stock = step.get("stock")
    if stock is not None:
        sold = Payment.objects.filter(
            project_id=execution.project_id,
            item=step.get("item", ""),
            status=Payment.Status.PAID,
        ).count()
        if sold >= stock:
            return AnswerPreCheckout(event.pre_checkout_query_id, ok=False, error_message=SOLD_OUT)
    return answer


def payment_record(
    *, user: BotUser, bot, event: InputEvent
) -> tuple[Payment, ledger.BonusResult | None]:
    """Record a successful payment once and credit its bonus once (by charge id);
    the ledger's result (a replay answers the first one) when there is a bonus."""
    _execution, _seq, step = _invoice_of(user, event.invoice_payload)
    bonus = int(step.get("bonus") or 0)
    item = str(step.get("item") or "")[:64]
    try:
        with transaction.atomic():
            payment, _created = Payment.objects.get_or_create(
                charge_id=event.charge_id,
                defaults={
                    "project_id": user.project_id,
                    "user": user,
                    "bot": bot,
                    "provider_charge_id": event.provider_charge_id,
                    "currency": event.currency,
                    "amount": event.total_amount,
                    "item": item,
                    "payload": event.invoice_payload,
                    "bonus": bonus,
                },
            )
    except IntegrityError:  # the same charge recorded by a concurrent delivery
        payment = Payment.objects.get(charge_id=event.charge_id)
    result = None
    if payment.bonus > 0 and payment.user_id == user.pk:
        result = ledger.bonus_earn(
            user_id=user.pk,
            amount=payment.bonus,
            idempotency_key=f"payment:{payment.charge_id}"[:255],
            reason=f"Payment {payment.item or payment.payload}"[:500],
        )
    return payment, result


class RefundRefused(Exception):
    """Telegram (or the payment's state) does not allow the refund; says why."""


def payment_refund(*, payment_id: int) -> bool:
    """Refund a Stars payment once; False when it was refunded already."""
    from botplatform.telegram.client import error_classify
    from botplatform.telegram.payments import star_refund

    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update(of=("self",))
            .select_related("user", "bot")
            .filter(pk=payment_id)
            .first()
        )
        if payment is None or payment.status != Payment.Status.PAID:
            return False
        if payment.currency != "XTR" or payment.bot is None:
            raise RefundRefused("Only Telegram Stars payments of a known bot can be refunded here.")
        try:
            star_refund(
                bot=payment.bot, telegram_id=payment.user.telegram_id, charge_id=payment.charge_id
            )
        except Exception as exc:
            raise RefundRefused(f"Telegram refused: {error_classify(exc).description}") from None
        payment.status = Payment.Status.REFUNDED
        payment.refunded_at = timezone.now()
        payment.save(update_fields=["status", "refunded_at"])
    return True
