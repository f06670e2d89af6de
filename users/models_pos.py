"""The data model of the POS/CRM API (issue 16): API keys, earn rules, purchases and
refunds, holds, cashiers, outgoing webhooks, and the API's idempotency records.

Imported at the end of :mod:`users.models`, so these are models of the ``users`` app.
Business logic lives in the service modules (``users/purchases.py``, ``users/holds.py``,
``users/customers.py``, ``users/earn_rules.py``, ``users/apikeys.py``,
``users/webhooks_out.py``), never here.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from botplatform.encryption import EncryptedTokenField, TokenDigestField
from botplatform.models import Project
from users.models import BonusTransaction, BotUser

MONEY = {"max_digits": 14, "decimal_places": 2}


class ApiKey(models.Model):
    """A till's, shop's or CRM's key to one project's API.

    Only the SHA-256 of the key is stored; the full key is shown once, when created.
    ``prefix`` (the first characters) identifies the key in lists and logs.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read customers, balances and history"
        ACCRUE = "accrue", "Record purchases and refunds (earn bonuses)"
        REDEEM = "redeem", "Hold, confirm and release redemptions (spend bonuses)"
        EVENTS = "events", "Send events that start workflows"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What uses this key, e.g. 'Till 3, Store 5'.")
    prefix = models.CharField(
        max_length=16, unique=True, editable=False, help_text="The key's visible beginning."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(
        default=list, help_text="What the key may do: read, accrue, redeem, events."
    )
    rate_limit_per_minute = models.PositiveIntegerField(
        "requests per minute",
        default=600,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Requests beyond this in one minute are answered 429.",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="A revoked key is refused at once."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class EarnRule(models.Model):
    """How purchases earn bonuses in one project.

    A *base* rule gives a percentage of the purchase to customers of one level (or of
    every level when the level is empty; a level's own rule wins). A *promo* rule
    multiplies what the base rule gives while its dates last (the highest active
    multiplier applies, promos do not stack).
    """

    class Kind(models.TextChoices):
        BASE = "base", "Base: a percentage of the purchase"
        PROMO = "promo", "Promo: a multiplier over a date range"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="earn_rules")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.BASE)
    level = models.CharField(
        max_length=64, blank=True, help_text="Only for customers of this level; empty for all."
    )
    percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Base rules: bonuses per 100 of the purchase amount (5 = 5 %).",
    )
    min_purchase_amount = models.DecimalField(
        **MONEY,
        default=0,
        validators=[MinValueValidator(0)],
        help_text="Purchases below this amount earn nothing.",
    )
    max_per_purchase = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="At most this many bonuses per purchase; empty: no cap."
    )
    max_per_day = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="At most this many bonuses per customer per day (UTC); empty: no cap.",
    )
    multiplier = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=1,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Promo rules: the base bonuses are multiplied by this (2 = double).",
    )
    starts_on = models.DateField(null=True, blank=True, help_text="Promo rules: first day.")
    ends_on = models.DateField(null=True, blank=True, help_text="Promo rules: last day.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "kind", "level"]
        verbose_name = "earn rule"
        constraints = [
            models.CheckConstraint(
                condition=Q(percent__gte=0) & Q(percent__lte=100), name="earnrule_percent_range"
            ),
            models.CheckConstraint(condition=Q(multiplier__gte=0), name="earnrule_multiplier_ok"),
            models.CheckConstraint(
                condition=Q(starts_on__isnull=True)
                | Q(ends_on__isnull=True)
                | Q(starts_on__lte=models.F("ends_on")),
                name="earnrule_dates_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Cashier(models.Model):
    """A Telegram user who works the till of a project in the bot (the cashier menu)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cashiers")
    telegram_id = models.BigIntegerField(help_text="The cashier's own Telegram user id.")
    bot_user = models.ForeignKey(
        BotUser,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="cashier_roles",
        help_text="Filled in when the cashier first writes to the bot.",
    )
    name = models.CharField(max_length=100, blank=True)
    store_name = models.CharField(
        max_length=100, help_text="Recorded on every action, e.g. 'Store 5'."
    )
    daily_limit = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Most bonuses this cashier may accrue and redeem together per day (UTC); "
        "empty: no limit.",
    )
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "store_name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "telegram_id"], name="cashier_unique_project_telegram_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.telegram_id} ({self.store_name})"


class Purchase(models.Model):
    """One receipt reported by a till or shop; ``order_id`` earns once."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="purchases")
    customer = models.ForeignKey(BotUser, on_delete=models.PROTECT, related_name="purchases")
    order_id = models.CharField(max_length=128)
    amount = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    currency = models.CharField(max_length=3, default="USD")
    items = models.JSONField(default=list, blank=True)
    accrued = models.BigIntegerField(default=0, help_text="Bonuses earned on this purchase.")
    refunded_amount = models.DecimalField(**MONEY, default=0)
    clawed_back = models.BigIntegerField(default=0, help_text="Bonuses taken back by refunds.")
    shortfall = models.BigIntegerField(
        default=0, help_text="Bonuses refunds should have taken back but the balance lacked."
    )
    earn_transaction = models.ForeignKey(
        BonusTransaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    store = models.CharField(max_length=100, blank=True)
    cashier = models.ForeignKey(
        Cashier, null=True, blank=True, on_delete=models.SET_NULL, related_name="purchases"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "order_id"], name="purchase_unique_project_order"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="purchase_amount_ok"),
            models.CheckConstraint(condition=Q(accrued__gte=0), name="purchase_accrued_ok"),
            models.CheckConstraint(
                condition=Q(refunded_amount__lte=models.F("amount")),
                name="purchase_refund_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(clawed_back__gte=0) & Q(shortfall__gte=0),
                name="purchase_clawback_ok",
            ),
        ]
        indexes = [models.Index(fields=["customer", "-created_at"])]

    def __str__(self) -> str:
        return f"order {self.order_id}"


class Refund(models.Model):
    """A full or partial refund of a purchase: its bonuses taken back, never below zero."""

    purchase = models.ForeignKey(Purchase, on_delete=models.CASCADE, related_name="refunds")
    refund_id = models.CharField(max_length=128)
    amount = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    clawback = models.BigIntegerField(help_text="Bonuses this refund should take back.")
    taken = models.BigIntegerField(help_text="Bonuses actually taken back.")
    shortfall = models.BigIntegerField(help_text="clawback minus taken: the balance lacked them.")
    transaction = models.ForeignKey(
        BonusTransaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["purchase", "refund_id"], name="refund_unique_id"),
            models.CheckConstraint(
                condition=Q(taken__gte=0) & Q(shortfall__gte=0) & Q(clawback__gte=0),
                name="refund_amounts_ok",
            ),
        ]

    def __str__(self) -> str:
        return f"refund {self.refund_id} of {self.purchase}"


class Hold(models.Model):
    """A redemption in two steps: bonuses held (counted against the available balance),
    then confirmed (one ledger spend) or released; expired holds are released by the
    periodic sweep."""

    class Status(models.TextChoices):
        HELD = "held", "Held"
        CONFIRMED = "confirmed", "Confirmed (spent)"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="holds")
    customer = models.ForeignKey(BotUser, on_delete=models.PROTECT, related_name="holds")
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.HELD)
    expires_at = models.DateTimeField()
    needs_customer_approval = models.BooleanField(default=False)
    approved_at = models.DateTimeField(null=True, blank=True)
    declined_at = models.DateTimeField(null=True, blank=True)
    order_id = models.CharField(max_length=128, blank=True)
    store = models.CharField(max_length=100, blank=True)
    cashier = models.ForeignKey(
        Cashier, null=True, blank=True, on_delete=models.SET_NULL, related_name="holds"
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    transaction = models.ForeignKey(
        BonusTransaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["held", "confirmed", "released", "expired"]),
                name="hold_status_known",
            ),
        ]
        indexes = [
            models.Index(fields=["customer"], name="hold_open_idx", condition=Q(status="held")),
            models.Index(fields=["expires_at"], name="hold_expiry_idx", condition=Q(status="held")),
        ]

    def __str__(self) -> str:
        return f"hold of {self.amount} ({self.status})"


