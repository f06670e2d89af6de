"""manage.py loaddemo [--token TOKEN]: the demo loyalty project, idempotently."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from botplatform.bots import TokenRefused, bot_identity_fetch
from botplatform.models import BOT_TOKEN_VALIDATOR, Bot, Project
from users.models_pos import EarnRule
from workflows.engine.validation import WorkflowValidationError
from workflows.publishing import workflow_import

DEMO_FILE = Path(__file__).resolve().parents[2] / "fixtures" / "demo.json"


def demo_load(*, token: str | None = None) -> tuple[Project, Bot | None]:
    """Create or update the demo project and its workflows (and bot); safe to re-run.

    With a token, Telegram is asked who the bot is first (getMe, as the admin does):
    a wrong token is refused, and the username (the referral links need it) is filled.
    """
    identity = None
    if token:
        try:
            identity = bot_identity_fetch(token=token)
        except TokenRefused as exc:
            raise CommandError(str(exc)) from None
    demo = json.loads(DEMO_FILE.read_text(encoding="utf-8"))
    fields = dict(demo["project"])
    slug = fields.pop("slug")
    with transaction.atomic():
        project, _ = Project.objects.update_or_create(slug=slug, defaults=fields)
        for rule in demo.get("earn_rules", []):  # so a first API purchase earns something
            rule = dict(rule)
            EarnRule.objects.update_or_create(project=project, name=rule.pop("name"), defaults=rule)
        for data in demo["workflows"]:
            workflow_import(project_id=project.pk, data=data, publish=True)
        bot = None
        if token:
            bot = Bot.objects.filter(token=token).first()
            if bot is not None and bot.project_id != project.pk:
                raise CommandError(
                    f"The bot {bot.token_masked} is already connected to the project "
                    f"'{bot.project.slug}'."
                )
            if bot is None:
                bot = Bot.objects.create(project=project, token=token)
            if bot.username != identity.username:
                bot.username = identity.username
                bot.save(update_fields=["username", "updated_at"])
    return project, bot


class Command(BaseCommand):
    help = (
        "Create the demo loyalty project with its workflows (safe to run again). "
        "With --token, connect it to that Telegram bot; then run `manage.py runbot --all`."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--token", help="A bot token from @BotFather to connect.")

    def handle(self, *args, token: str | None = None, **options) -> None:
        if token:
            try:
                BOT_TOKEN_VALIDATOR(token)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
        try:
            project, bot = demo_load(token=token)
        except WorkflowValidationError as exc:  # pragma: no cover - the shipped file is tested
            raise CommandError(f"The demo workflows are invalid: {exc}") from None
        self.stdout.write(
            self.style.SUCCESS(f"Demo project '{project.slug}' is ready ({project.name}).")
        )
        if bot is not None:
            self.stdout.write(
                f"Connected bot @{bot.username} ({bot.token_masked}). "
                "Start it with: manage.py runbot --all"
            )
        else:
            self.stdout.write(
                "Connect a bot with: manage.py loaddemo --token <token from @BotFather>"
            )
