"""What the API reads and writes (also the OpenAPI schema's components)."""

from __future__ import annotations

from rest_framework import serializers

from users.models import BonusTransaction
from users.models_pos import Hold, Purchase, Refund

MAX_ITEMS = 200
MAX_EVENT_PAYLOAD_BYTES = 16_000


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. 'invalid_phone'.")
    detail = serializers.CharField(help_text="What went wrong, for people.")


class CustomerSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    telegram_id = serializers.IntegerField(allow_null=True)
    phone = serializers.CharField(allow_null=True, help_text="E.164")
    card_code = serializers.CharField(allow_null=True)
    first_name = serializers.CharField(allow_blank=True)
    last_name = serializers.CharField(allow_blank=True)
    level = serializers.CharField(allow_blank=True)
    balance = serializers.IntegerField()
    available = serializers.IntegerField(help_text="Balance minus open holds.")
    source = serializers.ChoiceField(choices=["telegram", "till"])


class CustomerCreateSerializer(serializers.Serializer):
    phone = serializers.CharField(
        max_length=32, help_text="International form, e.g. +4915112345678"
    )
    first_name = serializers.CharField(max_length=128, required=False, default="", allow_blank=True)
    last_name = serializers.CharField(max_length=128, required=False, default="", allow_blank=True)


class HistoryEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = BonusTransaction
        fields = ["id", "amount", "kind", "reason", "balance_after", "created_at"]


class LineItemSerializer(serializers.Serializer):
    sku = serializers.CharField(max_length=64, required=False, allow_blank=True)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    quantity = serializers.DecimalField(max_digits=12, decimal_places=3, required=False)
    price = serializers.DecimalField(max_digits=14, decimal_places=2, required=False)


class PurchaseCreateSerializer(serializers.Serializer):
    customer_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    order_id = serializers.CharField(max_length=128, trim_whitespace=False)
    amount = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=0,
        coerce_to_string=True,
        help_text='The receipt\'s total, e.g. "12.50".',
    )
    currency = serializers.CharField(max_length=3, min_length=3, default="USD")
    items = LineItemSerializer(many=True, required=False, max_length=MAX_ITEMS)
    store = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)


class PurchaseSerializer(serializers.ModelSerializer):
    customer_id = serializers.IntegerField()
    balance = serializers.IntegerField(help_text="The customer's balance after the purchase.")

    class Meta:
        model = Purchase
        fields = [
            "id",
            "customer_id",
            "order_id",
            "amount",
            "currency",
            "items",
            "store",
            "accrued",
            "refunded_amount",
            "clawed_back",
            "shortfall",
            "created_at",
            "balance",
        ]


class RefundCreateSerializer(serializers.Serializer):
    order_id = serializers.CharField(max_length=128, trim_whitespace=False)
    refund_id = serializers.CharField(
        max_length=128, trim_whitespace=False, help_text="Your id of this refund."
    )
    amount = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=0,
        required=False,
        allow_null=True,
        help_text="How much of the order is refunded; omit for all that is left.",
    )


class RefundSerializer(serializers.ModelSerializer):
    order_id = serializers.CharField(source="purchase.order_id")
    balance = serializers.IntegerField()

    class Meta:
        model = Refund
        fields = [
            "id",
            "order_id",
            "refund_id",
            "amount",
            "clawback",
            "taken",
            "shortfall",
            "created_at",
            "balance",
        ]


class HoldCreateSerializer(serializers.Serializer):
    customer_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    amount = serializers.IntegerField(min_value=1, max_value=10**12)
    expires_in_minutes = serializers.IntegerField(
        min_value=1,
        max_value=7 * 24 * 60,
        required=False,
        help_text="Defaults to the project's hold duration.",
    )
    order_id = serializers.CharField(max_length=128, required=False, default="", allow_blank=True)
    store = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)


class HoldSerializer(serializers.ModelSerializer):
    customer_id = serializers.IntegerField()
    approval = serializers.SerializerMethodField(
        help_text="not_needed, pending, approved or declined."
    )

    class Meta:
        model = Hold
        fields = [
            "id",
            "customer_id",
            "amount",
            "status",
            "expires_at",
            "needs_customer_approval",
            "approval",
            "order_id",
            "store",
            "created_at",
            "resolved_at",
        ]

    def get_approval(self, hold: Hold) -> str:
        if not hold.needs_customer_approval:
            return "not_needed"
        if hold.declined_at:
            return "declined"
        return "approved" if hold.approved_at else "pending"


class EventCreateSerializer(serializers.Serializer):
    name = serializers.RegexField(
        r"^[a-z][a-z0-9_.-]{0,63}$", help_text="e.g. order_shipped (lower case)."
    )
    payload = serializers.DictField(required=False, default=dict)

    def validate_payload(self, value: dict) -> dict:
        import json

        if len(json.dumps(value, default=str)) > MAX_EVENT_PAYLOAD_BYTES:
            raise serializers.ValidationError(
                f"the payload must be at most {MAX_EVENT_PAYLOAD_BYTES} bytes of JSON"
            )
        return value


class EventResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    started = serializers.BooleanField(help_text="Whether a workflow's event trigger matched.")
