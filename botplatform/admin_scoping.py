"""Tenant scoping for admin classes: an operator sees only their own projects, and in
each of them only what their role allows.

Everything an operator can reach goes through one of these: the changelist and
detail querysets, the add/change/delete/view decisions, foreign-key and
many-to-many choices (forms, raw-id popups, autocomplete all use the related
admin's scoped queryset), actions (run only on rows of projects where the role
allows them) and the sidebar filters, which would otherwise list every project's
workflows and versions by name. What a role allows is decided in
``botplatform.roles``; nothing here grants anything by itself.
"""

from __future__ import annotations

import functools

from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from botplatform import roles
from botplatform.models import Project
from botplatform.roles import projects_for

__all__ = ["ProjectScopedAdmin", "ProjectScopedInline", "project_or_404", "projects_for"]


# Models reached through another model on their way to the project.
_VIA_FIELDS = ("project", "user", "workflow", "execution", "broadcast", "bot")


def project_path_for(model: type[models.Model]) -> str | None:
    """The lookup from ``model`` to its Project ("project", "user__project", ...)."""
    if model is Project:
        return "pk"
    seen: set[type[models.Model]] = set()
    path: list[str] = []
    current = model
    while current not in seen:
        seen.add(current)
        names = {field.name: field for field in current._meta.get_fields()}
        for name in _VIA_FIELDS:
            field = names.get(name)
            if field is None or not getattr(field, "many_to_one", False):
                continue
            path.append(name)
            if field.related_model is Project:
                return "__".join(path)
            current = field.related_model
            break
        else:
            return None
    return None


def project_id_of(obj: models.Model, path: str | None = None) -> int | None:
    """The id of the project ``obj`` belongs to (None when it has none yet)."""
    path = path or project_path_for(type(obj))
    if path is None:
        return None
    if path == "pk":
        return obj.pk
    *via, last = path.split("__")
    for part in via:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return getattr(obj, f"{last}_id", None)


def scope_queryset(queryset: QuerySet, user, project_ids) -> QuerySet:
    """``queryset`` limited to rows of the projects ``project_ids`` (untouched for
    superusers and for models that belong to no project)."""
    if user.is_superuser:
        return queryset
    path = project_path_for(queryset.model)
    if path is None:
        return queryset
    return queryset.filter(**{f"{path}__in": list(project_ids)})


def project_or_404(request: HttpRequest, project_id) -> Project:
    """A project of the operator, else 404 (never "forbidden": ids of others leak nothing)."""
    project = projects_for(request.user).filter(pk=project_id).first() if project_id else None
    if project is None:
        raise Http404("No such project in your projects.")
    return project


