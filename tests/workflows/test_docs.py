"""The examples in docs/workflows.md are valid: the format document does not lie."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from workflows.engine.steps import STEP_TYPES
from workflows.engine.steps.base import Checker
from workflows.engine.validation import workflow_validate

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "workflows.md").read_text()
SCHEMA = json.loads((ROOT / "docs" / "workflow.schema.json").read_text())
BLOCKS = re.findall(r"```json\n(.*?)```", DOC, re.DOTALL)


def test_the_complete_example_validates_and_publishes():
    example = json.loads(BLOCKS[0])
    jsonschema.validate(example, SCHEMA)
    workflow_validate(example["definition"], triggers=example["triggers"])


def test_every_step_example_is_valid():
    seen = set()
    for block in BLOCKS[1:]:
        block = block.strip()
        if block.startswith('"triggers"'):
            triggers = json.loads("{" + block + "}")["triggers"]
            jsonschema.validate(
                {
                    "slug": "x",
                    "triggers": triggers,
                    "definition": {"start": "a", "steps": {"a": {"type": "end"}}},
                },
                SCHEMA,
            )
            continue
        steps = json.loads("{" + block.rstrip(",") + "}")
        for step_id, step in steps.items():
            file = {"slug": "x", "definition": {"start": step_id, "steps": {step_id: step}}}
            jsonschema.validate(file, SCHEMA)
            checker = Checker(step_id, step)
            STEP_TYPES[step["type"]].check(checker)
            assert checker.problems == [], (step_id, checker.problems)
            seen.add(step["type"])
    assert seen == set(STEP_TYPES)
