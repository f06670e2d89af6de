"""A test handler (TELEGRAM_EVENT_HANDLER) for poison updates: "loop" loops in Python
for ever, "freeze" holds the GIL in C for minutes, "die" stands in for the process
dying; anything else is echoed (see handlers.echo_handle)."""

from __future__ import annotations

import re
import time
from contextlib import suppress

from django.core.cache import cache

from botplatform.models import Bot
from botplatform.telegram.updates import ParsedUpdate
from tests.botplatform.telegram.handlers import TestHandler, echo_handle


class Died(BaseException):
    """Stands in for the process dying mid-handler: nothing catches it, nothing is tidied."""


@TestHandler
def poison_handle(*, bot: Bot, parsed: ParsedUpdate) -> list:
    text = parsed.event.text
    if text in ("loop", "freeze"):
        cache.set(f"test:poison:{parsed.chat_id}", time.time(), 60)
    if text == "loop":
        spins = 0
        while True:  # a runaway in Python: only the budget stops it
            with suppress(Exception):  # what a careless step does; the stop is no Exception
                spins += 1
    if text == "freeze":
        # A catastrophic backtracking match in C: minutes without releasing the GIL.
        re.match(r"(a+)+$", "a" * 34 + "!")
    if text == "die":
        raise Died
    return echo_handle(bot=bot, parsed=parsed)
