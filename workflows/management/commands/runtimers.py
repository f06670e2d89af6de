"""manage.py runtimers: fire wait timeouts and delays within about a second.

The bot runner (``manage.py runbot``) already does this; run this where no runner
does (webhook-only setups). Any number may run: each timer fires once.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from botplatform.periodic import TimerLoop


class Command(BaseCommand):
    help = (
        "Poll the database for due wait timeouts and delays and fire them "
        "(every WORKFLOW_TIMER_POLL_INTERVAL seconds). SIGTERM or Ctrl-C stop it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--interval", type=float, default=None, help="Seconds between polls (default 0.5)."
        )

    def handle(self, *args, interval: float | None, **options) -> None:
        loop = TimerLoop(interval=interval)
        if not loop.enabled:
            raise CommandError("The poll interval is 0: set WORKFLOW_TIMER_POLL_INTERVAL > 0.")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(f"Firing timers every {loop.interval:g} s; Ctrl-C stops.")
        loop.run(stop)
