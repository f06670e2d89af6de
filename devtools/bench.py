"""The whole-path benchmark behind ``manage.py bench``.

Simulated users talk to the demo loyalty bot through the same code as ``runbot``:
each worker thread plays Telegram for its bots with a Bot API double over HTTP on
loopback (``getUpdates`` hands out the users' messages and button presses), records
each batch (``updates_record``: one statement), then handles it as ``runbot`` does
(``updates_run_batch``: claim, incoming rate limits, users, session locks, engine,
ledger, outbox in one transaction per wave, then the replies sent back to the double
with the per-bot and per-chat send limits), or with ``--no-batch`` update by update
with ``update_run``, as the webhook does. Nothing is stubbed.

Measured per process and added up: the time each update waits for its replies from
the moment its batch came back from ``getUpdates``, minus the time spent inside Bot
API calls (measured around each call in ``sender._call``); SQL statements
(``connection.execute_wrapper``), Redis round trips (``send_packed_command``) and
commands (``execute_command`` plus pipeline lengths), cache lookups per key family
(``botplatform.metrics``), and CPU: the worker processes' own, the PostgreSQL server
processes serving them, and the Redis server's.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.test.utils import override_settings

from botplatform import metrics

BOT_ID_BASE = 990_000
CHAT_ID_BASE = 50_000_000


@dataclass
class BenchConfig:
    users: int = 200
    messages: int = 5  # measured messages per user, after one warm-up /start
    bots: int = 20
    concurrency: int = 2  # worker processes
    threads: int = 2  # driver threads per process
    no_cache: bool = False
    rate: float = 0.0  # total messages/s to offer (0: as fast as possible)
    batch: bool = True  # one transaction per getUpdates batch, as runbot does


@dataclass
class WorkerResult:
    messages: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    db_queries: int = 0
    redis_round_trips: int = 0
    redis_commands: int = 0
    cache: dict[str, list[int]] = field(default_factory=dict)  # family -> [hits, misses]
    started: float = 0.0
    finished: float = 0.0
    per_bot: dict[int, int] = field(default_factory=dict)
    worker_cpu: float = 0.0  # s, this process (drivers and the double), measured part
    double_cpu: float = 0.0  # s, of that the Bot API double's server threads
    postgres_cpu: float | None = 0.0  # s, the drivers' server processes, measured part
    redis_cpu: float | None = None  # s, the Redis server during the measured part


def bench_token(index: int) -> str:
    return f"{BOT_ID_BASE + index}:BENCH{index:06d}{'x' * 24}"


def bench_setup(*, bots: int) -> tuple[int, list[tuple[int, str]]]:
    """The demo project (loaddemo) with ``bots`` benchmark bots; returns their ids."""
    from botplatform.models import Bot, TelegramUpdate
    from workflows.management.commands.loaddemo import demo_load

    project, _bot = demo_load()
    result = []
    for index in range(bots):
        token = bench_token(index)
        bot, _ = Bot.objects.get_or_create(
            token=token,
            defaults={"project": project, "username": f"bench_{index}_bot"},
        )
        result.append((bot.pk, token))
    # The bench's own database: forget earlier runs' journal so update ids start afresh.
    TelegramUpdate.objects.filter(bot_id__in=[pk for pk, _ in result]).delete()
    return project.pk, result


# --- Counting ---------------------------------------------------------------------


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.round_trips = 0
        self.commands = 0


def _redis_counting(counters: _Counters) -> None:
    """Count Redis requests (a pipeline is one) and commands at the client, this process."""
    import redis.client
    import redis.connection

    send = redis.connection.AbstractConnection.send_packed_command
    execute = redis.client.Redis.execute_command
    pipeline_execute = redis.client.Pipeline.execute

    def counting_send(self, command, check_health=True):
        with counters.lock:
            counters.round_trips += 1
        return send(self, command, check_health=check_health)

    def counting_execute(self, *args, **options):
        with counters.lock:
            counters.commands += 1
        return execute(self, *args, **options)

    def counting_pipeline(self, *args, **kwargs):
        with counters.lock:
            counters.commands += len(self.command_stack)
        return pipeline_execute(self, *args, **kwargs)

    redis.connection.AbstractConnection.send_packed_command = counting_send
    redis.client.Redis.execute_command = counting_execute
    redis.client.Pipeline.execute = counting_pipeline


# --- The simulated users ---------------------------------------------------------------

MENU_CHOICES = ("Balance", "History", "Spend")


def _next_update(double, token: str, chat_id: int, step: int) -> None:
    """Queue this user's next move in the demo conversation (as Telegram would)."""
    if step == 0 or step % 10 == 0:
        double.command(token, chat_id, "/start")
        return
    message_id = double.last_message.get(chat_id)
    message = double.messages.get((chat_id, message_id)) if message_id else None
    buttons = [
        (button["text"], button.get("callback_data", ""))
        for row in ((message or {}).get("reply_markup") or {}).get("inline_keyboard", [])
        for button in row
        if button.get("callback_data")
    ]
    if not buttons:
        double.message(token, chat_id, "Menu")
        return
    wanted = MENU_CHOICES[step % len(MENU_CHOICES)]
    choice = next((data for text, data in buttons if wanted in text), None)
    if choice is None:
        choice = buttons[0][1]  # "Back to the menu" and the like
    double.callback(token, chat_id, choice, message_id=message_id)


