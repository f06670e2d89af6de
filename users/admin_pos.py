"""Admin for the POS/CRM API: API keys (owners; the key is shown once), earn rules,
cashiers, and the read-only record of purchases and holds."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html

from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from users.admin_till import CashierForm
from users.apikeys import apikey_create, apikey_revoke
from users.models_pos import ApiKey, Cashier, EarnRule, Hold, Purchase, Refund


class ApiKeyForm(forms.ModelForm):
    scope_choices = forms.MultipleChoiceField(
        label="Scopes",
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="Give a till read, accrue and redeem; a CRM that sends events, events.",
    )

    class Meta:
        model = ApiKey
        fields = ("project", "name", "rate_limit_per_minute")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("scope_choices", list(self.instance.scopes or []))


@admin.register(ApiKey)
class ApiKeyAdmin(ProjectScopedAdmin):
    """Keys are made here or with ``manage.py createapikey``; only the hash is kept,
    so the full key appears once, in the message after saving."""

    form = ApiKeyForm
    list_display = ("name", "project", "prefix_shown", "scopes_shown", "last_used_at", "state")
    list_filter = ("project",)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix_shown", "last_used_at", "revoked_at", "created_by", "created_at")
    actions = ("revoke_keys",)

    @admin.display(description="key")
    def prefix_shown(self, obj: ApiKey) -> str:
        return f"{obj.prefix}_…" if obj.prefix else "(shown once after saving)"

    @admin.display(description="scopes")
    def scopes_shown(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes or [])

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return "revoked" if obj.revoked_at else "active"

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "project") if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        obj.scopes = sorted(form.cleaned_data["scope_choices"])
        if change:
            super().save_model(request, obj, form, change)
            return
        new = apikey_create(
            project=obj.project, name=obj.name, scopes=obj.scopes, created_by=request.user
        )
        ApiKey.objects.filter(pk=new.api_key.pk).update(
            rate_limit_per_minute=obj.rate_limit_per_minute
        )
        obj.pk = new.api_key.pk
        obj.prefix = new.api_key.prefix
        messages.warning(
            request,
            format_html(
                "The new key (copy it now, it is never shown again): <code>{}</code>", new.plain
            ),
        )

    @admin.action(description="Revoke the selected keys (refused from now on)")
    def revoke_keys(self, request: HttpRequest, queryset) -> None:
        for api_key in queryset:
            apikey_revoke(api_key)
        self.message_user(request, f"{queryset.count()} key(s) revoked.")


@admin.register(EarnRule)
class EarnRuleAdmin(ProjectScopedAdmin):
    list_display = (
        "name",
        "project",
        "kind",
        "level",
        "percent",
        "multiplier",
        "starts_on",
        "ends_on",
        "is_active",
    )
    list_filter = ("project", "kind", "is_active")
    fieldsets = (
        (None, {"fields": ("project", "name", "kind", "level", "is_active")}),
        (
            "Base rule",
            {"fields": ("percent", "min_purchase_amount", "max_per_purchase", "max_per_day")},
        ),
        ("Promo", {"fields": ("multiplier", "starts_on", "ends_on")}),
    )


@admin.register(Cashier)
class CashierAdmin(ProjectScopedAdmin):
    """Telegram users who get the cashier menu in the project's bot."""

    form = CashierForm  # a positive Telegram id, one cashier per user and project

    list_display = ("__str__", "project", "telegram_id", "store_name", "daily_limit", "is_active")
    list_filter = ("project", "is_active")
    search_fields = ("name", "store_name", "=telegram_id")
    fields = ("project", "telegram_id", "name", "store_name", "daily_limit", "is_active")

    def save_model(self, request: HttpRequest, obj: Cashier, form, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class RefundInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Refund
    fields = ("refund_id", "amount", "clawback", "taken", "shortfall", "created_at")
    readonly_fields = fields
    extra = 0


@admin.register(Purchase)
class PurchaseAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Purchases reported by tills and shops (read-only: the API writes them)."""

    list_display = (
        "order_id",
        "customer",
        "project",
        "amount",
        "currency",
        "accrued",
        "clawed_back",
        "shortfall",
        "store",
        "created_at",
    )
    list_filter = ("project", "created_at")
    search_fields = ("order_id", "customer__phone", "store")
    list_select_related = ("customer", "project")
    inlines = (RefundInline,)


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Redemption holds (read-only: the API and the bot write them)."""

    list_display = (
        "pk",
        "customer",
        "project",
        "amount",
        "status",
        "needs_customer_approval",
        "approved_at",
        "store",
        "expires_at",
    )
    list_filter = ("project", "status")
    list_select_related = ("customer", "project")
