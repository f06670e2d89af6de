from __future__ import annotations

from django.contrib import admin

from botplatform.admin_scoping import ProjectScopedAdmin
from users.models import BonusTransaction, BotUser, UserVariable


class ReadOnlyAdminMixin:
    """History that must not change: no add, change or delete through the admin."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class UserVariableInline(admin.TabularInline):
    model = UserVariable
    extra = 0
    fields = ("key", "value", "updated_at")
    readonly_fields = ("updated_at",)


class BonusTransactionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = BonusTransaction
    fk_name = "user"
    extra = 0
    max_num = 0
    ordering = ("-created_at", "-id")
    fields = ("created_at", "kind", "amount", "balance_after", "reason", "created_by")
    readonly_fields = fields
    show_change_link = True


@admin.register(BotUser)
class BotUserAdmin(ProjectScopedAdmin):
    list_display = (
        "__str__",
        "project",
        "telegram_id",
        "balance",
        "level",
        "is_blocked",
        "last_seen_at",
    )
    list_filter = ("project", "level", "is_blocked", "is_test")
    search_fields = ("username", "first_name", "last_name", "telegram_id", "referral_code")
    list_select_related = ("project",)
    raw_id_fields = ("referrer",)
    readonly_fields = (
        "balance",
        "lifetime_earned",
        "level",
        "referral_code",
        "first_seen_at",
        "last_seen_at",
    )
    inlines = (UserVariableInline, BonusTransactionInline)


@admin.register(UserVariable)
class UserVariableAdmin(ProjectScopedAdmin):
    project_path = "user__project"
    list_display = ("user", "key", "value", "updated_at")
    search_fields = ("key", "user__username", "user__telegram_id")
    list_filter = ("user__project",)
    raw_id_fields = ("user",)


@admin.register(BonusTransaction)
class BonusTransactionAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """The ledger is append-only: entries are never edited or deleted here."""

    list_display = (
        "created_at",
        "user",
        "project",
        "kind",
        "amount",
        "balance_after",
        "reason",
        "created_by",
    )
    list_filter = ("kind", "project", "created_at")
    search_fields = ("user__username", "user__telegram_id", "reason", "idempotency_key")
    list_select_related = ("user", "project", "created_by")
    date_hierarchy = "created_at"
