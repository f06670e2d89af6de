"""Conversations (executions) and their step logs: filters, cancel and retry."""

from __future__ import annotations

from django.contrib import admin, messages

from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from workflows.models import (
    ExecutionStepLog,
    WorkflowExecution,
    WorkflowVersion,
)
from workflows.selectors import interrupted_q
from workflows.services import execution_cancel_by_operator, execution_retry


class StepLogInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ExecutionStepLog
    extra = 0
    max_num = 0
    fields = ("created_at", "step", "step_type", "duration_ms", "input", "output", "error")
    readonly_fields = fields


class VersionListFilter(admin.RelatedOnlyFieldListFilter):
    """The versions present in the listed rows, named without a query per version
    (a version's name includes its workflow's)."""

    def field_choices(self, field, request, model_admin):
        present = model_admin.get_queryset(request).values(self.field_path)
        versions = WorkflowVersion.objects.filter(pk__in=present).select_related("workflow")
        return [(version.pk, str(version)) for version in versions]


class InterruptedFilter(admin.SimpleListFilter):
    """Interrupted runs are hidden unless asked for (each /start mid-menu makes one)."""

    title = "interrupted conversations"
    parameter_name = "interrupted"

    def lookups(self, request, model_admin):
        return (("show", "Show them too"), ("only", "Only interrupted"))

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Hidden",
        }
        for value, label in self.lookup_choices:
            yield {
                "selected": self.value() == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request, queryset):
        if self.value() == "show":
            return queryset
        if self.value() == "only":
            return queryset.filter(interrupted_q())
        return queryset.exclude(interrupted_q())


@admin.register(WorkflowExecution)
class WorkflowExecutionAdmin(ProjectScopedAdmin):
    list_display = (
        "id",
        "workflow",
        "version",
        "user",
        "status",
        "current_step",
        "wait_until",
        "started_at",
        "updated_at",
    )
    list_filter = (
        "status",
        InterruptedFilter,
        "project",
        "workflow",
        ("version", VersionListFilter),
    )
    search_fields = ("session_key", "user__username", "user__telegram_id", "error")
    list_select_related = ("workflow", "version__workflow", "user")
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
    actions = ("cancel_executions", "retry_executions")

    def has_add_permission(self, request) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Every field is read-only: a Save button would do nothing. Cancel and retry
        # are actions on the list.
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Cancel the selected waiting conversations", permissions=["change"])
    def cancel_executions(self, request, queryset) -> None:
        done = sum(
            execution_cancel_by_operator(
                execution_id=pk, reason=f"cancelled by {request.user.get_username()}"
            )
            for pk in queryset.values_list("pk", flat=True)
        )
        skipped = queryset.count() - done
        self.message_user(request, f"{done} conversation(s) cancelled.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} were not waiting or paused (already finished), so left as they are.",
                messages.WARNING,
            )

    @admin.action(description="Retry the selected failed conversations", permissions=["change"])
    def retry_executions(self, request, queryset) -> None:
        done = sum(execution_retry(execution_id=pk) for pk in queryset.values_list("pk", flat=True))
        skipped = queryset.count() - done
        self.message_user(
            request,
            f"{done} conversation(s) retried from the step that failed.",
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request, f"{skipped} had not failed, so were not retried.", messages.WARNING
            )


@admin.register(ExecutionStepLog)
class ExecutionStepLogAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    project_path = "execution__project"
    list_display = ("execution", "step", "step_type", "duration_ms", "error", "created_at")
    list_filter = ("step_type",)
    search_fields = ("step", "error")
    list_select_related = ("execution__workflow",)


# --- Broadcasts -------------------------------------------------------------------------
