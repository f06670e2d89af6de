"""manage.py rollup [--rebuild] [--since YYYY-MM-DD]: the programme figures now."""

from __future__ import annotations

import time
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from analytics.rollups import rollup_rebuild, rollup_run


class Command(BaseCommand):
    help = (
        "Recompute the daily programme figures: today, yesterday and days with late data "
        "(what the periodic task does), or every day with --rebuild."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rebuild", action="store_true", help="Recompute every day.")
        parser.add_argument("--since", help="With --rebuild: start at this day (YYYY-MM-DD).")

    def handle(self, *args, rebuild: bool, since: str | None, **options) -> None:
        started = time.perf_counter()
        if since and not rebuild:
            raise CommandError("--since goes with --rebuild.")
        if rebuild:
            try:
                first = date.fromisoformat(since) if since else None
            except ValueError:
                raise CommandError("--since must be a day like 2026-01-31.") from None
            days = rollup_rebuild(since=first)
        else:
            days = rollup_run()["days"]
        self.stdout.write(f"Recomputed {days} day(s) in {time.perf_counter() - started:.1f} s.")
