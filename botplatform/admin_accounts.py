"""Staff accounts in the admin: superusers only, and accounts with history are
deactivated instead of deleted.

Deleting an account would blank (or, for admin log entries, delete) every record of
what it did: ledger adjustments, published versions, broadcasts. The delete page of
such an account explains that and offers "Deactivate" instead.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import capfirst

from botplatform.accounts import account_deactivate, account_history_get

User = get_user_model()


def _history_text(history: dict[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in history.items())


class AccountAdmin(UserAdmin):
    """Only superusers see or change accounts: an operator cannot make itself superuser."""

    actions = ("deactivate_accounts",)
    list_display = (*UserAdmin.list_display, "is_active")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def get_urls(self):
        return [
            path(
                "<path:object_id>/deactivate/",
                self.admin_site.admin_view(self.deactivate_view),
                name="auth_user_deactivate",
            ),
            *super().get_urls(),
        ]

    def get_deleted_objects(self, objs, request):
        """Accounts with history are "protected": the bulk delete refuses them too."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for account in objs:
            history = account_history_get(user=account)
            if history:
                protected = [
                    *protected,
                    f"{account}: {_history_text(history)} (deactivate this account instead)",
                ]
        return deleted, counts, perms_needed, protected

    def delete_view(self, request: HttpRequest, object_id, extra_context=None) -> HttpResponse:
        account = self.get_object(request, object_id)
        if account is not None and self.has_delete_permission(request, account):
            history = account_history_get(user=account)
            if history:
                return self._deactivate_page(request, account, history)
        return super().delete_view(request, object_id, extra_context)

    def deactivate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        account = self.get_object(request, object_id)
        if account is None:
            raise Http404("No such account.")
        if not self.has_change_permission(request, account):
            raise PermissionDenied
        if request.method == "POST":
            if account.pk == request.user.pk:
                messages.error(request, "You cannot deactivate your own account.")
            else:
                account_deactivate(user=account, actor=request.user)
                messages.success(
                    request,
                    f"{account} is deactivated: it can no longer sign in, and everything it "
                    "did still shows its name.",
                )
            return HttpResponseRedirect(reverse("admin:auth_user_change", args=[account.pk]))
        return self._deactivate_page(request, account, account_history_get(user=account))

    def _deactivate_page(self, request, account, history: dict[str, int]) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Deactivate {account} instead of deleting it",
            "opts": self.opts,
            "original": account,
            "history": [(capfirst(name), count) for name, count in history.items()],
            "deactivate_url": reverse("admin:auth_user_deactivate", args=[account.pk]),
        }
        return TemplateResponse(request, "admin/auth/user/deactivate.html", context)

    @admin.action(description="Deactivate the selected accounts", permissions=["change"])
    def deactivate_accounts(self, request, queryset) -> None:
        names = []
        for account in queryset.exclude(pk=request.user.pk).filter(is_active=True):
            account_deactivate(user=account, actor=request.user)
            names.append(str(account))
        if names:
            self.message_user(request, f"Deactivated: {', '.join(names)}.", messages.SUCCESS)
        else:
            self.message_user(request, "Nothing to deactivate.", messages.WARNING)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AccountAdmin)
