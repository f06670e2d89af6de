"""Micro-benchmark of one Bot API call, both sides: CPU per call and Redis round trips.

Starts the Bot API double in this process (as ``manage.py bench`` does), adds a bot,
then times N ``actions_send`` calls of a SendMessage with an inline keyboard and N
of an AnswerCallback. CPU is ``time.process_time`` (the whole process: the client,
the double's handler thread, Redis client, metrics). Run from the project root:

    DJANGO_SETTINGS_MODULE=botplatform.settings DATABASE_URL=... REDIS_URL=... \
        SECRET_KEY=... python scripts/bench_sends.py [-n 3000] [--profile out.prof]

Figures of 26 Nov (2 shared cores, 3 alternating runs each, CPU per call):
sendMessage with a 2x2 inline keyboard 1117-1158 us before, 720-783 us after the form
body / direct preparation in ``client._request_send`` and the double's lean handler;
answerCallbackQuery 568-636 us before, 389-425 us after. One Redis round trip per
message send (the send-slot script), none for a callback answer.

Lean transport (26 Nov, same machine, 3 alternating runs each of -n 3000, CPU per
call; the machine was busier than for the figures above): plain calls now go over one
keep-alive ``http.client`` connection per thread instead of requests + urllib3
(``client._lean_send``). sendMessage with a 2x2 inline keyboard 836-1015 us before,
458-565 us after; answerCallbackQuery 472-540 us before, 199-297 us after (the
in-process double's share of each figure is unchanged). Wall time per call fell
alike (931-1134 -> 559-701 us; 480-535 -> 211-297 us).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--profile", help="write a cProfile of the measured loops here")
    options = parser.parse_args()

    import django

    django.setup()
    import redis
    from django.conf import settings

    from botplatform.conversation import AnswerCallback, Button, SendMessage
    from botplatform.models import Bot, Project
    from botplatform.telegram.sender import actions_send
    from devtools.telegram_double import TelegramDouble

    round_trips = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(self, command, check_health=True):
        round_trips[0] += 1
        return send(self, command, check_health=check_health)

    redis.connection.AbstractConnection.send_packed_command = counting_send

    double = TelegramDouble().start()
    settings.TELEGRAM_API_URL = double.url
    project, _ = Project.objects.get_or_create(
        slug="bench-sends", defaults={"name": "Bench sends", "bot_send_rate_per_second": 100000}
    )
    Project.objects.filter(pk=project.pk).update(bot_send_rate_per_second=100000)
    token = "777001:BENCHSENDS" + "x" * 30
    bot, _ = Bot.objects.get_or_create(
        token=token, defaults={"project": project, "username": "bench_sends_bot"}
    )
    bot = Bot.objects.select_related("project").get(pk=bot.pk)
    double.bot_add(token, bot.username)

    buttons = (
        (Button("Balance", "balance"), Button("History", "history")),
        (Button("Spend", "spend"), Button("Site", url="https://example.com")),
    )
    chats = 2000  # the per-chat limit is 3 per 3 s: spread the sends over many chats

    def send_messages(count: int, base: int) -> None:
        for i in range(count):
            chat_id = 60_000_000 + (base + i) % chats
            action = SendMessage(
                chat_id=chat_id, text=f"<b>Your balance</b>: {i} points", buttons=buttons
            )
            actions_send(bot=bot, chat_id=chat_id, actions=[action])

    def answer_callbacks(count: int) -> None:
        for i in range(count):
            actions_send(bot=bot, chat_id=1, actions=[AnswerCallback(f"cq{i}", text="ok")])

    # Warm-up (connections, script load, imports).
    send_messages(50, 0)
    answer_callbacks(50)
    time.sleep(3.1)  # let the warm-up's per-chat windows pass

    profiler = None
    if options.profile:
        import cProfile

        profiler = cProfile.Profile()

    results = {}
    for name, run in (
        ("sendMessage+keyboard", lambda: send_messages(options.n, 50)),
        ("answerCallbackQuery", lambda: answer_callbacks(options.n)),
    ):
        double.calls.clear()
        round_trips[0] = 0
        if profiler:
            profiler.enable()
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profiler:
            profiler.disable()
        ok = sum(1 for call in double.calls if call.status == 200)
        assert ok == options.n, (name, ok, len(double.calls))
        results[name] = (cpu, wall, round_trips[0])
        if name.startswith("send"):
            time.sleep(3.1)

    double.stop()
    for name, (cpu, wall, trips) in results.items():
        print(
            f"{name:22s} CPU {cpu / options.n * 1e6:7.0f} µs/call   "
            f"wall {wall / options.n * 1e6:7.0f} µs/call   "
            f"Redis round trips/call {trips / options.n:.2f}"
        )
    if profiler:
        profiler.dump_stats(options.profile)


if __name__ == "__main__":
    main()