def _drive(
    *,
    double,
    bots: list[tuple[int, str]],
    users_of: dict[int, list[int]],
    config: BenchConfig,
    result: WorkerResult,
    start_at: float,
    lock: threading.Lock,
    pace: float,
    warm: threading.Barrier,
) -> None:
    """One driver thread: rounds over its bots; per bot one getUpdates batch per round."""
    from botplatform.telegram.batch import updates_run_batch
    from botplatform.telegram.client import api
    from botplatform.telegram.dispatch import update_run
    from botplatform.telegram.journal import updates_record
    from botplatform.telegram.lanes import ConnectionCheck

    check = ConnectionCheck()

    queries = [0]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    offsets: dict[str, int] = {}
    latencies: list[float] = []
    errors: list[str] = []
    per_bot: dict[int, int] = {}
    measured = 0
    next_at = start_at
    backend = backend_cpu = postgres_cpu = None
    try:
        with connection.execute_wrapper(count):
            for step in range(config.messages + 1):
                warm_up = step == 0
                if step == 1:
                    warm.wait()
                    backend = _backend_pid()
                    backend_cpu = _process_cpu(backend) if backend else None
                    queries[0] = 0
                    next_at = time.perf_counter()
                for bot_id, token in bots:
                    for chat_id in users_of[bot_id]:
                        _next_update(double, token, chat_id, step)
                    updates = api().get_updates(token, offset=offsets.get(token), limit=100)
                    if updates:
                        offsets[token] = max(u["update_id"] for u in updates) + 1
                    rows = updates_record(bot_id=bot_id, updates=updates)
                    if pace and not warm_up:
                        next_at += pace * len(rows)
                        delay = next_at - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    check()  # as the runner's chat workers do (at most once a second)
                    # Latency counts from here (the batch is in): waiting behind earlier
                    # updates of the batch counts, Bot API time does not, on both paths.
                    received, network_before = time.perf_counter(), metrics.network_total()
                    leftovers = [row.pk for row in rows]
                    if config.batch:
                        try:
                            batch = updates_run_batch(bot_id=bot_id, rows=rows)
                        except Exception as exc:  # counted, and the run goes on
                            errors.append(f"{type(exc).__name__}: {exc}")
                            continue
                        leftovers = batch.leftovers
                        if not warm_up:
                            latencies += [x * 1000 for x in batch.latencies]
                            per_bot[bot_id] = per_bot.get(bot_id, 0) + batch.handled
                            measured += batch.handled
                    for pk in leftovers:
                        try:
                            outcome = update_run(update_pk=pk)
                        except Exception as exc:  # counted, and the run goes on
                            errors.append(f"{type(exc).__name__}: {exc}")
                            continue
                        if outcome != "done":
                            errors.append(f"update {pk}: {outcome}")
                        if not warm_up:
                            network = metrics.network_total() - network_before
                            waited = time.perf_counter() - received - network
                            latencies.append(waited * 1000)
                            per_bot[bot_id] = per_bot.get(bot_id, 0) + 1
                            measured += 1
                    if len(rows) != len(users_of[bot_id]):
                        errors.append(f"bot {bot_id}: {len(rows)} of {len(users_of[bot_id])}")
        backend_end = _process_cpu(backend) if backend else None
        if backend_cpu is not None and backend_end is not None and _backend_pid() == backend:
            postgres_cpu = backend_end - backend_cpu
    except Exception:
        errors.append(traceback.format_exc(limit=3))
        warm.abort()
    finally:
        close_old_connections()
        connection.close()
    with lock:
        result.messages += measured
        result.latencies_ms += latencies
        result.db_queries += queries[0]
        if postgres_cpu is None or result.postgres_cpu is None:
            result.postgres_cpu = None  # one thread could not tell: no figure at all
        else:
            result.postgres_cpu += postgres_cpu
        result.errors += len(errors)
        result.error_samples += errors[:3]
        for bot_id, n in per_bot.items():
            result.per_bot[bot_id] = result.per_bot.get(bot_id, 0) + n


