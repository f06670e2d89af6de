"""Long-poll Telegram for one bot, several, or every active polling bot (--all)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from botplatform.models import Bot


def bots_resolve(names: list[str]) -> list[int]:
    """Bot ids from ids or usernames (with or without @); unknown ones are an error."""
    ids: list[int] = []
    for name in names:
        value = name.lstrip("@")
        bot = (
            Bot.objects.filter(pk=int(value)).first()
            if value.isascii() and value.isdigit()
            else Bot.objects.filter(username__iexact=value).first()
        )
        if bot is None:
            raise CommandError(f"No bot with id or username {name!r}.")
        if not bot.is_active:
            raise CommandError(f"Bot {bot} is deactivated; activate it in the admin first.")
        ids.append(bot.pk)
    return ids


class Command(BaseCommand):
    help = (
        "Run the long-polling bot runner. Give bot ids or usernames, or --all for every "
        "active bot in polling mode (shared with other runners through Redis leases). "
        "SIGTERM or Ctrl-C finish in-flight updates, then exit. A runner frozen for "
        "TELEGRAM_FREEZE_EXIT seconds exits with its threads' tracebacks on stderr, for "
        "its supervisor (docker compose's restart policy, systemd) to start it again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("bots", nargs="*", help="Bot ids or usernames.")
        parser.add_argument(
            "--all", action="store_true", help="Poll every active bot in polling mode."
        )

    def handle(self, *args, bots: list[str], all: bool, **options) -> None:
        from botplatform.telegram.polling import Runner

        if all == bool(bots):
            raise CommandError("Give bot ids or usernames, or --all (not both).")
        runner = Runner(bot_ids=None if all else bots_resolve(bots))
        runner.install_signal_handlers()
        code = runner.run()
        if code:
            sys.exit(code)
