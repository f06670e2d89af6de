"""End users of the bots, their variables, and the bonus ledger."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from botplatform.models import Project


def generate_referral_code() -> str:
    return secrets.token_urlsafe(6).replace("-", "x").replace("_", "y")


# Card codes: digits only (easy to type at a till, fits a QR code's numeric mode).
CARD_CODE_LENGTH = 12


def generate_card_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(CARD_CODE_LENGTH))


class BotUser(models.Model):
    """A customer of one project: a Telegram user (shared by all the project's bots), or
    a customer created at a till who has no Telegram id yet (``telegram_id`` empty) and
    is linked when they share the same phone in the bot."""

    class Source(models.TextChoices):
        TELEGRAM = "telegram", "Telegram"
        TILL = "till", "Created at a till (API)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="users")
    telegram_id = models.BigIntegerField(
        null=True, blank=True, help_text="Empty for a customer created at a till."
    )
    chat_id = models.BigIntegerField(null=True, blank=True, help_text="Private chat with the user.")
    phone = models.CharField(
        max_length=16,
        blank=True,
        help_text="E.164, e.g. +4915112345678; unique in the project.",
    )
    card_code = models.CharField(
        max_length=16,
        blank=True,
        help_text="The code on the customer's card (QR); unique in the project, rotatable.",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.TELEGRAM)
    merged_into = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A till customer whose balance moved to this Telegram user (same phone).",
    )
    username = models.CharField(max_length=64, blank=True)
    first_name = models.CharField(max_length=128, blank=True)
    last_name = models.CharField(max_length=128, blank=True)
    language_code = models.CharField(max_length=16, blank=True)
    language = models.CharField(
        max_length=16,
        blank=True,
        help_text=(
            "The language the user chose in a “choose language” step. Empty: their "
            "Telegram language, if the project speaks it, else the project's default."
        ),
    )
    referrer = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="referrals",
        help_text="Who invited this user. Set once, never changed.",
    )
    referral_code = models.CharField(max_length=32, default=generate_referral_code)
    level = models.CharField(max_length=64, blank=True)
    balance = models.BigIntegerField(
        default=0, help_text="Current bonus balance. Changed only through the ledger."
    )
    lifetime_earned = models.BigIntegerField(
        default=0, help_text="All bonuses ever earned; levels are based on it."
    )
    is_blocked = models.BooleanField(
        "blocked the bot", default=False, help_text="Telegram answered 403: no sends."
    )
    is_test = models.BooleanField(
        default=False, help_text="A simulator test user, not a real Telegram user."
    )
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    phone_linked_at = models.DateTimeField(
        "phone shared at",
        null=True,
        blank=True,
        help_text="When the Telegram user shared this phone in the bot (empty for a phone "
        "typed at a till). The dashboard's “Phone linked” counts these.",
    )

    class Meta:
        ordering = ["-last_seen_at"]
        verbose_name = "bot user"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "telegram_id"], name="botuser_unique_project_telegram_id"
            ),
            models.UniqueConstraint(
                fields=["project", "referral_code"], name="botuser_unique_referral_code"
            ),
            models.UniqueConstraint(
                fields=["project", "phone"], condition=~Q(phone=""), name="botuser_unique_phone"
            ),
            models.UniqueConstraint(
                fields=["project", "card_code"],
                condition=~Q(card_code=""),
                name="botuser_unique_card_code",
            ),
            models.CheckConstraint(
                condition=Q(telegram_id__isnull=True, chat_id__isnull=True)
                | Q(telegram_id__isnull=False, chat_id__isnull=False),
                name="botuser_telegram_id_with_chat",
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="botuser_balance_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(lifetime_earned__gte=0), name="botuser_lifetime_earned_non_negative"
            ),
            models.CheckConstraint(condition=~Q(referrer=F("pk")), name="botuser_not_own_referrer"),
        ]
        indexes = [
            models.Index(fields=["project", "level"]),
            models.Index(fields=["project", "-last_seen_at"]),
        ]

    def __str__(self) -> str:
        name = " ".join(part for part in (self.first_name, self.last_name) if part)
        if self.username:
            return f"@{self.username}" + (f" ({name})" if name else "")
        if name:
            return name
        if self.telegram_id is None:
            return f"customer {self.phone or self.card_code or self.pk}"
        return f"user {self.telegram_id}"


class UserVariable(models.Model):
    """A custom variable of one user (e.g. ``city`` or ``birthday``)."""

    user = models.ForeignKey(BotUser, on_delete=models.CASCADE, related_name="variables")
    key = models.CharField(max_length=64)
    value = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="uservariable_unique_user_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}"


class BonusTransaction(models.Model):
    """One append-only entry of the bonus ledger.

    The user's stored balance changes in the same transaction; ``balance_after`` makes
    the ledger auditable on its own. Entries are never updated or deleted.
    """

    class Kind(models.TextChoices):
        EARN = "earn", "Earned"
        SPEND = "spend", "Spent"
        ADJUST = "adjust", "Adjusted by an operator"
        REFERRAL = "referral", "Referral reward"
        EXPIRY = "expiry", "Expired"
        CLAWBACK = "clawback", "Clawed back (refund)"
        MERGE = "merge", "Moved between merged accounts"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="transactions")
    user = models.ForeignKey(BotUser, on_delete=models.PROTECT, related_name="transactions")
    amount = models.BigIntegerField(help_text="Positive adds bonuses, negative takes them.")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.CharField(max_length=500, blank=True)
    idempotency_key = models.CharField(
        max_length=200, help_text="The same operation retried is applied only once."
    )
    balance_after = models.BigIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The operator who made an adjustment; empty for the bot and tasks.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "bonus transaction"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"], name="bonustx_unique_idempotency_key"
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="bonustx_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="bonustx_balance_after_non_negative"
            ),
        ]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.amount:+d} ({self.get_kind_display()})"


class LevelChange(models.Model):
    """A member moved from one level to another (the level history).

    Written in the same transaction (savepoint) as the ledger entry or the customer
    merge that caused it, with an idempotency key unique per project
    (``ledger:<entry id>``, ``merge:<source id>``): a retried or concurrent operation
    records the move once, and a rolled-back one records nothing. Never updated.
    """

    class Cause(models.TextChoices):
        LEDGER = "ledger", "Bonuses earned"
        MERGE = "merge", "Till customer merged in"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(BotUser, on_delete=models.CASCADE, related_name="level_changes")
    from_level = models.CharField(max_length=64, blank=True)
    to_level = models.CharField(max_length=64, blank=True)
    cause = models.CharField(max_length=16, choices=Cause.choices)
    ledger_entry = models.ForeignKey(
        "BonusTransaction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    idempotency_key = models.CharField(max_length=200)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "level change"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"], name="levelchange_unique_key"
            ),
        ]
        indexes = [
            models.Index(fields=["at"]),  # the daily rollup reads a range of days
            models.Index(fields=["user", "-at"]),  # a member's history
        ]

    def __str__(self) -> str:
        return f"{self.from_level or '(none)'} → {self.to_level or '(none)'}"


class Payment(models.Model):
    """A payment a user made through an ``invoice`` step (Telegram Payments, Stars).

    One row per Telegram charge (``charge_id`` is unique), so a replayed
    ``successful_payment`` records and credits nothing twice.
    """

    class Status(models.TextChoices):
        PAID = "paid", "Paid"
        REFUNDED = "refunded", "Refunded"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="payments")
    user = models.ForeignKey(BotUser, on_delete=models.PROTECT, related_name="payments")
    bot = models.ForeignKey(
        "botplatform.Bot", on_delete=models.SET_NULL, null=True, related_name="payments"
    )
    charge_id = models.CharField(max_length=255, unique=True, help_text="Telegram's charge id.")
    provider_charge_id = models.CharField(max_length=255, blank=True)
    currency = models.CharField(max_length=8, help_text="XTR is Telegram Stars.")
    amount = models.BigIntegerField(help_text="In the currency's smallest unit (Stars for XTR).")
    item = models.CharField(max_length=64, blank=True, help_text="The invoice step's item.")
    payload = models.CharField(max_length=128, blank=True)
    bonus = models.BigIntegerField(default=0, help_text="Bonuses credited for it.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PAID)
    created_at = models.DateTimeField(auto_now_add=True)
    refunded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "item", "status"])]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} by {self.user_id} ({self.get_status_display()})"


# The POS/CRM API's models (issue 16) live in their own module; importing them here
# makes them models of this app.
from users.models_pos import (  # noqa: E402
    ApiIdempotency,
    ApiKey,
    Cashier,
    EarnRule,
    Hold,
    Purchase,
    Refund,
    WebhookDelivery,
    WebhookEndpoint,
)

__all__ = [
    "ApiIdempotency",
    "ApiKey",
    "BonusTransaction",
    "BotUser",
    "Cashier",
    "EarnRule",
    "Hold",
    "LevelChange",
    "Payment",
    "Purchase",
    "Refund",
    "UserVariable",
    "WebhookDelivery",
    "WebhookEndpoint",
]
