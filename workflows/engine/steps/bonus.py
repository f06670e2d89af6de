"""``bonus``: earn, spend or adjust bonuses through the loyalty ledger.

The idempotency key is derived from the event, the execution and the step, so a
retried Telegram update (same ``event_id``) never applies the operation twice.
Branches: ``on_success`` (or ``next``), ``on_insufficient``, ``on_in_progress``.
"""

from __future__ import annotations

from users import ledger as services
from workflows.engine.numbers import NumberError, integer_parse
from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    StepFailure,
    StepRuntime,
    StepType,
    step_ref,
)
from workflows.engine.templating import template_check

OPERATIONS = ("earn", "spend", "adjust")


def bonus_idempotency_key(*, event_id: str, execution_id: int, step_id: str, seq: int) -> str:
    """Stable for one event passing one step of one execution."""
    return f"wf:{event_id or f'seq{seq}'}:{execution_id}:{step_id}"[:200]


def _amount(value: str | int) -> int:
    """The bonus amount, or a StepFailure that tells the operator why not.

    Parsed by the bounded number parser (never ``int()`` on raw text) and held to the
    ledger's own maximum, so the ledger never sees an amount it would refuse.
    """
    try:
        amount = integer_parse(value)
    except NumberError as exc:
        raise StepFailure(f"the amount '{str(value)[:40]}' {exc}") from None
    if abs(amount) > services.MAX_AMOUNT:
        raise StepFailure(
            f"the amount {amount} is larger than the maximum of {services.MAX_AMOUNT} bonuses"
        )
    return amount


class BonusStep(StepType):
    type = "bonus"
    label = "Bonuses: earn, spend, adjust"
    description = "Earn, spend or adjust the user's bonuses in the ledger, then branch."
    fields = (
        FieldSpec(
            "operation",
            "choice",
            "Operation",
            choices=tuple(zip(OPERATIONS, ("Earn", "Spend", "Adjust (signed)"), strict=True)),
            required=True,
        ),
        FieldSpec(
            "amount",
            "amount",
            "Amount",
            "A whole number, or a template like {{ vars.price }}.",
            schema={"type": ["integer", "string"]},
            required=True,
            problem="a whole number or a template",
        ),
        FieldSpec(
            "reason",
            "line",
            "Reason",
            "Shown in the ledger. Required for adjust.",
            schema={"type": "string"},
        ),
        step_ref("on_success", "On success go to"),
        step_ref("on_insufficient", "If the balance is too low"),
        step_ref("on_in_progress", "If another operation is running (double tap)"),
        step_ref("next", "Otherwise go to", "Used when “on success” is empty."),
        DESCRIPTION_FIELD,
    )
    atomic = True
    target_fields = ("next", "on_success", "on_insufficient", "on_in_progress")

    def savepoint(self, step: dict) -> bool:
        """A spend on PostgreSQL is one statement (``users.ledger``): nothing of it can
        be half-applied, so no SAVEPOINT and RELEASE around it."""
        return not (step.get("operation") == "spend" and services.spends_in_one_statement())

    def check(self, checker: Checker) -> None:
        step = checker.step
        checker.choice("operation", OPERATIONS)
        amount = step.get("amount")
        if amount is None:
            checker.add("'amount' is missing")
        elif isinstance(amount, str):
            problem = template_check(amount)
            if problem:
                checker.add(f"'amount': {problem}")
        elif isinstance(amount, bool) or not isinstance(amount, int):
            checker.add("'amount' must be a whole number or a template")
        elif amount == 0 or (amount < 0 and step.get("operation") != "adjust"):
            checker.add("'amount' must be positive (only 'adjust' takes a negative amount)")
        elif abs(amount) > services.MAX_AMOUNT:
            checker.add(f"'amount' must be at most {services.MAX_AMOUNT} bonuses")
        checker.template("reason")
        if step.get("operation") == "adjust" and not step.get("reason"):
            checker.add("an 'adjust' needs a 'reason'")

    def run(self, rt: StepRuntime) -> Outcome:
        step = rt.step
        amount = step["amount"]
        amount = _amount(rt.render(amount, escape=False) if isinstance(amount, str) else amount)
        reason = rt.render(step.get("reason") or "", escape=False)[:500]
        operation = step["operation"]
        if amount == 0 or (amount < 0 and operation != "adjust"):
            raise StepFailure(f"the amount must be positive, got {amount}")
        event_id = rt.event.event_id if rt.event is not None else ""
        key = bonus_idempotency_key(
            event_id=event_id,
            execution_id=rt.execution.pk,
            step_id=rt.step_id,
            seq=int(rt.execution.context.get("seq", 0)),
        )
        user_id = rt.data.user.pk
        if operation == "earn":
            result = services.bonus_earn(
                user_id=user_id, amount=amount, idempotency_key=key, reason=reason
            )
        elif operation == "spend":
            result = services.bonus_spend(
                user_id=user_id, amount=amount, idempotency_key=key, reason=reason
            )
        else:
            result = services.bonus_adjust(
                user_id=user_id, amount=amount, reason=reason, created_by=None, idempotency_key=key
            )
        rt.output.update(
            operation=operation,
            amount=amount,
            status=result.status,
            balance=result.balance,
            replayed=result.replayed,
        )
        if result.status == "ok":
            rt.data.balance_update(balance=result.balance, level=result.new_level)
            if result.new_level:
                rt.output["new_level"] = result.new_level
            return Goto(step.get("on_success") or step.get("next"))
        if result.status == "insufficient":
            return Goto(step.get("on_insufficient"))
        return Goto(step.get("on_in_progress"))
