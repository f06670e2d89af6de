"""Register the webhook of a bot with Telegram."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from botplatform.management.commands.runbot import bots_resolve
from botplatform.models import Bot


class Command(BaseCommand):
    help = (
        "Tell Telegram to deliver a bot's updates to https://<base-url>/telegram/webhook/<id>/ "
        "with the bot's secret header; the bot switches to webhook mode."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("bot", help="Bot id or username.")
        parser.add_argument("--base-url", required=True, help="Public URL of this server.")

    def handle(self, *args, bot: str, base_url: str, **options) -> None:
        from botplatform.telegram.sender import TelegramCallError
        from botplatform.telegram.webhooks import webhook_set

        if not base_url.startswith(("https://", "http://")):
            raise CommandError("--base-url must start with https:// (Telegram requires HTTPS).")
        instance = Bot.objects.get(pk=bots_resolve([bot])[0])
        try:
            url = webhook_set(bot=instance, base_url=base_url)
        except TelegramCallError as exc:
            raise CommandError(f"Telegram refused the webhook: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Webhook of {instance} set to {url}"))
