"""The members section of a project's page: who works on it, in which role.

Owners manage it for their projects; superusers for all. Nobody widens their own
access: a non-superuser never grants or changes the Owner role, never edits or
removes their own membership, and picks accounts by username (the list of all
accounts spans every tenant, so it is shown to superusers only).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from botplatform import roles
from botplatform.models import Membership

Role = Membership.Role


def _protected(membership: Membership, actor) -> bool:
    """Rows a non-superuser may not change or remove: their own, and Owners'."""
    if actor.is_superuser or membership.pk is None:
        return False
    return membership.user_id == actor.pk or membership.role == Role.OWNER


class MembershipForm(forms.ModelForm):
    actor = None  # set per request by the inline

    username = forms.CharField(
        label="Account",
        max_length=150,
        help_text="The login name of an existing staff account. A superuser creates accounts.",
    )

    class Meta:
        model = Membership
        fields = ("role",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        actor = self.actor
        if actor is not None and actor.is_superuser:
            accounts = (
                get_user_model()
                .objects.filter(is_active=True, is_staff=True, is_superuser=False)
                .order_by("username")
                .values_list("username", flat=True)
            )
            self.fields["username"] = forms.ChoiceField(
                label="Account",
                choices=[("", "---------"), *((name, name) for name in accounts)],
                help_text="Staff accounts that are not superusers.",
            )
        if self.instance.pk is not None:
            self.fields["username"].disabled = True
            self.fields["username"].required = False
            self.initial["username"] = self.instance.user.get_username()
            if isinstance(self.fields["username"], forms.ChoiceField):
                self.fields["username"].choices = [(self.initial["username"],) * 2]
        if actor is not None and _protected(self.instance, actor):
            self.fields["role"].disabled = True
        elif actor is not None and not actor.is_superuser:
            self.fields["role"].choices = [c for c in Role.choices if c[0] != Role.OWNER]
        self.fields["role"].help_text = "What this account may do in this project."

    def clean_username(self) -> str:
        if self.instance.pk is not None:
            return self.instance.user.get_username()
        name = self.cleaned_data["username"].strip()
        account = get_user_model().objects.filter(username=name).first()
        if account is None or not account.is_active or not account.is_staff:
            raise ValidationError(
                f"There is no active staff account called “{name}”. Ask a superuser to "
                "create it (with “Staff status” ticked), then add it here."
            )
        if account.is_superuser:
            raise ValidationError(f"“{name}” is a superuser and can already do everything.")
        self.account = account
        return name

    def save(self, commit: bool = True) -> Membership:
        if self.instance.pk is None:
            self.instance.user = self.account
        return super().save(commit=commit)


class MembershipFormSet(forms.BaseInlineFormSet):
    actor = None

    def clean(self) -> None:
        super().clean()
        seen: set[str] = set()
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data:
                continue
            if form in self.deleted_forms:
                if _protected(form.instance, self.actor):
                    raise ValidationError(
                        f"You cannot remove {form.instance.user}: only a superuser removes "
                        "an Owner or your own membership."
                    )
                continue
            name = form.cleaned_data.get("username")
            if not name:
                continue
            if name in seen or (
                form.instance.pk is None
                and self.instance.pk is not None  # a project being added has no members yet
                and Membership.objects.filter(project=self.instance, user__username=name).exists()
            ):
                raise ValidationError(f"“{name}” is already a member; change their role instead.")
            seen.add(name)


class MembershipInline(admin.TabularInline):
    """Members of the project; editable by its owners and by superusers."""

    model = Membership
    form = MembershipForm
    formset = MembershipFormSet
    extra = 0
    fields = ("username", "role", "member_since")
    readonly_fields = ("member_since",)
    verbose_name = "member"
    verbose_name_plural = "members (who may work on this project, and in which role)"

    @admin.display(description="member since")
    def member_since(self, obj: Membership):
        return obj.created_at.date() if obj.created_at else "-"

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        form = type("MembershipForm", (formset.form,), {"actor": request.user})
        formset.form = form
        return type("MembershipFormSet", (formset,), {"actor": request.user})

    # ``obj`` is the project; None when Django asks "in general" (the formset's queryset).

    def _manages(self, request, obj) -> bool:
        if obj is None:
            return roles.may(request.user, roles.MANAGE_MEMBERS, any_project=True)
        return roles.may(request.user, roles.MANAGE_MEMBERS, project_id=obj.pk)

    def has_view_permission(self, request, obj=None) -> bool:
        if obj is None:
            return roles.may(request.user, roles.VIEW, roles.PROJECT, any_project=True)
        return roles.may(request.user, roles.VIEW, roles.PROJECT, project_id=obj.pk)

    def has_add_permission(self, request, obj=None) -> bool:
        # On the add page (obj None) only superusers get here: only they create projects.
        return self._manages(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._manages(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self._manages(request, obj)
