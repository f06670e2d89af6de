"""Tenants (projects) and the Telegram bots connected to them."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThan

from botplatform.encryption import EncryptedTokenField, TokenDigestField, token_digest
from botplatform.languages import language_list, validate_language_code, validate_language_list

BOT_TOKEN_VALIDATOR = RegexValidator(
    r"^\d{3,}:[A-Za-z0-9_-]{20,}$",
    "This does not look like a bot token. Copy it from @BotFather: digits, a colon, "
    "then about 35 letters, digits, dashes or underscores.",
)


def default_levels() -> list[dict]:
    return [
        {"name": "Bronze", "threshold": 0},
        {"name": "Silver", "threshold": 1000},
        {"name": "Gold", "threshold": 5000},
    ]


def generate_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class Project(models.Model):
    """One loyalty or bonus programme: the unit of tenancy."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(
        max_length=64, unique=True, help_text="Short identifier used in URLs and commands."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="Membership",
        blank=True,
        related_name="projects",
        help_text="Staff accounts that work on this project in the admin, each with a role.",
    )
    is_active = models.BooleanField(default=True)

    # Rate limits
    user_rate_limit_per_minute = models.PositiveIntegerField(
        "incoming messages per user per minute",
        default=100,
        validators=[MinValueValidator(1)],
        help_text="A user who sends more than this in a minute is asked to wait.",
    )
    bot_send_rate_per_second = models.PositiveIntegerField(
        "outgoing messages per bot per second",
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(30)],
        help_text="Telegram allows about 30 a second per bot; stay below it.",
    )

    # Conversation defaults
    fallback_message = models.TextField(
        default="Sorry, something went wrong. Please try again in a moment.",
        help_text="Sent to the user when a workflow step fails, so they never get silence.",
    )
    rate_limited_message = models.TextField(
        default="Too many requests. Please wait a minute.",
        help_text="Sent once when a user exceeds the incoming rate limit.",
    )
    stale_button_message = models.CharField(
        max_length=200,
        default="This button is no longer active.",
        help_text=(
            "Shown in a small pop-up when someone presses a button of a conversation that has "
            "ended or moved on. Telegram shows at most 200 characters. Mention a command "
            "(such as /start) only if your bot has one."
        ),
    )

    # Languages (workflows/engine/texts.py resolves a step's per-language texts)
    languages = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_language_list],
        help_text=(
            "The languages your bot speaks, as codes separated by commas, e.g. “en, ru”. "
            "Texts in workflow steps may then have a version per language. Empty: only the "
            "default language."
        ),
    )
    default_language = models.CharField(
        max_length=16,
        default="en",
        validators=[validate_language_code],
        help_text=(
            "Used when a text has no version in the user's language, e.g. “en”. "
            "Users whose Telegram language is not one of yours get this one."
        ),
    )

    # Loyalty
    referral_reward = models.PositiveIntegerField(
        default=50, help_text="Bonuses the referrer earns once an invited user qualifies."
    )
    welcome_bonus = models.PositiveIntegerField(
        default=0, help_text="Bonuses a new user earns on their first /start (0 for none)."
    )
    bonus_expiry_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Earned bonuses expire after this many days. Leave empty to never expire.",
    )
    max_bonus_share_percent = models.PositiveSmallIntegerField(
        default=100,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="At most this share of a purchase may be paid with bonuses.",
    )
    levels = models.JSONField(
        default=default_levels,
        blank=True,
        help_text='Levels by lifetime earnings, e.g. [{"name": "Silver", "threshold": 1000}].',
    )

    # Redemptions at a till (the API's holds)
    hold_approval_required = models.BooleanField(
        "customers approve redemptions in Telegram",
        default=False,
        help_text="Before a till may spend a customer's bonuses, the customer presses Yes "
        "in their own chat with the bot.",
    )
    hold_minutes = models.PositiveIntegerField(
        "minutes a hold lasts",
        default=15,
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 60)],
        help_text="A hold not confirmed by then is released and the bonuses are free again.",
    )

    # HTTP request steps
    allow_private_http = models.BooleanField(
        "allow HTTP requests to private addresses",
        default=False,
        help_text="Let workflow HTTP steps call loopback and private-network addresses.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def language_list(self) -> list[str]:
        """The project's language codes, the default first."""
        return language_list(self.languages, self.default_language)


class BotQuerySet(models.QuerySet):
    def update(self, **kwargs):
        # A bulk token change must move its hash too, or token lookups would miss the bot.
        if "token" in kwargs and "token_hash" not in kwargs:
            token = kwargs["token"]
            if not isinstance(token, str):
                raise TypeError("Bot.token can only be bulk-updated to a plain string.")
            kwargs["token_hash"] = token_digest(token) if token else ""
        return super().update(**kwargs)


class Bot(models.Model):
    """A Telegram bot connected to a project.

    The token is needed to call the Bot API, so it is stored, encrypted
    (botplatform/encryption.py), and never shown in full again: the admin and
    ``__str__`` use :attr:`token_masked`. ``token=`` lookups compare ``token_hash``;
    no other lookup on it exists.
    """

    class Mode(models.TextChoices):
        POLLING = "polling", "Long polling (manage.py runbot)"
        WEBHOOK = "webhook", "Webhook (Telegram calls this server)"

    class Status(models.TextChoices):
        NEW = "new", "Not started yet"
        OK = "ok", "Working"
        UNAUTHORIZED = "unauthorized", "Token revoked or wrong (401)"
        ERROR = "error", "Error"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="bots")
    token = EncryptedTokenField(validators=[BOT_TOKEN_VALIDATOR], digest_field="token_hash")
    token_hash = TokenDigestField(source="token", unique=True)
    username = models.CharField(max_length=64, blank=True, help_text="Without the @.")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.POLLING)
    webhook_secret = models.CharField(
        max_length=128,
        default=generate_webhook_secret,
        help_text="Telegram sends this in the X-Telegram-Bot-Api-Secret-Token header.",
    )
    is_active = models.BooleanField(default=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.NEW, editable=False
    )
    status_message = models.CharField(max_length=500, blank=True, editable=False)
    status_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BotQuerySet.as_manager()

    class Meta:
        ordering = ["project", "username"]
        indexes = [models.Index(fields=["is_active", "mode"])]
        constraints = [
            models.CheckConstraint(
                condition=GreaterThan(Length("token"), 0), name="bot_token_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"@{self.username}" if self.username else f"bot {self.telegram_id}"

    def save(self, *args, update_fields=None, **kwargs) -> None:
        # Saving the token alone must refresh its hash in the same statement.
        if update_fields is not None and "token" in update_fields:
            update_fields = {*update_fields, "token_hash"}
        super().save(*args, update_fields=update_fields, **kwargs)

    @property
    def telegram_id(self) -> int | None:
        """The bot's own Telegram id: the digits before the token's colon."""
        head = self.token.split(":", 1)[0]
        return int(head) if head.isdigit() else None

    @property
    def token_masked(self) -> str:
        return mask_secret(self.token)

    @property
    def webhook_secret_masked(self) -> str:
        return mask_secret(self.webhook_secret)


def mask_secret(value: str, visible: int = 4) -> str:
    """Keep the bot id part of a token and the last few characters, nothing else."""
    if not value:
        return ""
    head, sep, tail = value.partition(":")
    if sep:
        return f"{head}:…{tail[-visible:]}" if len(tail) > visible * 2 else f"{head}:…"
    return f"…{value[-visible:]}" if len(value) > visible * 3 else "…"


class Membership(models.Model):
    """A staff account's role in one project: what it may see and change there.

    The role is the only thing that grants access for a non-superuser; what each role
    allows is decided in :mod:`botplatform.roles`.
    """

    class Role(models.TextChoices):
        OWNER = "owner", "Owner: everything, including members, bots and their tokens"
        EDITOR = "editor", "Editor: workflows, versions, broadcasts, the simulator"
        ANALYST = "analyst", "Analyst: reads everything, dashboards, exports"
        SUPPORT = "support", "Support: bot users and balance adjustments"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user__username"]
        verbose_name = "member"
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
            models.CheckConstraint(
                condition=Q(role__in=["owner", "editor", "analyst", "support"]),
                name="membership_role_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.role.title()}"


# --- Telegram --------------------------------------------------------------------


class TelegramUpdate(models.Model):
    """One update received from Telegram, recorded before it is acknowledged.

    The row is the durable hand-over between receiving (polling or webhook) and
    processing: the offset moves past an update only once its row exists, the unique
    (bot, update_id) deduplicates redeliveries, and the outgoing actions are stored
    with the status in the same transaction as the engine's effects (an outbox), so
    a crash at any point neither loses the update nor applies it twice.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Received, not handled yet"
        HANDLED = "handled", "Handled, replies being sent"
        DONE = "done", "Done"
        SKIPPED = "skipped", "Skipped (malformed or unsupported)"
        FAILED = "failed", "Failed"
        QUARANTINED = "quarantined", "Quarantined (never retried)"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="updates")
    update_id = models.BigIntegerField()
    chat_id = models.BigIntegerField(null=True, blank=True)
    payload = models.JSONField(help_text="The update exactly as Telegram sent it.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    actions = models.JSONField(
        default=list, blank=True, help_text="Replies decided while handling (the outbox)."
    )
    sent_count = models.PositiveIntegerField(
        default=0, help_text="How many of the replies have been delivered."
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set while a runner handles the update. Still set at the next claim: "
        "the runner stopped in the middle (crash, kill, freeze).",
    )
    stalls = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        help_text="How many times a runner stopped while handling this update.",
    )
    note = models.CharField(max_length=500, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    handled_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["bot", "update_id"]
        verbose_name = "Telegram update"
        constraints = [
            models.UniqueConstraint(fields=["bot", "update_id"], name="tgupdate_unique_bot_update"),
        ]
        indexes = [
            models.Index(
                fields=["bot", "update_id"],
                name="tgupdate_open_idx",
                condition=Q(status__in=["pending", "handled"]),
            ),
        ]

    def __str__(self) -> str:
        return f"update {self.update_id} of bot {self.bot_id}"


class DeferredSend(models.Model):
    """Replies Telegram made wait longer than a process may block (429 or 5xx).

    Written in the database before the hand-off task is queued and deleted in the
    transaction that sends it, and swept every minute: a dead broker or a killed
    worker delays these messages, never drops them.
    """

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="deferred_sends")
    chat_id = models.BigIntegerField()
    actions = models.JSONField(help_text="The actions still to send, in order.")
    due_at = models.DateTimeField(db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["due_at", "id"]
        verbose_name = "deferred send"

    def __str__(self) -> str:
        return f"{len(self.actions)} action(s) to chat {self.chat_id} of bot {self.bot_id}"


class MediaFile(models.Model):
    """A file uploaded in the admin for message steps (``stored:<id>`` in a step).

    The bytes live in Django's storage (local ``MEDIA_ROOT`` by default, any backend in
    production); the transport keeps Telegram's ``file_id`` of it per bot
    (``botplatform.cache.media_file_id_get``), so each bot uploads a file once.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="media_files")
    title = models.CharField(max_length=200, help_text="Shown to operators only.")
    kind = models.CharField(
        max_length=16,
        help_text="How Telegram shows it: photo, document, video, animation, audio, voice, "
        "sticker.",
    )
    file = models.FileField(upload_to="media/%Y/%m/")
    content_type = models.CharField(max_length=100, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.title} ({self.kind}, stored:{self.pk})"


class Heartbeat(models.Model):
    """When a background part (a Celery worker, the scheduler) last showed it works.

    One row per part, overwritten at most every few seconds per process
    (``botplatform.heartbeat``). In the database, not in Redis, so the embedded
    default (no Redis: the web and the bot runner share no memory) sees it too.
    """

    name = models.CharField(max_length=32, primary_key=True)
    at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "heartbeat"

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
