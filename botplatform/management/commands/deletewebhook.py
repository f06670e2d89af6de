"""Remove the webhook of a bot (it goes back to long polling)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from botplatform.management.commands.runbot import bots_resolve
from botplatform.models import Bot


class Command(BaseCommand):
    help = "Tell Telegram to stop calling the webhook of a bot; the bot switches to polling."

    def add_arguments(self, parser) -> None:
        parser.add_argument("bot", help="Bot id or username.")
        parser.add_argument(
            "--drop-pending", action="store_true", help="Also drop updates not delivered yet."
        )

    def handle(self, *args, bot: str, drop_pending: bool, **options) -> None:
        from botplatform.telegram.sender import TelegramCallError
        from botplatform.telegram.webhooks import webhook_delete

        instance = Bot.objects.get(pk=bots_resolve([bot])[0])
        try:
            webhook_delete(bot=instance, drop_pending=drop_pending)
        except TelegramCallError as exc:
            raise CommandError(f"Telegram refused: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Webhook of {instance} deleted"))
