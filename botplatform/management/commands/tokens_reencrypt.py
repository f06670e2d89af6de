"""manage.py tokens_reencrypt: every bot token under the newest BOT_TOKEN_KEYS key."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from botplatform.bots import tokens_reencrypt
from botplatform.encryption import TokenKeyError


class Command(BaseCommand):
    help = (
        "Re-encrypt every bot token with the first key in BOT_TOKEN_KEYS (key rotation: "
        "put the new key first, keep the old one after it, run this, then drop the old key)."
    )

    def handle(self, *args, **options) -> None:
        try:
            count = tokens_reencrypt()
        except TokenKeyError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} bot token(s)."))
