"""The step-type registry: one module per type, looked up by the ``type`` field."""

from __future__ import annotations

from workflows.engine.steps.base import StepType
from workflows.engine.steps.bonus import BonusStep
from workflows.engine.steps.call_workflow import CallWorkflowStep
from workflows.engine.steps.choose_language import ChooseLanguageStep
from workflows.engine.steps.condition import ConditionStep
from workflows.engine.steps.delay import DelayStep
from workflows.engine.steps.end import EndStep
from workflows.engine.steps.http_request import HttpRequestStep
from workflows.engine.steps.input import InputStep
from workflows.engine.steps.invoice import InvoiceStep
from workflows.engine.steps.message import MessageStep
from workflows.engine.steps.random_split import RandomSplitStep
from workflows.engine.steps.set_variable import SetVariableStep
from workflows.engine.steps.show_card import ShowCardStep
from workflows.engine.steps.start_workflow import StartWorkflowStep

STEP_TYPES: dict[str, StepType] = {
    handler.type: handler
    for handler in (
        MessageStep(),
        InputStep(),
        ConditionStep(),
        SetVariableStep(),
        BonusStep(),
        HttpRequestStep(),
        InvoiceStep(),
        DelayStep(),
        StartWorkflowStep(),
        ShowCardStep(),
        CallWorkflowStep(),
        RandomSplitStep(),
        ChooseLanguageStep(),
        EndStep(),
    )
}


def step_type_get(name: str) -> StepType | None:
    return STEP_TYPES.get(name)
