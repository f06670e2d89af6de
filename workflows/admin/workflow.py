"""The workflow screens: list and change page, step editor, versions, publishing,
restore, import and export, the simulator."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Max
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.text import slugify

from botplatform import roles
from botplatform.admin_scoping import ProjectScopedAdmin, project_or_404, projects_for
from workflows import simulator
from workflows.admin.canvas import CanvasViews
from workflows.admin.forms import (
    ImportForm,
    PublishForm,
    WorkflowForm,
    errors_by_step,
    errors_html,
)
from workflows.diagram import diagram_svg
from workflows.editor import editor_context
from workflows.editor_form import editor_parse, step_add
from workflows.engine.validation import WorkflowValidationError, workflow_warnings
from workflows.models import (
    Workflow,
    WorkflowVersion,
)
from workflows.publishing import (
    DraftChanged,
    DraftConflict,
    draft_checksum,
    draft_has_unpublished_changes,
    draft_is_published,
    workflow_draft_save,
    workflow_export,
    workflow_import,
    workflow_publish,
    workflow_restore_version,
    workflow_validate_for,
)
from workflows.selectors import (
    draft_diff_get,
    in_flight_get,
    version_history_get,
)
from workflows.version_diff import version_diff


@admin.register(Workflow)
class WorkflowAdmin(CanvasViews, ProjectScopedAdmin):
    form = WorkflowForm
    list_display = (
        "name",
        "project",
        "slug",
        "is_active",
        "priority",
        "published_version",
        "tools",
    )
    list_filter = ("project", "is_active")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = (
        "draft_check",
        "diagram",
        "published_version",
        "created_at",
        "updated_at",
    )
    list_select_related = ("project", "published_version__workflow")
    actions = ("publish_drafts",)
    fieldsets = (
        (None, {"fields": ("project", "name", "slug", "description", "is_active", "priority")}),
        ("The draft", {"fields": ("draft_check", "diagram", "published_version")}),
        (
            "Advanced: edit as JSON",
            {"classes": ("collapse",), "fields": ("triggers", "draft")},
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    # --- Pages of the change view ---------------------------------------------------

    @admin.display(description="")
    def tools(self, obj: Workflow) -> str:
        return format_html(
            '<a href="{}">Edit on the canvas</a> · <a href="{}">Edit steps (form)</a> · '
            '<a href="{}">Publish…</a> · <a href="{}">Versions</a>',
            reverse("admin:workflows_workflow_canvas", args=[obj.pk]),
            reverse("admin:workflows_workflow_editor", args=[obj.pk]),
            reverse("admin:workflows_workflow_publish", args=[obj.pk]),
            reverse("admin:workflows_workflow_versions", args=[obj.pk]),
        )

    @admin.display(description="draft check")
    def draft_check(self, obj: Workflow) -> str:
        """What publishing the draft would say, before the operator tries."""
        if obj.pk is None:
            return "-"
        try:
            workflow_validate_for(workflow=obj)
        except WorkflowValidationError as exc:
            return format_html("Not publishable yet:{}", errors_html(exc.errors))
        return "The draft is valid and can be published."

    @admin.display(description="diagram of the draft")
    def diagram(self, obj: Workflow) -> str:
        if obj.pk is None:
            return "-"
        return format_html('<div class="diagram-box">{}</div>', diagram_svg(obj.draft))

    @admin.action(
        description="Review and publish the draft of the selected workflow",
        permissions=["publish"],
    )
    def publish_drafts(self, request, queryset):
        """Publishing shows the changes and asks for a note: one workflow at a time."""
        chosen = list(queryset.values_list("pk", flat=True)[:2])
        if len(chosen) != 1:
            self.message_user(
                request,
                "Choose one workflow: publishing shows its changes and asks for a note.",
                messages.WARNING,
            )
            return None
        return redirect("admin:workflows_workflow_publish", chosen[0])

    def save_model(self, request, obj, form, change) -> None:
        """Write only what changed: a draft-only edit keeps users' trigger table cached."""
        if change and form.changed_data:
            obj.save(update_fields=[*form.changed_data, "updated_at"])
        elif not change:
            super().save_model(request, obj, form, change)

    # --- Custom URLs ----------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="workflows_workflow_import"),
            *self.canvas_urls(),
            path("simulator/", view(self.simulator_index_view), name="workflows_simulator_index"),
            path(
                "simulator/<int:project_id>/",
                view(self.simulator_view),
                name="workflows_simulator",
            ),
            path(
                "<path:object_id>/editor/", view(self.editor_view), name="workflows_workflow_editor"
            ),
            path(
                "<path:object_id>/versions/",
                view(self.versions_view),
                name="workflows_workflow_versions",
            ),
            path(
                "<path:object_id>/publish/",
                view(self.publish_view),
                name="workflows_workflow_publish",
            ),
            path(
                "<path:object_id>/restore/<int:version_id>/",
                view(self.restore_view),
                name="workflows_workflow_restore",
            ),
            path(
                "<path:object_id>/export/", view(self.export_view), name="workflows_workflow_export"
            ),
            *super().get_urls(),
        ]

    def _workflow(self, request: HttpRequest, object_id: str, *, change: bool) -> Workflow:
        workflow = self.get_object(request, object_id)
        if workflow is None:
            raise Http404("No such workflow in your projects.")
        allowed = (
            self.has_change_permission(request, workflow)
            if change
            else self.has_view_or_change_permission(request, workflow)
        )
        if not allowed:
            raise PermissionDenied
        return workflow

    def _context(self, request: HttpRequest, title: str, **extra) -> dict:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            **extra,
        }

    def _workflow_slugs(self, workflow: Workflow) -> list[str]:
        return list(
            Workflow.objects.filter(project_id=workflow.project_id)
            .order_by("slug")
            .values_list("slug", flat=True)
        )

    def editor_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Steps as forms; saving changes the draft, "Publish" creates a version."""
        workflow = self._workflow(request, object_id, change=request.method == "POST")
        can_change = self.has_change_permission(request, workflow)
        definition, triggers = workflow.draft, workflow.triggers
        field_errors: dict[str, str] = {}
        step_errors: dict[str, list[str]] = {}
        conflict, expected = False, None
        if request.method == "POST":
            action = request.POST.get("_action", "save")
            parsed = editor_parse(request.POST, draft=definition, triggers=triggers)
            definition, triggers, field_errors = parsed.definition, parsed.triggers, parsed.errors
            if action == "add_step":
                definition, new_id = step_add(
                    definition,
                    step_type=request.POST.get("new_type", "message"),
                    step_id=request.POST.get("new_id", "").strip(),
                )
            expected = parse_datetime(request.POST.get("_updated_at", ""))
            if not field_errors:
                try:
                    workflow_draft_save(
                        workflow=workflow,
                        definition=definition,
                        triggers=triggers,
                        expected_updated_at=expected,
                    )
                except DraftConflict:
                    messages.error(
                        request,
                        "Someone else saved this workflow after you opened it, so your changes "
                        "were not saved (they are still in the form below). Copy what you need, "
                        "then reload the page to see the current draft.",
                    )
                    conflict = True
                except WorkflowValidationError as exc:
                    step_errors = errors_by_step(exc.errors)
                else:
                    if action == "publish":
                        try:
                            workflow_validate_for(workflow=workflow)
                        except WorkflowValidationError as exc:
                            step_errors = errors_by_step(exc.errors)
                            messages.error(
                                request,
                                "The draft is saved but cannot be published yet: fix the "
                                "problems marked in red beside their steps.",
                            )
                        else:
                            # Going live is a separate, confirmed step with a note.
                            return redirect("admin:workflows_workflow_publish", workflow.pk)
                    else:
                        note = "Draft saved."
                        if action == "add_step":
                            asked = request.POST.get("new_id", "").strip()
                            note = f"Step “{new_id}” added."
                            if asked and asked != new_id:
                                note += (
                                    f" (“{asked}” was taken or is not a valid name: use "
                                    "letters, digits, _ or -.)"
                                )
                        messages.success(request, note)
                        return redirect("admin:workflows_workflow_editor", workflow.pk)
            else:
                messages.error(request, "Nothing was saved: please correct the fields in red.")
        else:
            try:
                workflow_validate_for(workflow=workflow)
            except WorkflowValidationError as exc:
                step_errors = errors_by_step(exc.errors)
        context = self._context(
            request,
            f"Edit “{workflow.name}”",
            original=workflow,
            can_change=can_change,
            # After a conflict the form keeps the old stamp: saving again needs a reload.
            updated_at=(expected if conflict and expected else workflow.updated_at).isoformat(),
            diagram=diagram_svg(definition),
            draft_valid=not step_errors and not field_errors,
            unpublished=draft_has_unpublished_changes(workflow),
            **editor_context(
                definition=definition,
                triggers=triggers,
                workflows=self._workflow_slugs(workflow),
                errors=field_errors,
                step_errors=step_errors,
            ),
        )
        return TemplateResponse(request, "admin/workflows/workflow/editor.html", context)

    def versions_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Who published what, when and why, the changes, conversations in flight."""
        workflow = self._workflow(request, object_id, change=False)
        context = self._context(
            request,
            f"Versions of “{workflow.name}”",
            original=workflow,
            rows=version_history_get(workflow=workflow),
            draft_checksum=draft_checksum(workflow),
            unpublished=draft_has_unpublished_changes(workflow),
            can_change=self.has_change_permission(request, workflow),
        )
        return TemplateResponse(request, "admin/workflows/workflow/versions.html", context)

    def publish_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Review the draft against the live version, write a note, confirm: it goes live.

        The page carries the checksum of the draft it shows; if the draft changed
        meanwhile, nothing is published and the new changes are shown instead.
        """
        workflow = self._workflow(request, object_id, change=True)
        if not self.role_permits(request, roles.PUBLISH, workflow, named=True):
            raise PermissionDenied
        form = PublishForm(initial={"checksum": draft_checksum(workflow)})
        errors = []
        if request.method == "POST":
            form = PublishForm(request.POST)
            if form.is_valid():
                try:
                    version = workflow_publish(
                        workflow=workflow,
                        published_by=request.user,
                        note=form.cleaned_data["note"],
                        expected_checksum=form.cleaned_data["checksum"],
                    )
                except DraftChanged:
                    messages.error(
                        request,
                        "Someone changed the draft while you were reviewing it, so nothing "
                        "was published. Review the changes below again.",
                    )
                    workflow.refresh_from_db()
                    form = PublishForm(
                        initial={**form.cleaned_data, "checksum": draft_checksum(workflow)}
                    )
                except WorkflowValidationError as exc:
                    errors = exc.errors
                else:
                    messages.success(
                        request,
                        f"“{workflow.name}” is live as version {version.number}. "
                        "Conversations in flight finish on the version they started.",
                    )
                    for warning in workflow_warnings(version.definition):
                        messages.warning(request, f"Check: {warning}")
                    back = "canvas" if request.GET.get("from") == "canvas" else "editor"
                    return redirect(f"admin:workflows_workflow_{back}", workflow.pk)
        else:
            try:
                workflow_validate_for(workflow=workflow)
            except WorkflowValidationError as exc:
                errors = exc.errors
            for warning in workflow_warnings(workflow.draft):
                messages.warning(request, f"Check: {warning}")
        top = workflow.versions.filter(is_preview=False).aggregate(top=Max("number"))["top"]
        context = self._context(
            request,
            f"Publish “{workflow.name}”",
            original=workflow,
            form=form,
            errors=errors,
            diff=draft_diff_get(workflow=workflow),
            in_flight=in_flight_get(workflow=workflow),
            unchanged=draft_is_published(workflow),
            next_number=(top or 0) + 1,
        )
        return TemplateResponse(request, "admin/workflows/workflow/publish.html", context)

    def restore_view(self, request: HttpRequest, object_id: str, version_id: int) -> HttpResponse:
        """Copy an old version into the draft; warn first if that loses unpublished work.

        Never goes live: users keep the live version until someone publishes.
        """
        workflow = self._workflow(request, object_id, change=True)
        if not self.role_permits(request, roles.RESTORE, workflow, named=True):
            raise PermissionDenied
        version = WorkflowVersion.objects.filter(
            workflow=workflow, pk=version_id, is_preview=False
        ).first()
        if version is None:
            raise Http404("No such version of this workflow.")
        live = workflow.published_version
        checksum = draft_checksum(workflow)
        unpublished = draft_has_unpublished_changes(workflow)
        if checksum == version.checksum:
            messages.info(request, f"The draft already is version {version.number}.")
            return redirect("admin:workflows_workflow_versions", workflow.pk)
        if request.method == "POST" and (request.POST.get("confirm") or not unpublished):
            try:
                workflow_restore_version(
                    version=version,
                    restored_by=request.user,
                    expected_checksum=request.POST.get("checksum") or None,
                )
            except DraftChanged:
                messages.error(
                    request,
                    "The draft changed while you were deciding, so it was not replaced. "
                    "Look at the warning again.",
                )
                return redirect("admin:workflows_workflow_restore", workflow.pk, version.pk)
            live_note = f"version {live.number}" if live else "nothing (not published yet)"
            messages.success(
                request,
                f"Version {version.number} is now in the draft. Users still get {live_note}: "
                "review the draft and publish it when it is ready.",
            )
            return redirect("admin:workflows_workflow_editor", workflow.pk)
        context = self._context(
            request,
            f"Copy version {version.number} of “{workflow.name}” into the draft?",
            original=workflow,
            version=version,
            unpublished=unpublished,
            checksum=checksum,
            lost=version_diff(
                workflow.draft, workflow.triggers, version.definition, version.triggers
            ),
        )
        return TemplateResponse(request, "admin/workflows/workflow/restore.html", context)

    def export_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = self._workflow(request, object_id, change=False)
        body = json.dumps(workflow_export(workflow=workflow), indent=2, ensure_ascii=False)
        response = HttpResponse(body + "\n", content_type="application/json; charset=utf-8")
        filename = slugify(workflow.slug) or "workflow"
        response["Content-Disposition"] = f'attachment; filename="{filename}.json"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        projects = projects_for(request.user, roles.IMPORT)
        errors = []
        if request.method == "POST":
            form = ImportForm(request.POST, request.FILES, projects=projects)
            if form.is_valid():
                try:
                    workflow, version = workflow_import(
                        project_id=form.cleaned_data["project"].pk,
                        data=form.cleaned_data["file"],
                        publish=form.cleaned_data["publish"],
                        published_by=request.user,
                        note=form.cleaned_data["note"].strip(),
                    )
                except WorkflowValidationError as exc:
                    errors = exc.errors
                    form.add_error(None, "The file was not imported; nothing was changed.")
                except (TypeError, ValueError) as exc:
                    form.add_error("file", f"The file cannot be imported: {exc}")
                else:
                    note = f" and published as version {version.number}" if version else ""
                    messages.success(request, f"“{workflow.name}” imported{note}.")
                    return redirect("admin:workflows_workflow_change", workflow.pk)
        else:
            form = ImportForm(projects=projects, initial={"project": projects.first()})
        context = self._context(request, "Import a workflow", form=form, errors=errors)
        return TemplateResponse(request, "admin/workflows/workflow/import.html", context)

    # --- Simulator --------------------------------------------------------------------

    def simulator_index_view(self, request: HttpRequest) -> HttpResponse:
        if not self.role_permits(request, roles.SIMULATE, named=True):
            raise PermissionDenied
        projects = list(projects_for(request.user, roles.SIMULATE))
        if len(projects) == 1:
            return redirect("admin:workflows_simulator", projects[0].pk)
        context = self._context(request, "Chat simulator: choose a project", projects=projects)
        return TemplateResponse(request, "admin/workflows/simulator_index.html", context)

    def simulator_view(self, request: HttpRequest, project_id: int) -> HttpResponse:
        """Talk to the project's published workflows as a test user, never via Telegram."""
        project = project_or_404(request, project_id)
        if not roles.may(request.user, roles.SIMULATE, project_id=project.pk):
            raise PermissionDenied
        user = simulator.simulator_user_get(project_id=project.pk, operator=request.user)
        simulator.simulator_catch_up()
        if request.method == "POST":
            action = request.POST.get("action", "send")
            if action == "reset":
                simulator.simulator_reset(user=user)
                user = simulator.simulator_user_get(project_id=project.pk, operator=request.user)
            elif action == "start":
                choice = request.POST.get("workflow", "")
                draft = choice.startswith("draft:")
                workflow_id = choice.removeprefix("draft:")
                workflow = (
                    Workflow.objects.filter(project=project, pk=int(workflow_id))
                    .select_related("published_version")
                    .first()
                    if workflow_id.isascii() and workflow_id.isdigit()
                    else None
                )
                if workflow is None or (not draft and workflow.published_version is None):
                    messages.error(request, "Choose a workflow of this project.")
                else:
                    try:
                        simulator.simulator_start(
                            user=user, workflow=workflow, draft=draft, operator=request.user
                        )
                    except WorkflowValidationError as exc:
                        simulator.simulator_notice(
                            user=user,
                            text=f"The draft of “{workflow.name}” cannot run yet: "
                            + "; ".join(str(error) for error in exc.errors),
                        )
            elif action == "language":
                if not simulator.simulator_language_set(
                    user=user, code=request.POST.get("language", "")
                ):
                    messages.error(request, "This project does not speak that language.")
            elif action == "press":
                try:
                    message_id = int(request.POST.get("message_id", ""))
                except ValueError:
                    message_id = None
                simulator.simulator_send(
                    user=user, data=request.POST.get("data", ""), message_id=message_id
                )
            else:
                simulator.simulator_send(user=user, text=request.POST.get("text", ""))
            if request.headers.get("x-requested-with") != "fetch":
                return redirect("admin:workflows_simulator", project.pk)
        workflows = list(
            Workflow.objects.filter(project=project)
            .select_related("published_version")
            .order_by("-priority", "name")  # the main menu first, not alphabetical
        )
        chosen = request.GET.get("workflow", "")
        context = self._context(
            request,
            f"Chat simulator: {project}",
            project=project,
            test_user=user,
            workflows=workflows,
            chosen_workflow=int(chosen) if chosen.isascii() and chosen.isdigit() else None,
            is_fetch=request.headers.get("x-requested-with") == "fetch",
            **simulator.simulator_view_get(user=user),
            **simulator.simulator_languages(user),
        )
        if request.headers.get("x-requested-with") == "fetch":
            return TemplateResponse(request, "admin/workflows/simulator_panel.html", context)
        return TemplateResponse(request, "admin/workflows/simulator.html", context)
