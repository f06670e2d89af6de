"""``invoice``: ask for a payment (Telegram Payments; ``XTR`` is Telegram Stars), wait
for it, then go on.

The invoice's payload names the execution, the wait and the step
(``inv:<execution>:<seq>:<step>``). Telegram's pre-checkout query and the
successful payment come back with it: ``workflows.payments`` answers the query
(the invoice still awaited, the amount and currency unchanged, the item not sold
out) and records the payment once per charge, crediting the step's ``bonus``
through the ledger with the charge id as idempotency key; then this step continues
at ``next``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from botplatform.conversation import InputEvent, SendInvoice
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    ON_TIMEOUT_FIELD,
    TIMEOUT_FIELD,
    Checker,
    FieldSpec,
    Goto,
    NotConsumed,
    Outcome,
    StepRuntime,
    StepType,
    Wait,
    step_ref,
    wait_timeout,
)

CURRENCIES = ("XTR",)
MAX_STARS = 100_000
PAYLOAD_PREFIX = "inv:"
# execution id, seq (ASCII digits, no leading zero: one spelling per invoice), step id.
_PAYLOAD_RE = re.compile(r"([1-9][0-9]{0,18}|0):([1-9][0-9]{0,8}|0):([^\x00]{1,64})", re.ASCII)


def invoice_payload(execution_id: int, seq: int, step_id: str) -> str:
    return f"{PAYLOAD_PREFIX}{execution_id}:{seq}:{step_id}"


def invoice_payload_parse(payload: str) -> tuple[int, int, str] | None:
    """(execution id, seq, step id) of an invoice payload, None if it is not ours."""
    if not payload.startswith(PAYLOAD_PREFIX):
        return None
    match = _PAYLOAD_RE.fullmatch(payload[len(PAYLOAD_PREFIX) :])
    if match is None:
        return None
    return int(match[1]), int(match[2]), match[3]


class InvoiceStep(StepType):
    type = "invoice"
    label = "Ask for a payment"
    description = "Send an invoice (Telegram Stars) and wait until it is paid."
    fields = (
        FieldSpec(
            "title",
            "template",
            "Product",
            "What is paid for, at most 32 characters.",
            schema={"type": "string", "maxLength": 32},
            required=True,
            localized=True,
        ),
        FieldSpec(
            "text",
            "template",
            "Description",
            "Shown on the invoice, at most 255 characters.",
            schema={"type": "string", "maxLength": 255},
            required=True,
            localized=True,
        ),
        FieldSpec(
            "currency",
            "choice",
            "Currency",
            "XTR: Telegram Stars (no payment provider needed).",
            choices=(("XTR", "Telegram Stars"),),
        ),
        FieldSpec(
            "amount",
            "int",
            "Price",
            f"Whole Stars, 1 to {MAX_STARS}.",
            schema={"type": "integer", "minimum": 1, "maximum": MAX_STARS},
            required=True,
        ),
        FieldSpec(
            "item",
            "line",
            "Item",
            "A short name for the admin's payment list and the stock count, e.g. vip-pass.",
            schema={"type": "string", "maxLength": 64},
        ),
        FieldSpec(
            "stock",
            "int",
            "Stock",
            "At most this many paid payments of the item (all users); empty: unlimited.",
            schema={"type": "integer", "minimum": 0},
        ),
        FieldSpec(
            "bonus",
            "int",
            "Bonuses for paying",
            "Credited once per payment.",
            schema={"type": "integer", "minimum": 0, "maximum": 10**9},
        ),
        step_ref("next", "After the payment go to", "Empty: the conversation ends."),
        TIMEOUT_FIELD,
        ON_TIMEOUT_FIELD,
        DESCRIPTION_FIELD,
    )
    target_fields = ("next", "on_timeout")

    def waits_for(self, step: dict) -> bool:
        return True

    def check(self, checker: Checker) -> None:
        step = checker.step
        checker.template("title", required=True, limit=32)
        checker.template("text", required=True, limit=255)
        checker.choice("currency", CURRENCIES, default="XTR")
        amount = step.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= MAX_STARS:
            checker.add(f"'amount' must be a whole number of Stars from 1 to {MAX_STARS}")
        for key in ("stock", "bonus"):
            value = step.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):  # fmt: skip
                checker.add(f"'{key}' must be a whole number, 0 or more")
        if len(checker.step_id) > 64:
            checker.add("the step's id is too long for an invoice (at most 64 characters)")

    def run(self, rt: StepRuntime) -> Outcome:
        step = rt.step
        seq = rt.next_seq()
        title = rt.render(step["title"], escape=False)[:32] or "Payment"
        rt.actions.append(
            SendInvoice(
                chat_id=rt.chat_id,
                title=title,
                description=rt.render(step["text"], escape=False)[:255] or title,
                payload=invoice_payload(rt.execution.pk, seq, rt.step_id),
                currency=step.get("currency", "XTR"),
                amount=int(step["amount"]),
                label=title,
            )
        )
        until = rt.now + timedelta(seconds=wait_timeout(step))
        return Wait(kind="invoice", until=until, state={"seq": seq})

    def resume(self, rt: StepRuntime, event: InputEvent) -> Outcome:
        if event.kind != "payment":
            return NotConsumed()
        seq = int((rt.execution.context.get("wait") or {}).get("seq", -1))
        if event.invoice_payload != invoice_payload(rt.execution.pk, seq, rt.step_id):
            return NotConsumed()
        rt.output.update(
            charge_id=event.charge_id, amount=event.total_amount, currency=event.currency
        )
        return Goto(rt.step.get("next"))
