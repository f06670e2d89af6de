"""The Bot API test double lives in ``devtools.telegram_double`` (the benchmark and the
scripts use it too). This re-export keeps ``from tests.telegram_double import ...``
working for tests written before the move; new code imports from ``devtools``."""

from __future__ import annotations

from devtools.telegram_double import BotState, Call, Fault, TelegramDouble

__all__ = ["BotState", "Call", "Fault", "TelegramDouble"]
