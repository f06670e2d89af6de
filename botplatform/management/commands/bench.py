"""manage.py bench: simulated users through the whole message path (docs/performance.md).

The benchmark itself is a developer tool (``devtools/bench.py``); it is imported only
when the command runs, so the runtime never loads it and an image without
``devtools/`` still starts (the command then says so).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Benchmark the whole message path with simulated users of the demo loyalty bot: "
        "getUpdates from a Bot API double over loopback HTTP, recording, rate limit, "
        "engine, ledger and replies. Uses the configured PostgreSQL and Redis: point "
        "DATABASE_URL and REDIS_URL at a database and Redis db of its own."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--users", type=int, default=2000, help="Simulated users (default 2000)."
        )
        parser.add_argument(
            "--messages",
            type=int,
            default=5,
            help="Measured messages per user, after one unmeasured /start (default 5).",
        )
        parser.add_argument(
            "--bots",
            type=int,
            default=200,
            help="Bots to spread the users over; Telegram allows ~30 sends/s per bot "
            "and the project's own limit is 10/s (default 200).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=2,
            help="Worker processes, each with its own double and its share of the bots "
            "(default 2: one per core here).",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=2,
            help="Driver threads per worker process (default 2).",
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=0.0,
            help="Offer this many messages per second in total (0: as fast as possible).",
        )
        parser.add_argument(
            "--no-cache",
            action="store_true",
            help="'Before Redis': a dummy cache backend and no in-process caches.",
        )
        parser.add_argument(
            "--no-batch",
            action="store_true",
            help="Handle every update on its own (update_run), as the webhook does, instead "
            "of one transaction per getUpdates batch as runbot does.",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options) -> None:
        for name in ("users", "messages", "bots", "concurrency", "threads"):
            if options[name] < 1:
                raise CommandError(f"--{name} must be at least 1.")
        if options["bots"] < options["concurrency"]:
            raise CommandError("--bots must be at least --concurrency.")
        try:
            from devtools.bench import BenchConfig, bench_run
        except ModuleNotFoundError as exc:
            if exc.name not in {"devtools", "devtools.bench"}:
                raise
            raise CommandError(
                "manage.py bench needs the developer tools (the devtools/ package of the "
                "source checkout); this installation does not ship them."
            ) from exc
        config = BenchConfig(
            users=options["users"],
            messages=options["messages"],
            bots=options["bots"],
            concurrency=options["concurrency"],
            threads=options["threads"],
            no_cache=options["no_cache"],
            rate=options["rate"],
            batch=not options["no_batch"],
        )
        report = bench_run(config)
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        rows = [
            ("messages", report["messages"]),
            ("seconds", report["seconds"]),
            ("messages per second", report["messages_per_second"]),
            ("  of them, one bot", report["one_bot"]["messages_per_second"]),
            ("latency p50 / p95 / p99 (ms)", "{p50_ms} / {p95_ms} / {p99_ms}".format(**report)),
            ("DB queries per message", report["db_queries_per_message"]),
            ("Redis round trips per message", report["redis_round_trips_per_message"]),
            ("Redis commands per message", report["redis_commands_per_message"]),
            ("cache hit rate", f"{report['cache_hit_rate']:.1%}"),
        ]
        rows += [
            (f"  {family}", f"{rate:.1%}")
            for family, rate in report["cache_hit_rate_by_family"].items()
        ]
        rows.append(("worker CPU per message (ms)", report["worker_cpu_ms_per_message"]))
        rows.append(("  of it, the Bot API double", report["double_cpu_ms_per_message"]))
        rows.append(("  of it, the platform", report["platform_cpu_ms_per_message"]))
        for name in ("postgres", "redis"):
            value = report[f"{name}_cpu_ms_per_message"]
            rows.append((f"{name} CPU per message (ms)", "n/a" if value is None else value))
        rows.append(("errors", report["errors"]))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.stdout.write(f"{label.ljust(width)}  {value}")
        for sample in report["error_samples"]:
            self.stderr.write(sample)