class ProjectScopedAdmin(admin.ModelAdmin):
    """Limits lists, pages, choices, actions and filters to what the role allows.

    ``project_path`` is the lookup from the model to its Project ("pk" for Project).
    ``secret_fields`` are shown only where the role may see secrets (bot tokens).
    """

    project_path = "project"
    secret_fields: tuple[str, ...] = ()

    # --- Decisions (all from botplatform.roles) ---------------------------------------

    def role_permits(self, request: HttpRequest, action: str, obj=None, *, named=False) -> bool:
        """``action`` on ``obj`` (or in any project when ``obj`` is None).

        ``named`` actions (publish, adjust balance, ...) are not tied to the model.
        """
        model = None if named else self.model
        if obj is None:
            return roles.may(request.user, action, model, any_project=True)
        return roles.may(
            request.user, action, model, project_id=project_id_of(obj, self.project_path)
        )

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.role_permits(request, roles.VIEW, obj) or self.role_permits(
            request, roles.CHANGE, obj
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.role_permits(request, roles.ADD)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.role_permits(request, roles.CHANGE, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.role_permits(request, roles.DELETE, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return any(self.role_permits(request, action) for action in roles.MODEL_ACTIONS)

    def has_publish_permission(self, request: HttpRequest) -> bool:
        """For actions declared with ``permissions=["publish"]``."""
        return self.role_permits(request, roles.PUBLISH, named=True)

    def _project_ids(self, request: HttpRequest, *actions: str) -> set[int]:
        return {
            pk for action in actions for pk in roles.project_ids(request.user, action, self.model)
        }

    # --- Rows ---------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        visible = self._project_ids(request, roles.VIEW, roles.CHANGE)
        return queryset.filter(**{f"{self.project_path}__in": visible})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """Choices only from projects where the role may add or change this model."""
        if not request.user.is_superuser and "queryset" not in kwargs:
            kwargs["queryset"] = scope_queryset(
                db_field.related_model._default_manager.all(),
                request.user,
                self._project_ids(request, roles.ADD, roles.CHANGE),
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if not request.user.is_superuser and "queryset" not in kwargs:
            kwargs["queryset"] = scope_queryset(
                db_field.related_model._default_manager.all(),
                request.user,
                self._project_ids(request, roles.ADD, roles.CHANGE),
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    # --- Secrets ------------------------------------------------------------------------

    def _secrets_visible(self, request: HttpRequest, obj=None) -> bool:
        if obj is not None:
            return self.role_permits(request, roles.SEE_SECRETS, obj, named=True)
        if request.user.is_superuser:
            return True
        # A list column: only when every listed project lets the role see them.
        return self._project_ids(request, roles.VIEW) <= set(
            roles.project_ids(request.user, roles.SEE_SECRETS)
        )

    def get_fieldsets(self, request: HttpRequest, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if not self.secret_fields or self._secrets_visible(request, obj):
            return fieldsets
        hidden = set(self.secret_fields)
        return [
            (name, {**options, "fields": _without(options["fields"], hidden)})
            for name, options in fieldsets
        ]

    def get_list_display(self, request: HttpRequest):
        columns = super().get_list_display(request)
        if not self.secret_fields or self._secrets_visible(request):
            return columns
        return [column for column in columns if column not in self.secret_fields]

    # --- Actions ------------------------------------------------------------------------

    def get_actions(self, request: HttpRequest):
        """An action that declares no permission changes something: it needs "change"."""
        actions = super().get_actions(request)
        if request.user.is_superuser:
            return actions
        return {
            name: entry
            for name, entry in actions.items()
            if getattr(entry[0], "allowed_permissions", ()) or self.has_change_permission(request)
        }

    def get_action(self, action):
        """The action runs only on selected rows of projects where the role allows it."""
        found = super().get_action(action)
        if found is None:
            return None
        func, name, description = found
        needed = getattr(func, "allowed_permissions", ()) or (roles.CHANGE,)

        @functools.wraps(func)
        def narrowed(modeladmin, request, queryset):
            if not request.user.is_superuser:
                for permission in needed:
                    named = permission not in roles.MODEL_ACTIONS
                    allowed = roles.project_ids(
                        request.user, permission, None if named else self.model
                    )
                    queryset = queryset.filter(**{f"{self.project_path}__in": allowed})
            return func(modeladmin, request, queryset)

        return narrowed, name, description

    def get_list_filter(self, request):
        """Foreign-key filters offer only values present in the operator's rows."""
        filters = super().get_list_filter(request)
        if request.user.is_superuser:
            return filters
        scoped = []
        for item in filters:
            if isinstance(item, str) and _is_relation(self.model, item):
                scoped.append((item, admin.RelatedOnlyFieldListFilter))
            else:
                scoped.append(item)
        return scoped


class ProjectScopedInline:
    """For inlines: the role in the parent object's project decides (mixin, put first)."""

    def _permits(self, request: HttpRequest, action: str, obj) -> bool:
        if request.user.is_superuser:
            return True
        if obj is None:
            return roles.may(request.user, action, self.model, any_project=True)
        return roles.may(request.user, action, self.model, project_id=project_id_of(obj))

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._permits(request, roles.VIEW, obj) or self._permits(request, roles.CHANGE, obj)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._permits(request, roles.ADD, obj)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._permits(request, roles.CHANGE, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._permits(request, roles.DELETE, obj)


def _without(fields, hidden: set[str]) -> tuple:
    kept = []
    for item in fields:
        if isinstance(item, list | tuple):
            row = tuple(name for name in item if name not in hidden)
            if row:
                kept.append(row)
        elif item not in hidden:
            kept.append(item)
    return tuple(kept)


def _is_relation(model: type[models.Model], lookup: str) -> bool:
    current = model
    field = None
    for part in lookup.split("__"):
        try:
            field = current._meta.get_field(part)
        except Exception:
            return False
        if not field.is_relation:
            return False
        current = field.related_model
    return field is not None and field.is_relation
