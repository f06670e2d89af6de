"""The Bot API test double now lives in ``botplatform.telegram.double`` (the benchmark
uses it too); this re-export keeps the tests' imports working."""

from __future__ import annotations

from botplatform.telegram.double import BotState, Call, Fault, TelegramDouble

__all__ = ["BotState", "Call", "Fault", "TelegramDouble"]
