from __future__ import annotations

from django.contrib import admin

from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from workflows.models import ExecutionStepLog, Workflow, WorkflowExecution, WorkflowVersion


@admin.register(Workflow)
class WorkflowAdmin(ProjectScopedAdmin):
    list_display = ("name", "project", "slug", "is_active", "priority", "published_version")
    list_filter = ("project", "is_active")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("published_version", "created_at", "updated_at")
    list_select_related = ("project", "published_version")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Published versions are immutable."""

    project_path = "workflow__project"
    list_display = ("workflow", "number", "published_by", "published_at", "checksum")
    list_filter = ("workflow__project",)
    search_fields = ("workflow__name", "checksum")
    list_select_related = ("workflow", "published_by")


class StepLogInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ExecutionStepLog
    extra = 0
    max_num = 0
    fields = ("created_at", "step", "step_type", "duration_ms", "input", "output", "error")
    readonly_fields = fields


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(ProjectScopedAdmin):
    list_display = (
        "id",
        "workflow",
        "version",
        "user",
        "status",
        "current_step",
        "started_at",
        "updated_at",
    )
    list_filter = ("status", "project", "workflow")
    search_fields = ("session_key", "user__username", "user__telegram_id")
    list_select_related = ("workflow", "version", "user")
    readonly_fields = (
        "project",
        "workflow",
        "version",
        "user",
        "bot",
        "session_key",
        "status",
        "current_step",
        "context",
        "wait_until",
        "error",
        "started_at",
        "updated_at",
        "finished_at",
    )
    inlines = (StepLogInline,)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ExecutionStepLog)
class ExecutionStepLogAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    project_path = "execution__project"
    list_display = ("execution", "step", "step_type", "duration_ms", "error", "created_at")
    list_filter = ("step_type",)
    search_fields = ("step", "error")
    list_select_related = ("execution",)
