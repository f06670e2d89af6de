"""Admin for bot users, their variables and the ledger.

Balances change only through the ledger: operators adjust them on the bot user page
("Adjust balance", a mandatory reason, recorded with the operator's name); ledger
entries are never editable. Every admin write drops the user's cached state.
"""

from __future__ import annotations

import json
import re
import uuid

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from botplatform import roles
from botplatform.admin import BoundedJSONField
from botplatform.admin_scoping import ProjectScopedAdmin, ProjectScopedInline
from botplatform.audit import audit_record
from botplatform.jsoncheck import json_text_problem
from users.admin_till import BotUserCardMixin
from users.invalidation import user_state_changed
from users.ledger import (
    MAX_AMOUNT,
    REASON_MAX_LENGTH,
    IdempotencyKeyConflict,
    bonus_adjust,
)
from users.models import BonusTransaction, BotUser, LevelChange, UserVariable
from users.selectors import COMPUTED_VARIABLES
from workflows.models import WorkflowExecution
from workflows.selectors import interrupted_q


class BalanceAdjustForm(forms.Form):
    amount = forms.IntegerField(
        label="Amount",
        min_value=-MAX_AMOUNT,
        max_value=MAX_AMOUNT,
        help_text="Bonuses to add; use a minus sign to take bonuses away (e.g. -100).",
    )
    reason = forms.CharField(
        label="Reason",
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why the balance changes. Required; kept in the ledger for good.",
    )
    request_token = forms.CharField(widget=forms.HiddenInput)

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("Enter an amount other than zero.")
        return amount

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Please say why the balance changes.")
        return reason

    def clean_request_token(self) -> str:
        token = self.cleaned_data["request_token"]
        if not re.fullmatch(r"[0-9a-f]{32}", token):
            raise forms.ValidationError("The form expired; please open it again.")
        return token


class ReadOnlyAdminMixin:
    """History that must not change: no add, change or delete through the admin."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class VariableValueField(BoundedJSONField):
    """Operators type Paris, not "Paris": text that is not JSON is kept as text."""

    def to_python(self, value):
        if isinstance(value, str) and (problem := json_text_problem(value)):
            raise forms.ValidationError(problem, code="invalid")
        if isinstance(value, str) and value.strip() not in self.empty_values:
            try:
                json.loads(value, cls=self.decoder)
            except json.JSONDecodeError:
                return value.strip()
        return super().to_python(value)

    def prepare_value(self, value):
        if isinstance(value, str) and json_text_problem(value):
            return value
        if isinstance(value, str):
            try:
                json.loads(value)
            except json.JSONDecodeError:
                return value  # shown as typed; quotes would only confuse
        return super().prepare_value(value)


class UserVariableForm(forms.ModelForm):
    """Refuses the names the platform computes (balance, level, referrals)."""

    class Meta:
        model = UserVariable
        fields = ("user", "key", "value")
        field_classes = {"value": VariableValueField}
        widgets = {"value": forms.Textarea(attrs={"rows": 2, "cols": 40})}
        help_texts = {
            "value": 'Text (no quotes needed), a number, true/false, or JSON such as ["a", "b"].'
        }

    def clean_key(self) -> str:
        key = self.cleaned_data["key"].strip()
        if key in COMPUTED_VARIABLES:
            raise forms.ValidationError(
                f"“{key}” is computed by the platform; choose another name."
            )
        return key


class UserVariableInline(ProjectScopedInline, admin.TabularInline):
    model = UserVariable
    form = UserVariableForm
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


class LevelChangeInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The member's level history, newest first (recorded by the platform, read-only)."""

    model = LevelChange
    fk_name = "user"
    extra = 0
    max_num = 0
    ordering = ("-at", "-id")
    fields = ("at", "from_level", "to_level", "cause")
    readonly_fields = fields
    verbose_name = "level change"
    verbose_name_plural = "Level history (moves between levels)"