class WebhookEndpoint(models.Model):
    """An HTTPS address of the project's that is told about loyalty events."""

    class Event(models.TextChoices):
        CUSTOMER_JOINED = "customer.joined", "Customer joined"
        PHONE_LINKED = "customer.phone_linked", "Phone linked"
        ACCRUED = "bonus.accrued", "Bonuses accrued"
        REDEEMED = "bonus.redeemed", "Bonuses redeemed"
        EXPIRED = "bonus.expired", "Bonuses expired"
        CLAWED_BACK = "bonus.clawed_back", "Bonuses clawed back"
        LEVEL_CHANGED = "customer.level_changed", "Level changed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500, help_text="Must start with https://.")
    secret = EncryptedTokenField(
        digest_field="secret_hash", help_text="Deliveries are signed with it (HMAC-SHA256)."
    )
    secret_hash = TokenDigestField(source="secret")
    events = models.JSONField(default=list, help_text="Which events to send here.")
    is_active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "url"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event sent (or being sent) to one endpoint; retried with backoff."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=64)
    event_id = models.UUIDField(default=uuid.uuid4)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The start of the last answer.")
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="whdelivery_unique_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="whdelivery_due_idx", condition=Q(status="pending")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"


class ApiIdempotency(models.Model):
    """The first answer to an API write sent with an ``Idempotency-Key``.

    The same key with the same request answers this again; with another request, 409.
    ``response`` is empty while the first request is still running.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "API idempotency record"
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="apiidem_unique_key"),
        ]

    def __str__(self) -> str:
        return self.key
