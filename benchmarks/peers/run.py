"""The peer benchmark: the real ``runbot --all`` against an aiogram 3 bot and a floor,
with identical traffic from one Bot API double, one contender at a time.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bp_peers_bench \\
        .venv/bin/python benchmarks/peers/run.py [--quick] [--reps 3] [--processes 1]

(``docs/performance.md`` has the set-up: the peers' virtualenv, the database.) Per
contender and repetition: fresh users; the warm-up (every user sends /start); the
**burst** phase (rounds in which every user makes the next move of the demo
conversation at once, each round ending when every move has its reply); the
**paced** phase (one move every 1/rate s, round-robin over the users, so with 100
bots nearly every poll returns one update: the light-load phase); and with
``--webhook`` the **webhook** phase (the runner's webhook view behind gunicorn
against aiogram's aiohttp webhook, same worker count, ``--webhook-clients``
concurrent posters). Redis is a private ``redis-server`` the driver starts (so
``INFO commandstats`` counts only the contender), PostgreSQL the database of
``DATABASE_URL`` (``pg_stat_database`` for transactions and tuple writes).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botplatform.settings")
PEER_PYTHON = HERE / ".venv" / "bin" / "python"
POLL_TIMEOUT = 10  # s, getUpdates long poll, every contender (aiogram's default)
PG_SETTLE = 10.5  # s: idle backends flush their statistics within 10 s (PostgreSQL 15)
REPLIES = ("sendMessage", "editMessageText")
RUNNERS = ("runner", "before")  # this checkout's runner; the one of --runner-root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def redis_start(workdir: str) -> tuple[subprocess.Popen, str]:
    """A private Redis: its command counters and CPU are the contender's alone."""
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return server, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def make_double():
    from devtools.bench import _next_update
    from devtools.telegram_double import TelegramDouble

    class PeerDouble(TelegramDouble):
        """The Bot API double that also times each move to its reply and checks that
        every move gets exactly one (a reply with no move waiting is counted extra)."""

        def __init__(self) -> None:
            super().__init__()
            self.done = threading.Condition()
            self.pending: dict[int, float] = {}
            self.latencies: list[float] = []
            self.extra = 0
            self.batches: list[int] = []

        def _dispatch(self, token, method, params):
            status, payload = super()._dispatch(token, method, params)
            if status == 200 and method in REPLIES:
                chat, now = int(params["chat_id"]), time.monotonic()
                with self.done:
                    started = self.pending.pop(chat, None)
                    if started is None:
                        self.extra += 1
                    else:
                        self.latencies.append(now - started)
                    self.done.notify_all()
            return status, payload

        def _updates_answer(self, updates):
            self.batches.append(len(updates))
            return super()._updates_answer(updates)

        def move(self, token: str, chat: int, step: int) -> dict:
            with self.done:
                self.pending[chat] = time.monotonic()
            with self._cond:  # a fast poller could take it (and trim the queue) at once
                _next_update(self, token, chat, step)
                return self.bots[token].queue[-1]

        def wait_replied(self, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            with self.done:
                while self.pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self.done.wait(min(left, 0.5))
            return True

        def take(self) -> tuple[list[float], int, list[int]]:
            with self.done:
                taken = self.latencies, self.extra, self.batches
                self.latencies, self.extra, self.batches = [], 0, []
            return taken

    return PeerDouble().start()


class Contender:
    """Start and stop one contender's processes for one run."""

    def __init__(self, kind: str, *, processes: int, tokens: list[str], env: dict, tmp: str):
        self.kind, self.processes, self.tokens, self.env, self.tmp = (
            kind,
            processes,
            tokens,
            env,
            tmp,
        )
        self.procs: list[subprocess.Popen] = []
        self.count_glob = f"{tmp}/counts.{kind}.*"
        self.log_path = f"{tmp}/{kind}.log"
        self.log = open(self.log_path, "ab")  # the contender's stderr; shown if it fails

    def runner_env(self) -> dict:
        env = {**self.env, "PEER_COUNT_FILE": f"{self.tmp}/counts.{self.kind}"}
        if self.kind == "runner":
            env.pop("PEER_RUNNER_ROOT", None)  # "before" runs the other checkout
        return env

    def start_polling(self, double) -> None:
        if self.kind in RUNNERS:
            env = self.runner_env()
            for _ in range(self.processes):
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(HERE / "counted.py"), "runbot", "--all"],
                        cwd=env.get("PEER_RUNNER_ROOT") or ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=self.log,
                    )
                )
        else:
            script = "refbot.py" if self.kind == "aiogram" else "floor.py"
            for n in range(self.processes):
                tokens_file = f"{self.tmp}/tokens.{self.kind}.{n}"
                Path(tokens_file).write_text("\n".join(self.tokens[n :: self.processes]))
                self.procs.append(
                    subprocess.Popen(
                        [
                            str(PEER_PYTHON),
                            str(HERE / script),
                            "--tokens-file",
                            tokens_file,
                            "--api",
                            double.url,
                            "--database-url",
                            self.env["DATABASE_URL"],
                            "--redis-url",
                            self.env["REDIS_URL"],
                            "--count-file",
                            f"{self.tmp}/counts.{self.kind}.{n}",
                        ],
                        cwd=HERE,
                        env=self.env,
                        stdout=subprocess.DEVNULL,
                        stderr=self.log,
                    )
                )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # every bot polled at least once
            self.check()
            with double._cond:
                polled = {c.token for c in double.calls if c.method == "getUpdates"}
            if polled >= set(self.tokens):
                return
            time.sleep(0.2)
        self.fail("not every bot was polled within 90 s")

    def start_webhook(self, port: int, *, threads: int = 8) -> None:
        if self.kind in RUNNERS:
            env = self.runner_env()
            command = [
                str(Path(sys.executable).parent / "gunicorn"),
                "--pythonpath",
                str(HERE),
                "-w",
                str(self.processes),
                "-k",
                "gthread",
                "--threads",
                str(threads),
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "wsgi_counted:application",
            ]
            self.procs.append(
                subprocess.Popen(
                    command,
                    cwd=env.get("PEER_RUNNER_ROOT") or ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=self.log,
                )
            )
        else:
            tokens_file = f"{self.tmp}/tokens.{self.kind}.webhook"
            Path(tokens_file).write_text("\n".join(self.tokens))
            self.procs.append(
                subprocess.Popen(
                    [
                        str(PEER_PYTHON),
                        str(HERE / "refbot.py"),
                        "--tokens-file",
                        tokens_file,
                        "--api",
                        self.env["TELEGRAM_API_URL"],
                        "--database-url",
                        self.env["DATABASE_URL"],
                        "--redis-url",
                        self.env["REDIS_URL"],
                        "--webhook-port",
                        str(port),
                        "--count-file",
                        f"{self.tmp}/counts.{self.kind}.w",
                    ],
                    cwd=HERE,
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=self.log,
                )
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        self.fail("the webhook did not listen within 60 s")

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                self.fail(f"a process exited with {proc.returncode}")

    def fail(self, why: str) -> None:
        self.log.flush()
        tail = Path(self.log_path).read_text(errors="replace")[-3000:]
        raise SystemExit(f"{self.kind}: {why}\n--- its stderr, last lines ---\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []


def spread(double, redis_client, tokens: list[str], *, since: float) -> dict:
    """How the bots were shared out: the lease holders in Redis (runner only), bots
    polled by two at once (the double's conflicts), and each bot's polls since
    ``since``: every bot polled, and the longest gap between two of its polls."""
    holders: dict[str, int] = {}
    for key in redis_client.scan_iter(match="telegram:lease:*", count=1000):
        holder = (redis_client.get(key) or b"").decode()
        holders[holder] = holders.get(holder, 0) + 1
    with double._cond:
        polls = [
            (c.token, c.at) for c in double.calls if c.method == "getUpdates" and c.at >= since
        ]
        conflicts = double.conflicts
    times: dict[str, list[float]] = {token: [] for token in tokens}
    for token, at in polls:
        times[token].append(at)
    gaps = [
        max((b - a for a, b in itertools.pairwise(ts)), default=0.0) for ts in times.values() if ts
    ]
    return {
        "bots_per_runner": sorted(holders.values(), reverse=True),
        "bots_polled_by_two_at_once": conflicts,
        "bots_never_polled": sum(1 for ts in times.values() if not ts),
        "polls_per_bot_min_max": [min(map(len, times.values())), max(map(len, times.values()))],
        "longest_gap_between_polls_s": round(max(gaps, default=0.0), 2),
    }


def profile_start(
    options, contender, kind: str, run_no: int, phase: str
) -> subprocess.Popen | None:
    """py-spy on the contender's first process for one phase (``--profile DIR``,
    ``--profile-phase``): GIL-holding samples as collapsed stacks, one file per
    contender run. Stopped by :func:`profile_stop` (py-spy writes its file on SIGINT)."""
    if not options.profile or phase != options.profile_phase:
        return None
    out = Path(options.profile) / f"{kind}-{run_no}-{phase}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            options.py_spy,
            "record",
            "--gil",
            "--nonblocking",
            "--subprocesses",  # gunicorn's worker, in the webhook phase
            "-f",
            "raw",
            "-r",
            "200",
            "-p",
            str(contender.procs[0].pid),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def profile_stop(profiler: subprocess.Popen | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


def phase_costs(meter, before, after, pg_before, pg_after, messages: int) -> dict:
    from measure import delta

    d = delta(before, after)
    per = 1000 / messages if messages else float("nan")
    return {
        "app_cpu_ms": d["app_cpu"] * per,
        "postgres_cpu_ms": d["postgres_cpu"] * per,
        "redis_cpu_ms": d["redis_cpu"] * per,
        "cpu_ms": (d["app_cpu"] + d["postgres_cpu"] + d["redis_cpu"]) * per,
        "statements": d["statements"] / messages,
        "transaction_statements": d["transaction_statements"] / messages,
        "pg_transactions": (pg_after["transactions"] - pg_before["transactions"]) / messages,
        "tuple_writes": (pg_after["tuple_writes"] - pg_before["tuple_writes"]) / messages,
        "redis_commands": d["redis_commands"] / messages,
        "redis_by_command": {k: round(v / messages, 2) for k, v in d["redis_by_command"].items()},
        "statements_by_text": {
            text: round(n / messages, 2)
            for text, n in sorted(d["texts"].items(), key=lambda item: -item[1])
            if n / messages >= 0.05
        },
    }


def run_once(kind: str, *, options, bots, env, tmp, run_no: int, pg, redis_client) -> dict:
    from measure import Meter, delta, percentile

    tokens = [token for _, token in bots]
    double = make_double()
    # Update ids unique over runs, as Telegram's are per bot: the runner's journal and
    # the reference bot's idempotency keys would take a repeated id for a redelivery.
    double._update_ids = itertools.count(run_no * 10_000_000)
    for token in tokens:
        double.bot_add(token)
    env = {**env, "TELEGRAM_API_URL": double.url}
    base = 60_000_000 + run_no * 100_000  # fresh users each run: the same work for all
    users = [(tokens[n % len(tokens)], base + n) for n in range(options.users)]
    steps = {chat: 0 for _, chat in users}
    redis_client.flushall()
    # What autovacuum does in production (this machine's PostgreSQL runs without it):
    # without statistics the planner costs the runner's user read-ahead on a table it
    # believes empty and scans the whole project's members; and dead rows pile up.
    pg.execute("VACUUM (ANALYZE)")
    contender = Contender(kind, processes=options.processes, tokens=tokens, env=env, tmp=tmp)
    meter = Meter(pg=pg, redis=redis_client, count_glob=contender.count_glob)
    result: dict = {"kind": kind}
    lost = extra = 0

    def burst_round() -> float:
        started = time.perf_counter()
        with double._cond:  # the round arrives at once
            for token, chat in users:
                double.move(token, chat, steps[chat])
                steps[chat] += 1
        if not double.wait_replied(120):
            contender.fail(f"{len(double.pending)} moves without a reply")
        return time.perf_counter() - started

    try:
        contender.start_polling(double)
        meter.app_pids = [p.pid for p in contender.procs]
        burst_round()  # warm-up: every user's /start (user, welcome bonus)
        time.sleep(1)
        double.take()
        idle0, idle_started = meter.snapshot(), time.perf_counter()
        time.sleep(PG_SETTLE)  # also what the contender costs with no traffic at all
        idle1, idle_seconds = meter.snapshot(), time.perf_counter() - idle_started
        d = delta(idle0, idle1)
        result["idle"] = {
            "app_cpu_ms_per_s": d["app_cpu"] * 1000 / idle_seconds,
            "postgres_cpu_ms_per_s": d["postgres_cpu"] * 1000 / idle_seconds,
            "redis_cpu_ms_per_s": d["redis_cpu"] * 1000 / idle_seconds,
            "statements_per_s": d["statements"] / idle_seconds,
            "redis_commands_per_s": d["redis_commands"] / idle_seconds,
        }
        pg0, snap0 = meter.pg_counters(), meter.snapshot()
        profiler = profile_start(options, contender, kind, run_no, "burst")
        seconds = sum(burst_round() for _ in range(options.rounds))
        profile_stop(profiler)
        time.sleep(0.5)  # the count files are rewritten 5 times a second
        snap1 = meter.snapshot()
        latencies, more, batches = double.take()
        extra += more
        time.sleep(PG_SETTLE)
        pg1 = meter.pg_counters()
        messages = options.rounds * len(users)
        result["burst"] = {
            "messages": messages,
            "messages_per_second": messages / seconds,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "updates_per_poll": statistics.mean(batches) if batches else 0,
            **phase_costs(meter, snap0, snap1, pg0, pg1, messages),
        }
        # Paced: one move every 1/rate s, round-robin (a user still waiting is skipped).
        snap0, pg0 = meter.snapshot(), pg1
        interval, count, n = 1 / options.rate, int(options.rate * options.paced_seconds), 0
        paced_since, skipped = time.monotonic(), 0
        profiler = profile_start(options, contender, kind, run_no, "paced")
        started = time.perf_counter()
        for k in range(count):
            delay = started + k * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for _ in range(len(users)):
                token, chat = users[n % len(users)]
                n += 1
                if chat not in double.pending:
                    double.move(token, chat, steps[chat])
                    steps[chat] += 1
                    break
            else:  # every user still waits for a reply: this tick offers nothing
                skipped += 1
        offered = time.perf_counter() - started
        count -= skipped
        profile_stop(profiler)
        result["spread"] = spread(double, redis_client, tokens, since=paced_since)
        if not double.wait_replied(60):
            lost += len(double.pending)
        time.sleep(0.5)
        snap1 = meter.snapshot()
        latencies, more, batches = double.take()
        extra += more
        time.sleep(PG_SETTLE)
        pg1 = meter.pg_counters()
        result["paced"] = {
            "messages": count,
            "offered_per_second": count / offered,
            "ticks_skipped_all_users_waiting": skipped,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "updates_per_poll": statistics.mean(batches) if batches else 0,
            **phase_costs(meter, snap0, snap1, pg0, pg1, count),
        }
    finally:
        contender.stop()
    if options.webhook and kind in (*RUNNERS, "aiogram"):
        result["webhook"] = webhook_phase(
            kind,
            options=options,
            users=users,
            steps=steps,
            double=double,
            env=env,
            tmp=tmp,
            bots=bots,
            pg=pg,
            redis_client=redis_client,
            run_no=run_no,
        )
        extra += result["webhook"].pop("extra")
        lost += result["webhook"].pop("lost")
    double.stop()
    result["lost"], result["doubled"] = lost, extra
    return result


def webhook_phase(
    kind, *, options, users, steps, double, env, tmp, bots, pg, redis_client, run_no
) -> dict:
    """Concurrent clients post the users' next moves to the webhook, as Telegram does;
    a move counts when its reply reached the double."""
    import http.client

    from measure import percentile

    port = free_port()
    contender = Contender(
        kind, processes=options.processes, tokens=[t for _, t in bots], env=env, tmp=tmp
    )
    bot_of = {token: bot_id for bot_id, token in bots}
    secret = "peer-bench-secret"
    contender.start_webhook(port, threads=options.webhook_threads)
    from measure import Meter

    meter = Meter(pg=pg, redis=redis_client, count_glob=contender.count_glob)
    meter.app_pids = [p.pid for p in contender.procs]
    queue = list(users)
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    deadline = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.perf_counter() < deadline[0]:
            with lock:
                if not queue:
                    return
                token, chat = queue.pop(0)
            with double.done:
                while chat in double.pending:
                    double.done.wait(0.5)
            with double._cond:
                update = double.move(token, chat, steps[chat])
                double.bots[token].queue.remove(update)
            steps[chat] += 1
            path = f"/telegram/webhook/{bot_of[token]}/" if kind in RUNNERS else f"/webhook/{token}"
            body = json.dumps(update)
            conn.request(
                "POST",
                path,
                body,
                {
                    "Content-Type": "application/json",
                    "X-Telegram-Bot-Api-Secret-Token": secret,
                    "Host": "localhost",
                },
            )
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                queue.append((token, chat))

    profiler = None
    try:
        for warm in (True, False):
            double.take()
            if not warm:
                time.sleep(PG_SETTLE)
                pg0, snap0 = meter.pg_counters(), meter.snapshot()
                profiler = profile_start(options, contender, kind, run_no, "webhook")
            deadline[0] = time.perf_counter() + (3 if warm else options.webhook_seconds)
            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(options.webhook_clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            double.wait_replied(60)
            seconds = time.perf_counter() - started
        profile_stop(profiler)
        time.sleep(0.5)
        snap1 = meter.snapshot()
        latencies, extra, _batches = double.take()
        time.sleep(PG_SETTLE)
        pg1 = meter.pg_counters()
    finally:
        contender.stop()
    return {
        "requests_per_second": len(latencies) / seconds,
        **phase_costs(meter, snap0, snap1, pg0, pg1, len(latencies)),
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "statuses": statuses,
        "lost": len(double.pending),
        "extra": extra,
    }


def median_of(results: list[dict], phase: str, key: str) -> float:
    values = [r[phase][key] for r in results if phase in r]
    return statistics.median(values) if values else float("nan")


def table(results: dict[str, list[dict]]) -> str:
    base = (
        median_of(results["runner"], "burst", "messages_per_second")
        if "runner" in results
        else None
    )
    lines = [
        "| | msg/s burst | CPU ms/msg burst (app + PG + Redis) | CPU ms/msg paced | reply p50 / p99 paced | "
        "SQL statements/msg paced (+ BEGIN/COMMIT/SAVEPOINT) | PG transactions / tuple writes per msg paced | "
        "Redis commands/msg paced (burst) | updates per poll paced | webhook req/s | lost / doubled |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "runner": "this runner (`runbot --all`)",
        "before": "this runner before (`--runner-root`)",
        "aiogram": "aiogram 3 + RedisStorage + asyncpg",
        "floor": "floor: asyncio, 1 Redis GET, 1 SQL, 1 send",
    }
    for kind, runs in results.items():

        def m(phase: str, key: str, runs: list[dict] = runs) -> float:
            return median_of(runs, phase, key)

        rate = m("burst", "messages_per_second")
        ratio = f" ({rate / base:.2f}×)" if base and kind != "runner" else ""
        burst_cpu = (
            f"{m('burst', 'cpu_ms'):.2f} ({m('burst', 'app_cpu_ms'):.2f} + "
            f"{m('burst', 'postgres_cpu_ms'):.2f} + {m('burst', 'redis_cpu_ms'):.2f})"
        )
        paced_cpu = (
            f"{m('paced', 'cpu_ms'):.2f} ({m('paced', 'app_cpu_ms'):.2f} + "
            f"{m('paced', 'postgres_cpu_ms'):.2f} + {m('paced', 'redis_cpu_ms'):.2f})"
        )
        webhook = m("webhook", "requests_per_second")
        lines.append(
            f"| {names[kind]} | {rate:.0f}{ratio} | {burst_cpu} | {paced_cpu} | "
            f"{m('paced', 'p50_ms'):.1f} / {m('paced', 'p99_ms'):.1f} ms | "
            f"{m('paced', 'statements'):.2f} (+{m('paced', 'transaction_statements'):.2f}) | "
            f"{m('paced', 'pg_transactions'):.2f} / {m('paced', 'tuple_writes'):.2f} | "
            f"{m('paced', 'redis_commands'):.2f} ({m('burst', 'redis_commands'):.2f}) | "
            f"{m('paced', 'updates_per_poll'):.2f} | "
            f"{'—' if webhook != webhook else f'{webhook:.0f}'} | "
            f"{sum(r['lost'] for r in runs)} / {sum(r['doubled'] for r in runs)} |"
        )
    if any("webhook" in r for runs in results.values() for r in runs):
        lines += [
            "",
            "| webhook (same workers) | req/s | reply p50 / p99 | CPU ms/req (app + PG + Redis) | "
            "SQL statements/req (+ BEGIN/COMMIT) | PG transactions / tuple writes per req | Redis commands/req |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, runs in results.items():
            if not any("webhook" in r for r in runs):
                continue

            def w(key: str, runs: list[dict] = runs) -> float:
                return median_of(runs, "webhook", key)

            lines.append(
                f"| {names[kind]} | {w('requests_per_second'):.0f} | "
                f"{w('p50_ms'):.1f} / {w('p99_ms'):.1f} ms | {w('cpu_ms'):.2f} ({w('app_cpu_ms'):.2f} + "
                f"{w('postgres_cpu_ms'):.2f} + {w('redis_cpu_ms'):.2f}) | {w('statements'):.2f} "
                f"(+{w('transaction_statements'):.2f}) | {w('pg_transactions'):.2f} / "
                f"{w('tuple_writes'):.2f} | {w('redis_commands'):.2f} |"
            )
    for kind, runs in results.items():
        idle = [r["idle"] for r in runs if "idle" in r]
        if idle:
            lines.append(
                f"\n{kind} with no traffic: "
                + ", ".join(
                    f"{key} {statistics.median(i[key] for i in idle):.2f}" for key in idle[0]
                )
            )
        if kind in RUNNERS:
            for r in runs:
                lines.append(
                    f"\n{kind} spread over its processes (paced phase): {json.dumps(r['spread'])}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bots", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="burst rounds (every user moves)")
    parser.add_argument("--rate", type=float, default=50, help="paced phase, messages/s")
    parser.add_argument("--paced-seconds", type=float, default=30)
    parser.add_argument("--reps", type=int, default=3, help="repetitions, alternating order")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--contenders", default="runner,aiogram,floor")
    parser.add_argument("--webhook", action="store_true", help="add the webhook phase")
    parser.add_argument("--webhook-seconds", type=float, default=15)
    parser.add_argument("--webhook-clients", type=int, default=16)
    parser.add_argument(
        "--webhook-threads", type=int, default=8, help="gunicorn gthread threads per worker"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition, 3 burst rounds, 12 s paced, 8 s webhook"
    )
    parser.add_argument("--json", default="", help="also write the raw results here")
    parser.add_argument(
        "--profile",
        default="",
        help="py-spy one phase (GIL samples, collapsed stacks) into this directory",
    )
    parser.add_argument(
        "--profile-phase",
        choices=["paced", "burst", "webhook"],
        default="paced",
        help="for --profile",
    )
    parser.add_argument("--keep", action="store_true", help="keep the contenders' logs")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable for --profile")
    parser.add_argument(
        "--runner-root",
        default="",
        help="run the runner of another checkout (e.g. `git archive` of an older commit)",
    )
    options = parser.parse_args()
    if options.quick:
        options.reps, options.rounds, options.paced_seconds = 1, 3, 12
        options.webhook_seconds = 8
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL database of the benchmark's own.")
    if not PEER_PYTHON.exists():
        raise SystemExit(
            f"No {PEER_PYTHON}: python3 -m venv benchmarks/peers/.venv && "
            "benchmarks/peers/.venv/bin/pip install -r benchmarks/peers/requirements.txt"
        )
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is needed (the benchmark runs a private one)")
    tmp = tempfile.mkdtemp(prefix="peers-")
    redis_server, redis_url = redis_start(tmp)
    os.environ["REDIS_URL"] = redis_url
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TELEGRAM_POLL_TIMEOUT": str(POLL_TIMEOUT),
        "TELEGRAM_DISCOVERY_INTERVAL": "2",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "peer-benchmark-" + "x" * 40),
        # The benchmark database's own token key (fixed: its bots outlive a run).
        "BOT_TOKEN_KEYS": os.environ.get(
            "BOT_TOKEN_KEYS", base64.urlsafe_b64encode(b"peer-benchmark-key-32-bytes-long").decode()
        ),
    }
    if options.runner_root:
        env["PEER_RUNNER_ROOT"] = str(Path(options.runner_root).resolve())
    # SIGTERM (or Ctrl-C) still stops the contender's processes and the private Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.update(
        {
            k: env[k]
            for k in ("ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "SECRET_KEY", "BOT_TOKEN_KEYS")
        }
    )
    try:
        import django
        import psycopg
        import redis

        django.setup()
        from django.core.management import call_command

        from botplatform.models import Bot
        from devtools import bench

        call_command("migrate", verbosity=0)
        _project, bots = bench.bench_setup(bots=options.bots)
        Bot.objects.filter(username__startswith="bench_").exclude(
            pk__in=[p for p, _ in bots]
        ).update(is_active=False)
        Bot.objects.filter(pk__in=[p for p, _ in bots]).update(
            is_active=True, status="ok", webhook_secret="peer-bench-secret"
        )
        from django.db import connection

        connection.close()
        pg = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
        redis_client = redis.Redis.from_url(redis_url)
        kinds = [k.strip() for k in options.contenders.split(",") if k.strip()]
        results: dict[str, list[dict]] = {kind: [] for kind in kinds}
        run_no = int(time.time()) % 100_000 * 10
        for rep in range(options.reps):
            order = kinds if rep % 2 == 0 else kinds[::-1]
            for kind in order:
                run_no += 1
                outcome = run_once(
                    kind,
                    options=options,
                    bots=bots,
                    env=env,
                    tmp=tmp,
                    run_no=run_no,
                    pg=pg,
                    redis_client=redis_client,
                )
                outcome["rep"] = rep
                results[kind].append(outcome)
                print(json.dumps(outcome, default=float), flush=True)
        print()
        print(
            f"{options.bots} bots, {options.users} users, {options.processes} process(es), "
            f"{options.reps} repetition(s) (medians), paced at {options.rate:g} msg/s, "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        print(table(results))
        if options.json:
            Path(options.json).write_text(json.dumps(results, indent=1, default=float))
    finally:
        redis_server.terminate()
        redis_server.wait(10)
        if options.keep:
            print(f"contenders' logs and counts kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