@admin.register(BotUser)
class BotUserAdmin(BotUserCardMixin, ProjectScopedAdmin):
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
    readonly_fields = (
        "balance",
        "lifetime_earned",
        "level",
        "referrer_link",
        "referral_code",
        "referrals_list",
        "first_seen_at",
        "last_seen_at",
        "is_test",
        "executions_list",
        "loyalty_card",
    )
    fieldsets = (
        (
            "Profile",
            {
                "fields": (
                    "project",
                    ("first_name", "last_name"),
                    "username",
                    ("telegram_id", "chat_id"),
                    "language_code",
                    "is_blocked",
                    "is_test",
                    ("first_seen_at", "last_seen_at"),
                )
            },
        ),
        ("Bonuses", {"fields": ("balance", "lifetime_earned", "level")}),
        ("Loyalty card", {"fields": ("loyalty_card",)}),
        ("Referrals", {"fields": ("referral_code", "referrer_link", "referrals_list")}),
        ("Conversations", {"fields": ("executions_list",)}),
    )
    inlines = (UserVariableInline, BonusTransactionInline, LevelChangeInline)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in {"telegram_id", "chat_id"} and field is not None:
            field.widget.attrs["style"] = "width: 16em"  # ids are up to 20 characters
        return field

    @admin.display(description="latest conversations")
    def executions_list(self, obj: BotUser) -> str:
        """A table rather than an inline: nothing to submit, always read-only."""
        if obj.pk is None:
            return "-"
        executions = WorkflowExecution.objects.filter(user=obj)
        rows = list(
            executions.exclude(interrupted_q())
            .select_related("workflow", "version")
            .order_by("-started_at", "-id")[:20]
        )
        interrupted = executions.filter(interrupted_q()).count()
        hidden = (
            format_html(
                ' · <a href="{}?user__id__exact={}&amp;interrupted=only">{} interrupted '
                "(the user started something else) not shown</a>",
                reverse("admin:workflows_workflowexecution_changelist"),
                obj.pk,
                interrupted,
            )
            if interrupted
            else ""
        )
        if not rows:
            return format_html("none yet{}", hidden) if hidden else "none yet"
        body = format_html_join(
            "",
            '<tr><td><a href="{}">#{}</a></td><td>{}</td><td>v{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:workflows_workflowexecution_change", args=[e.pk]),
                    e.pk,
                    e.workflow,
                    e.version.number,
                    e.get_status_display(),
                    e.current_step,
                    e.started_at.strftime("%Y-%m-%d %H:%M"),
                    e.error[:120],
                )
                for e in rows
            ),
        )
        return format_html(
            '<table class="executions"><tr><th>#</th><th>Workflow</th><th>Version</th>'
            "<th>Status</th><th>Step</th><th>Started</th><th>Error</th></tr>{}</table>"
            '<p><a href="{}?user__id__exact={}">All conversations of this user</a> · '
            '<a href="{}?user__id__exact={}">Whole ledger</a>{}</p>',
            body,
            reverse("admin:workflows_workflowexecution_changelist"),
            obj.pk,
            reverse("admin:users_bonustransaction_changelist"),
            obj.pk,
            hidden,
        )

    @admin.display(description="invited by")
    def referrer_link(self, obj: BotUser) -> str:
        if obj.referrer_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:users_botuser_change", args=[obj.referrer_id]),
            obj.referrer,
        )

    @admin.display(description="invited users")
    def referrals_list(self, obj: BotUser) -> str:
        if obj.pk is None:
            return "-"
        invited = list(obj.referrals.order_by("-first_seen_at")[:50])
        if not invited:
            return "nobody yet"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:users_botuser_change", args=[u.pk]), str(u)) for u in invited),
        )

    def get_readonly_fields(self, request, obj=None):
        # A user's ledger belongs to their project: never move an existing user.
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "project") if obj is not None else fields

    def get_urls(self):
        adjust = path(
            "<path:object_id>/adjust-balance/",
            self.admin_site.admin_view(self.adjust_balance_view),
            name="users_botuser_adjust_balance",
        )
        return [adjust, *self.card_urls(), *super().get_urls()]

    def adjust_balance_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Add or take bonuses with a reason; a double submit is applied once."""
        user = self.get_object(request, object_id)
        if user is None:
            raise Http404("No such bot user in your projects.")
        if not self.role_permits(request, roles.ADJUST_BALANCE, user, named=True):
            raise PermissionDenied
        if request.method == "POST":
            form = BalanceAdjustForm(request.POST)
            if form.is_valid():
                amount = form.cleaned_data["amount"]
                try:
                    result = bonus_adjust(
                        user_id=user.pk,
                        amount=amount,
                        reason=form.cleaned_data["reason"],
                        created_by=request.user,
                        idempotency_key=f"admin-adjust:{form.cleaned_data['request_token']}",
                    )
                except IdempotencyKeyConflict:
                    # The same form (its hidden key) was already submitted for another
                    # user or amount: nothing was applied now.
                    form = BalanceAdjustForm(
                        initial={**form.cleaned_data, "request_token": uuid.uuid4().hex}
                    )
                    messages.error(
                        request,
                        "This form was already used for another adjustment, so nothing was "
                        "changed. Check the amount and reason below and submit again.",
                    )
                    result = None
                if result is not None and result.status == "ok":
                    if not result.replayed:
                        audit_record(
                            actor=request.user,
                            obj=user,
                            message=(
                                f"Balance adjusted by {amount:+d} to {result.balance}. "
                                f"Reason: {form.cleaned_data['reason']}"
                            ),
                        )
                    messages.success(
                        request,
                        f"Balance of {user} adjusted by {amount:+d}; it is now {result.balance}.",
                    )
                    return HttpResponseRedirect(
                        reverse("admin:users_botuser_change", args=[user.pk])
                    )
                if result is not None:
                    form.add_error(
                        "amount",
                        f"The balance is only {result.balance}, so at most {result.balance} "
                        "bonuses can be taken away.",
                    )
                    user.balance = result.balance
        else:
            form = BalanceAdjustForm(initial={"request_token": uuid.uuid4().hex})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust the balance of {user}",
            "opts": self.opts,
            "original": user,
            "form": form,
        }
        return TemplateResponse(request, "admin/users/botuser/adjust_balance.html", context)

    def save_model(self, request, obj, form, change) -> None:
        """Write only the fields the operator changed: never a stale balance."""
        if change:
            if form.changed_data:
                obj.save(update_fields=form.changed_data)
        else:
            super().save_model(request, obj, form, change)
        if obj.pk:
            user_state_changed(user_id=obj.pk, project_id=obj.project_id)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        user_state_changed(user_id=form.instance.pk, project_id=form.instance.project_id)


@admin.register(UserVariable)
class UserVariableAdmin(ProjectScopedAdmin):
    project_path = "user__project"
    form = UserVariableForm
    list_display = ("user", "key", "value", "updated_at")
    search_fields = ("key", "user__username", "user__telegram_id")
    list_filter = ("user__project",)
    autocomplete_fields = ("user",)

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        user_state_changed(user_id=obj.user_id, project_id=obj.user.project_id)

    def delete_model(self, request, obj) -> None:
        user_id, project_id = obj.user_id, obj.user.project_id
        super().delete_model(request, obj)
        user_state_changed(user_id=user_id, project_id=project_id)

    def delete_queryset(self, request, queryset) -> None:
        owners = set(queryset.values_list("user_id", "user__project_id"))
        super().delete_queryset(request, queryset)
        for user_id, project_id in owners:
            user_state_changed(user_id=user_id, project_id=project_id)


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


# The POS/CRM API's screens (API keys, earn rules, cashiers, purchases, holds) and
# payments, registered here so the admin site sees them.
from users import admin_payments, admin_pos  # noqa: E402, F401
