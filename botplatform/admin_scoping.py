"""Tenant scoping for admin classes: an operator sees only their own projects.

Everything an operator can reach goes through one of these: the changelist and
detail querysets, foreign-key and many-to-many choices (forms, raw-id popups,
autocomplete all use the related admin's scoped queryset), and the sidebar filters,
which would otherwise list every project's workflows and versions by name.
"""

from __future__ import annotations

from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from botplatform.models import Project


def projects_for(user) -> QuerySet[Project]:
    """Projects a staff account may manage (all of them for a superuser)."""
    if user.is_superuser:
        return Project.objects.all()
    if not getattr(user, "is_staff", False) or not user.is_active:
        return Project.objects.none()
    return Project.objects.filter(operators=user)


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


def scope_queryset(queryset: QuerySet, user) -> QuerySet:
    """``queryset`` limited to the rows of ``user``'s projects (untouched for superusers)."""
    if user.is_superuser:
        return queryset
    path = project_path_for(queryset.model)
    if path is None:
        return queryset
    if path == "pk":
        return queryset.filter(pk__in=projects_for(user).values("pk"))
    return queryset.filter(**{f"{path}__in": projects_for(user).values("pk")})


def project_or_404(request: HttpRequest, project_id) -> Project:
    """A project of the operator, else 404 (never "forbidden": ids of others leak nothing)."""
    project = projects_for(request.user).filter(pk=project_id).first() if project_id else None
    if project is None:
        raise Http404("No such project in your projects.")
    return project


class ProjectScopedAdmin(admin.ModelAdmin):
    """Limits lists, detail pages, choices and filters to the operator's projects.

    ``project_path`` is the lookup from the model to its Project.
    """

    project_path = "project"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(
            **{f"{self.project_path}__in": projects_for(request.user).values("pk")}
        )

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not request.user.is_superuser and "queryset" not in kwargs:
            kwargs["queryset"] = scope_queryset(
                db_field.related_model._default_manager.all(), request.user
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if not request.user.is_superuser and "queryset" not in kwargs:
            kwargs["queryset"] = scope_queryset(
                db_field.related_model._default_manager.all(), request.user
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)

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
