"""``random_split``: an A/B test — send users down one of several variants by weight.

By default a user always gets the same variant of a step (a hash of the user, the
workflow and the step), so a returning user sees a consistent test; ``per_user``
false draws anew each time. The chosen variant is in the step log (``variant``), and
:func:`workflows.splits.split_reach` counts each variant's reach per version from it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from workflows.engine.steps.base import (
    DESCRIPTION_FIELD,
    STEP_REF,
    Checker,
    FieldSpec,
    Goto,
    Outcome,
    StepRuntime,
    StepType,
)

MAX_VARIANTS = 10
MAX_WEIGHT = 1_000_000
NAME_LIMIT = 40


def _weight_ok(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_WEIGHT
    )


def variant_pick(variants: list[dict], point: float) -> dict:
    """The variant at ``point`` (0 <= point < 1) of the weights laid end to end."""
    total = sum(float(v["weight"]) for v in variants)
    mark, running = point * total, 0.0
    for variant in variants:
        running += float(variant["weight"])
        if mark < running:
            return variant
    return variants[-1]


def user_point(user_id: Any, workflow_id: Any, step_id: str) -> float:
    """A stable number in [0, 1) for this user at this step (the same every time)."""
    digest = hashlib.sha256(f"{user_id}:{workflow_id}:{step_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class RandomSplitStep(StepType):
    type = "random_split"
    label = "Split at random (A/B test)"
    description = "Send each user down one variant, chosen at random by weight."
    fields = (
        FieldSpec(
            "variants",
            "json",
            "Variants",
            'A list like [{"name": "A", "weight": 50, "next": "offer_a"}, '
            '{"name": "B", "weight": 50, "next": "offer_b"}].',
            schema={
                "type": "array",
                "minItems": 2,
                "maxItems": MAX_VARIANTS,
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": NAME_LIMIT},
                        "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WEIGHT},
                        "next": STEP_REF,
                    },
                    "required": ["name", "weight", "next"],
                    "additionalProperties": False,
                },
            },
            required=True,
            problem=f'2 to {MAX_VARIANTS} objects like {{"name": "A", "weight": 50, "next": ...}}',
        ),
        FieldSpec(
            "per_user",
            "bool",
            "Same variant for a user every time",
            "On (default): a returning user gets the same variant. Off: drawn each time.",
            schema={"type": "boolean"},
        ),
        DESCRIPTION_FIELD,
    )
    target_fields = ()

    def targets(self, step: dict) -> list[tuple[str, Any]]:
        variants = step.get("variants")
        if not isinstance(variants, list):
            return []
        return [
            (f"variant {v.get('name', index)}", v["next"])
            for index, v in enumerate(variants, start=1)
            if isinstance(v, dict) and v.get("next") is not None
        ]

    def check(self, checker: Checker) -> None:
        variants = checker.step.get("variants")
        if not isinstance(variants, list) or not 2 <= len(variants) <= MAX_VARIANTS:
            checker.add(f"'variants' must be a list of 2 to {MAX_VARIANTS} variants")
            return
        names = set()
        for index, variant in enumerate(variants, start=1):
            if not isinstance(variant, dict):
                checker.add(f"variant {index} must be an object")
                continue
            name = variant.get("name")
            if not isinstance(name, str) or not name or len(name) > NAME_LIMIT:
                checker.add(f"variant {index}: 'name' is a text of 1-{NAME_LIMIT} characters")
            elif name in names:
                checker.add(f"variant {index}: the name '{name}' is used twice")
            names.add(name)
            if not _weight_ok(variant.get("weight")):
                checker.add(f"variant {index}: 'weight' is a number above 0, e.g. 50")
            if not variant.get("next"):
                checker.add(f"variant {index} has no 'next' step")

    def run(self, rt: StepRuntime) -> Outcome:
        variants = rt.step["variants"]
        if rt.step.get("per_user", True):
            point = user_point(rt.execution.user_id, rt.execution.workflow_id, rt.step_id)
        else:
            point = random.random()  # an A/B split, not a secret
        chosen = variant_pick(variants, point)
        rt.output["variant"] = chosen["name"]
        return Goto(chosen["next"])
