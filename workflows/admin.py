from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from workflows.engine.validation import WorkflowValidationError, triggers_problems
from workflows.models import ExecutionStepLog, Workflow, WorkflowExecution, WorkflowVersion
from workflows.services import workflow_publish, workflow_restore_version, workflow_validate_for


def _errors_html(errors) -> str:
    return format_html(
        "<ul>{}</ul>",
        format_html_join(
            "", "<li><b>{}</b>: {}</li>", ((e.step or "workflow", e.message) for e in errors)
        ),
    )


class WorkflowForm(forms.ModelForm):
    class Meta:
        model = Workflow
        fields = (
            "project",
            "name",
            "slug",
            "description",
            "triggers",
            "draft",
            "is_active",
            "priority",
        )

    def clean_triggers(self):
        """Triggers take effect on save, so they are checked here, not on publish."""
        triggers = self.cleaned_data.get("triggers")
        problems = triggers_problems(triggers)
        if problems:
            raise forms.ValidationError([str(problem) for problem in problems])
        return triggers


@admin.register(Workflow)
class WorkflowAdmin(ProjectScopedAdmin):
    form = WorkflowForm
    list_display = ("name", "project", "slug", "is_active", "priority", "published_version")
    list_filter = ("project", "is_active")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("draft_check", "published_version", "created_at", "updated_at")
    list_select_related = ("project", "published_version")
    actions = ("publish_drafts",)

    @admin.display(description="draft check")
    def draft_check(self, obj: Workflow) -> str:
        """What publishing the draft would say, before the operator tries."""
        if obj.pk is None:
            return "-"
        try:
            workflow_validate_for(workflow=obj)
        except WorkflowValidationError as exc:
            return format_html("Not publishable yet:{}", _errors_html(exc.errors))
        return "The draft is valid and can be published."

    @admin.action(description="Publish the draft of the selected workflows", permissions=["change"])
    def publish_drafts(self, request, queryset) -> None:
        for workflow in queryset.select_related("published_version"):
            try:
                version = workflow_publish(workflow=workflow, published_by=request.user)
            except WorkflowValidationError as exc:
                self.message_user(
                    request,
                    format_html(
                        "“{}” was not published:{}", workflow.name, _errors_html(exc.errors)
                    ),
                    messages.ERROR,
                )
                continue
            self.message_user(
                request,
                f"“{workflow.name}” is live as version {version.number}.",
                messages.SUCCESS,
            )


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Published versions are immutable; an old one can be made live again."""

    project_path = "workflow__project"
    list_display = ("workflow", "number", "is_live", "published_by", "published_at", "note")
    list_filter = ("workflow__project",)
    search_fields = ("workflow__name", "checksum")
    list_select_related = ("workflow", "published_by")
    actions = ("restore",)

    @admin.display(boolean=True, description="live")
    def is_live(self, obj: WorkflowVersion) -> bool:
        return obj.workflow.published_version_id == obj.pk

    def has_restore_permission(self, request) -> bool:
        return request.user.has_perm("workflows.change_workflow")

    @admin.action(
        description="Restore the selected version (publish it again)", permissions=["restore"]
    )
    def restore(self, request, queryset) -> None:
        for version in queryset.select_related("workflow"):
            live = workflow_restore_version(version=version, restored_by=request.user)
            self.message_user(
                request,
                f"“{version.workflow.name}” version {version.number} is live again "
                f"(as version {live.number}). Conversations in flight keep their version.",
                messages.SUCCESS,
            )


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
        "wait_until",
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
