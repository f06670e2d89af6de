"""The published versions of a workflow: read-only, restored through the workflow's page."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.shortcuts import redirect

from botplatform import roles
from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from workflows.models import WorkflowVersion
from workflows.selectors import IN_FLIGHT


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    """Published versions are immutable; an old one can be made live again."""

    project_path = "workflow__project"
    list_display = (
        "workflow",
        "number",
        "is_live",
        "published_by",
        "published_at",
        "in_flight",
        "note",
    )
    list_filter = ("workflow__project", "workflow")
    search_fields = ("workflow__name", "checksum", "note")
    list_select_related = ("workflow", "published_by")
    actions = ("restore",)

    @admin.display(boolean=True, description="live")
    def is_live(self, obj: WorkflowVersion) -> bool:
        return obj.workflow.published_version_id == obj.pk

    @admin.display(description="conversations in flight", ordering="_in_flight")
    def in_flight(self, obj: WorkflowVersion) -> int:
        return obj._in_flight

    def get_queryset(self, request):
        # Simulator previews of drafts are not versions anyone published.
        return (
            super()
            .get_queryset(request)
            .filter(is_preview=False)
            .annotate(_in_flight=Count("executions", filter=Q(executions__status__in=IN_FLIGHT)))
        )

    def has_restore_permission(self, request) -> bool:
        return self.role_permits(request, roles.RESTORE, named=True)

    @admin.action(
        description="Copy the selected version into the draft (publish it separately)",
        permissions=["restore"],
    )
    def restore(self, request, queryset):
        chosen = list(queryset.values_list("workflow_id", "pk")[:2])
        if len(chosen) != 1:
            self.message_user(request, "Choose one version to copy.", messages.WARNING)
            return None
        return redirect("admin:workflows_workflow_restore", *chosen[0])