def _worker(
    index: int,
    bots: list[tuple[int, str]],
    all_bots: list[tuple[int, str]],
    config: BenchConfig,
    barrier,
    out,
) -> None:
    """One worker process: its own double, ``config.threads`` drivers over its bots."""
    from devtools.telegram_double import TelegramDouble
    from workflows.engine.version_cache import definition_cache_resize

    result = WorkerResult()
    double = TelegramDouble().start()
    overrides: dict = {"TELEGRAM_API_URL": double.url}
    if config.no_cache:
        overrides["CACHES"] = {
            "default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
        }
        definition_cache_resize(0)  # no in-process copies of versions either
    try:
        with override_settings(**overrides):
            for _bot_id, token in bots:
                double.bot_add(token)
            users_of: dict[int, list[int]] = {bot_id: [] for bot_id, _ in bots}
            for user in range(config.users):
                bot_id = all_bots[user % len(all_bots)][0]
                if bot_id in users_of:
                    users_of[bot_id].append(CHAT_ID_BASE + user)
            counters = _Counters()
            _redis_counting(counters)
            threads = []
            lock = threading.Lock()
            groups = [g for g in (bots[i :: config.threads] for i in range(config.threads)) if g]
            pace = 0.0
            if config.rate:
                pace = config.concurrency * len(groups) / config.rate

            def warmed_up() -> None:
                """All of this process's drivers finished round 0: start counting."""
                counters.round_trips = counters.commands = 0
                metrics.totals_reset()
                barrier.wait(timeout=900)  # every process, so the clock starts together
                result.started = time.time()
                worker_cpu[0] = time.process_time()
                double.cpu_take()
                if index == 0 and redis_pid:  # one process measures the shared server
                    redis_cpu[0] = _process_cpu(redis_pid)

            redis_pid = _redis_pid() if index == 0 else None
            redis_cpu: list[float | None] = [None]
            worker_cpu = [0.0]
            warm = threading.Barrier(len(groups), action=warmed_up, timeout=900)
            gc.freeze()  # as runbot does once started (see Runner.run)
            start_at = time.perf_counter()
            for group in groups:
                thread = threading.Thread(
                    target=_drive,
                    kwargs={
                        "double": double,
                        "bots": group,
                        "users_of": users_of,
                        "config": config,
                        "result": result,
                        "start_at": start_at,
                        "lock": lock,
                        "pace": pace,
                        "warm": warm,
                    },
                )
                threads.append(thread)
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            result.finished = time.time()
            result.worker_cpu = time.process_time() - worker_cpu[0]
            result.double_cpu = double.cpu_take()
            if redis_cpu[0] is not None:
                redis_end = _process_cpu(redis_pid)
                result.redis_cpu = None if redis_end is None else redis_end - redis_cpu[0]
            result.redis_round_trips = counters.round_trips
            result.redis_commands = counters.commands
            for sample, value in metrics.totals().items():
                if sample.startswith("bp_cache_requests_total"):
                    family = sample.split('family="', 1)[1].split('"', 1)[0]
                    hit = 'result="hit"' in sample
                    pair = result.cache.setdefault(family, [0, 0])
                    pair[0 if hit else 1] += int(value)
    except Exception:
        result.errors += 1
        result.error_samples.append(traceback.format_exc(limit=5))
    finally:
        double.stop()
        connections.close_all()
    out.put(result)


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a local process, from Linux ``/proc``; None when
    it cannot be read (another machine, or not Linux)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_pid() -> int | None:
    """This thread's PostgreSQL server process, if the database is PostgreSQL."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _redis_pid() -> int | None:
    from botplatform.cache import redis_client

    client = redis_client()
    if client is None:
        return None
    try:
        return int(client.info("server")["process_id"])
    except Exception:
        return None


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    position = min(round(fraction * (len(ordered) - 1)), len(ordered) - 1)
    return ordered[position]


def bench_run(config: BenchConfig) -> dict:
    """Run the benchmark; returns the report (see ``manage.py bench --help``)."""
    project_id, bots = bench_setup(bots=config.bots)
    if not config.no_cache:
        from django.core.cache import cache

        cache.clear()  # a benchmark database of its own: start cold, warm up in round 0
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(config.concurrency)
    out = context.Queue()
    connections.close_all()  # children must not share the parent's sockets
    processes = [
        context.Process(
            target=_worker,
            args=(index, bots[index :: config.concurrency], bots, config, barrier, out),
        )
        for index in range(config.concurrency)
    ]
    for process in processes:
        process.start()
    results: list[WorkerResult] = []
    while len(results) < len(processes):
        try:
            results.append(out.get(timeout=5))
        except queue.Empty:
            if all(p.exitcode is not None for p in processes) and out.empty():
                break  # a worker died without reporting (counted as an error below)
    missing = len(processes) - len(results)
    if missing:
        results.append(WorkerResult(errors=missing, error_samples=["a worker process died"]))
    for process in processes:
        process.join()
    report = _report(config=config, project_id=project_id, bots=bots, results=results)
    # CPU per measured message of the worker processes (platform code, HTTP client and
    # the in-process Bot API double), from the end of the warm-up to the end.
    per_message = max(report["messages"], 1)
    worker = sum(r.worker_cpu for r in results)
    double = sum(r.double_cpu for r in results)
    report["worker_cpu_ms_per_message"] = round(1000 * worker / per_message, 2)
    # Of it, Telegram's side (the double's threads), and what is left: the platform.
    report["double_cpu_ms_per_message"] = round(1000 * double / per_message, 2)
    report["platform_cpu_ms_per_message"] = round(1000 * (worker - double) / per_message, 2)
    # The PostgreSQL server processes serving the drivers' connections, measured; and
    # the Redis server over the measured time (if local; other clients count too).
    postgres = [r.postgres_cpu for r in results]
    report["postgres_cpu_ms_per_message"] = (
        round(1000 * sum(postgres) / per_message, 2) if None not in postgres else None
    )
    redis_cpu = [r.redis_cpu for r in results if r.redis_cpu is not None]
    report["redis_cpu_ms_per_message"] = (
        round(1000 * sum(redis_cpu) / per_message, 2) if redis_cpu else None
    )
    return report


def _report(*, config: BenchConfig, project_id: int, bots, results: list[WorkerResult]) -> dict:
    messages = sum(r.messages for r in results)
    started = min((r.started for r in results if r.started), default=0.0)
    finished = max((r.finished for r in results), default=0.0)
    seconds = max(finished - started, 1e-9)
    latencies = [x for r in results for x in r.latencies_ms]
    cache: dict[str, list[int]] = {}
    for r in results:
        for family, (hits, misses) in r.cache.items():
            pair = cache.setdefault(family, [0, 0])
            pair[0] += hits
            pair[1] += misses
    hits = sum(h for h, _ in cache.values())
    lookups = sum(h + m for h, m in cache.values())
    per_bot: dict[int, int] = {}
    for r in results:
        for bot_id, n in r.per_bot.items():
            per_bot[bot_id] = per_bot.get(bot_id, 0) + n
    one_bot_id = bots[0][0] if bots else None
    one_bot = per_bot.get(one_bot_id, 0)
    per_message = max(messages, 1)
    return {
        "messages": messages,
        "seconds": round(seconds, 3),
        "messages_per_second": round(messages / seconds, 1),
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p95_ms": round(_percentile(latencies, 0.95), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "db_queries_per_message": round(sum(r.db_queries for r in results) / per_message, 2),
        "redis_round_trips_per_message": round(
            sum(r.redis_round_trips for r in results) / per_message, 2
        ),
        "redis_commands_per_message": round(
            sum(r.redis_commands for r in results) / per_message, 2
        ),
        "cache_hit_rate": round(hits / lookups, 4) if lookups else 0.0,
        "cache_hit_rate_by_family": {
            family: round(h / (h + m), 4) if h + m else 0.0
            for family, (h, m) in sorted(cache.items())
        },
        "errors": sum(r.errors for r in results),
        "error_samples": [s for r in results for s in r.error_samples][:5],
        "one_bot": {
            "bot_id": one_bot_id,
            "messages": one_bot,
            "messages_per_second": round(one_bot / seconds, 1),
        },
        "config": {
            "users": config.users,
            "messages_per_user": config.messages,
            "bots": config.bots,
            "concurrency": config.concurrency,
            "threads_per_process": config.threads,
            "cache": not config.no_cache,
            "rate": config.rate,
            "batch": config.batch,
            "project_id": project_id,
            "database": settings.DATABASES["default"].get("NAME"),
        },
    }
