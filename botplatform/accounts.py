"""Staff accounts and their project roles: changes that leave an audit trail.

Role changes and deactivations write an admin log entry (who, when, what). An account
that created anything (ledger adjustments, versions, broadcasts, admin log entries) is
deactivated rather than deleted, so the records keep pointing at their author.
"""

from __future__ import annotations

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from botplatform.models import Membership, Project

# Relations to an account that are not history: access, not authorship.
_NOT_HISTORY = {"botplatform.membership", "auth.group", "auth.permission"}


def membership_roles_get(*, project: Project) -> dict[str, str]:
    """{username: role} of the project's members."""
    return dict(Membership.objects.filter(project=project).values_list("user__username", "role"))


def _role_name(role: str | None) -> str:
    return role.title() if role else "no role"


def membership_changes_log(
    *, actor, project: Project, before: dict[str, str], after: dict[str, str]
) -> list[str]:
    """One admin log entry on the project per added, removed or re-roled member."""
    changes = [
        f"Role of {username}: {_role_name(before.get(username))} → "
        f"{_role_name(after.get(username))}"
        for username in sorted(before.keys() | after.keys())
        if before.get(username) != after.get(username)
    ]
    content_type = ContentType.objects.get_for_model(Project)
    LogEntry.objects.bulk_create(
        [
            LogEntry(
                user_id=actor.pk,
                content_type=content_type,
                object_id=str(project.pk),
                object_repr=str(project)[:200],
                action_flag=CHANGE,
                change_message=change,
            )
            for change in changes
        ]
    )
    return changes


def account_history_get(*, user) -> dict[str, int]:
    """What ``user`` is recorded as the author of: {"bonus transactions": 3, ...}.

    Found by following every relation to the account model, so a new "created_by"
    column counts without a change here.
    """
    history: dict[str, int] = {}
    for relation in get_user_model()._meta.get_fields(include_hidden=True):
        if not (relation.one_to_many and relation.auto_created):
            continue  # "+" relations (created_by) are hidden, hence include_hidden
        model = relation.related_model
        if model._meta.label_lower in _NOT_HISTORY:
            continue
        if model._meta.app_label not in {"botplatform", "users", "workflows", "admin"}:
            continue
        count = model._default_manager.filter(**{relation.field.name: user}).count()
        if count:
            history[str(model._meta.verbose_name_plural)] = count
    return history


def account_deactivate(*, user, actor) -> None:
    """Sign-in stops and every role stops counting; memberships stay for reactivation."""
    with transaction.atomic():
        type(user).objects.filter(pk=user.pk).update(is_active=False)
        LogEntry.objects.create(
            user_id=actor.pk,
            content_type=ContentType.objects.get_for_model(type(user)),
            object_id=str(user.pk),
            object_repr=str(user)[:200],
            action_flag=CHANGE,
            change_message="Deactivated instead of deleted (the account has history).",
        )
    # Sessions of a deactivated account are refused by the auth middleware on their
    # next request (ModelBackend rejects inactive users).
    user.is_active = False
