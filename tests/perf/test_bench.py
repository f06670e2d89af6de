"""manage.py bench runs a small load end to end (no timing is asserted)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from botplatform.models import TelegramUpdate
from users.models import BonusTransaction

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = {
    "messages",
    "seconds",
    "messages_per_second",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "db_queries_per_message",
    "redis_round_trips_per_message",
    "redis_commands_per_message",
    "cache_hit_rate",
    "cache_hit_rate_by_family",
    "errors",
    "one_bot",
    "worker_cpu_ms_per_message",
    "postgres_cpu_ms_per_message",
    "redis_cpu_ms_per_message",
}


def _bench(*args: str) -> dict:
    out = StringIO()
    call_command("bench", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_bench_drives_the_demo_through_the_whole_path(settings):
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    report = _bench(
        "--users", "6", "--messages", "3", "--bots", "2", "--concurrency", "2", "--threads", "1"
    )
    assert set(report) >= FIELDS
    assert report["errors"] == 0, report["error_samples"]
    assert report["messages"] == 18
    assert report["messages_per_second"] > 0
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["db_queries_per_message"] > 0
    assert report["redis_round_trips_per_message"] > 0
    assert report["worker_cpu_ms_per_message"] > 0
    # Read from /proc in clock ticks (10 ms): a run this small may round to zero.
    assert report["postgres_cpu_ms_per_message"] >= 0
    assert report["config"]["batch"] is True
    assert set(report["cache_hit_rate_by_family"]) >= {"user_state", "workflow_waiting"}
    assert 0 < report["cache_hit_rate"] <= 1
    assert report["one_bot"]["messages"] == 9
    # Really processed: every update journaled and done, the welcome bonus paid.
    rows = TelegramUpdate.objects.filter(bot__username__startswith="bench_")
    assert rows.count() == 6 * 4
    assert set(rows.values_list("status", flat=True)) == {"done"}
    assert BonusTransaction.objects.filter(kind="earn").count() == 6


def test_bench_without_cache_still_works_and_has_no_hits(settings):
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    report = _bench(
        "--users", "2", "--messages", "2", "--bots", "1", "--concurrency", "1", "--no-cache"
    )
    assert report["errors"] == 0, report["error_samples"]
    assert report["messages"] == 4
    assert report["cache_hit_rate"] == 0
    assert report["redis_round_trips_per_message"] == 0


def test_bench_update_by_update_gives_the_same_outcome(settings):
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    report = _bench(
        "--users", "4", "--messages", "2", "--bots", "2", "--concurrency", "1", "--no-batch"
    )
    assert report["errors"] == 0, report["error_samples"]
    assert report["messages"] == 8
    assert report["config"]["batch"] is False
    rows = TelegramUpdate.objects.filter(bot__username__startswith="bench_")
    assert rows.count() == 4 * 3
    assert set(rows.values_list("status", flat=True)) == {"done"}
    assert set(rows.values_list("attempts", flat=True)) == {1}


def test_bench_rejects_nonsense_options():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--users"):
        call_command("bench", "--users", "0")
