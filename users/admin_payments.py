"""Payments of ``invoice`` steps: the list, and refunds of Telegram Stars payments.

Payments are history: nobody adds, edits or deletes them. Owners may refund a Stars
payment (``refundStarPayment``), at most once (``workflows.payments.payment_refund``);
Telegram's refusal is shown in plain words.
"""

from __future__ import annotations

from django.contrib import admin, messages

from botplatform.admin_scoping import ProjectScopedAdmin
from botplatform.audit import audit_record
from users.models import Payment
from workflows.payments import RefundRefused, payment_refund


@admin.register(Payment)
class PaymentAdmin(ProjectScopedAdmin):
    list_display = ("created_at", "user", "amount", "currency", "item", "bonus", "status")
    list_filter = ("status", "currency", "item")
    search_fields = ("=charge_id", "user__username", "=user__telegram_id", "item")
    list_select_related = ("user",)
    readonly_fields = (
        "project",
        "user",
        "bot",
        "charge_id",
        "provider_charge_id",
        "currency",
        "amount",
        "item",
        "payload",
        "bonus",
        "status",
        "created_at",
        "refunded_at",
    )
    actions = ["refund_payments"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Refund selected Stars payments", permissions=["change"])
    def refund_payments(self, request, queryset) -> None:
        refunded = 0
        for payment in queryset:
            if not self.has_change_permission(request, payment):
                continue
            try:
                if payment_refund(payment_id=payment.pk):
                    refunded += 1
                    audit_record(
                        actor=request.user,
                        obj=payment,
                        message=f"Refunded {payment.amount} {payment.currency} to the user.",
                    )
            except RefundRefused as exc:
                self.message_user(request, f"{payment}: {exc}", messages.ERROR)
        self.message_user(request, f"{refunded} payment(s) refunded.", messages.SUCCESS)
