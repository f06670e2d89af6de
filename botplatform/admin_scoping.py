"""Tenant scoping for admin classes: an operator sees only their own projects."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from botplatform.models import Project


def projects_for(user) -> QuerySet[Project]:
    """Projects a staff account may manage (all of them for a superuser)."""
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(operators=user)


class ProjectScopedAdmin(admin.ModelAdmin):
    """Limits lists, detail pages and foreign-key choices to the operator's projects.

    ``project_path`` is the lookup from the model to its Project.
    """

    project_path = "project"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.project_path}__operators": request.user}).distinct()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not request.user.is_superuser:
            related = db_field.related_model
            if related is Project:
                kwargs["queryset"] = projects_for(request.user)
            elif hasattr(related, "project"):
                kwargs["queryset"] = related._default_manager.filter(
                    project__operators=request.user
                )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
