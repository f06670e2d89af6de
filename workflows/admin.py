"""The operators' admin for workflows: editor, diagram, versions, simulator, broadcasts.

Thin: every view parses the request, checks the operator may touch the object (via
the scoped ``get_object`` / ``project_or_404``, so another project's ids give 404),
calls one service, and renders.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.text import slugify

from botplatform import roles
from botplatform.admin import JSONWhereField
from botplatform.admin_scoping import ProjectScopedAdmin, project_or_404, projects_for
from users.admin import ReadOnlyAdminMixin
from workflows import broadcasts as broadcast_services
from workflows import simulator
from workflows.diagram import diagram_svg
from workflows.editor import editor_context, editor_parse, step_add
from workflows.engine.validation import WorkflowValidationError, triggers_problems
from workflows.models import (
    Broadcast,
    BroadcastDelivery,
    ExecutionStepLog,
    Workflow,
    WorkflowExecution,
    WorkflowVersion,
)
from workflows.publishing import (
    NOTE_MAX,
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
    IN_FLIGHT,
    draft_diff_get,
    in_flight_get,
    interrupted_q,
    version_history_get,
)
from workflows.services import execution_cancel_by_operator, execution_retry
from workflows.version_diff import version_diff

MAX_IMPORT_BYTES = 1_000_000


def _errors_html(errors) -> str:
    return format_html(
        "<ul>{}</ul>",
        format_html_join(
            "", "<li><b>{}</b>: {}</li>", ((e.step or "workflow", e.message) for e in errors)
        ),
    )


def _errors_by_step(errors) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for error in errors:
        grouped.setdefault(error.step, []).append(error.message)
    return grouped


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
        help_texts = {
            "draft": "Advanced: the draft as JSON (docs/workflows.md). The step editor "
            "(“Edit steps”) changes the same draft without JSON.",
            "triggers": "Advanced: the draft's triggers as JSON (the step editor has a form "
            "for them). They start conversations only once the draft is published.",
        }
        field_classes = {"draft": JSONWhereField, "triggers": JSONWhereField}

    def clean_triggers(self):
        """Checked on save already, so a broken trigger never waits for the publish."""
        triggers = self.cleaned_data.get("triggers")
        problems = triggers_problems(triggers)
        if problems:
            raise forms.ValidationError([str(problem) for problem in problems])
        return triggers


class PublishForm(forms.Form):
    note = forms.CharField(
        label="Why are you publishing?",
        max_length=NOTE_MAX,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 70}),
        help_text="Stored with the version and in the workflow's history, e.g. “Autumn "
        "menu: new coffee prices”.",
        error_messages={"required": "Write a short note: why this version goes live."},
    )
    checksum = forms.CharField(widget=forms.HiddenInput)

    def clean_note(self) -> str:
        note = self.cleaned_data["note"].strip()
        if not note:
            raise forms.ValidationError("Write a short note: why this version goes live.")
        return note


class ImportForm(forms.Form):
    project = forms.ModelChoiceField(queryset=None, help_text="The project to import into.")
    file = forms.FileField(
        label="Workflow file",
        help_text="A .json file as written by “Export” or `manage.py exportworkflow`. "
        "A workflow with the same slug is updated, otherwise one is created.",
    )
    publish = forms.BooleanField(
        required=False, help_text="Publish it right away (only if it passes validation)."
    )
    note = forms.CharField(
        label="Publish note",
        required=False,
        max_length=NOTE_MAX,
        help_text="Why it goes live (needed when you publish right away).",
    )

    def __init__(self, *args, projects, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("publish") and not cleaned.get("note", "").strip():
            self.add_error("note", "Write a short note: why this version goes live.")
        return cleaned

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError("The file is larger than 1 MB; is it a workflow file?")
        try:
            data = json.loads(upload.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise forms.ValidationError(f"This is not a JSON file: {exc}") from None
        if not isinstance(data, dict):
            raise forms.ValidationError("The file must hold one workflow (a JSON object).")
        return data


@admin.register(Workflow)
class WorkflowAdmin(ProjectScopedAdmin):
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
            '<a href="{}">Edit steps</a> · <a href="{}">Publish…</a> · <a href="{}">Versions</a>',
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
            return format_html("Not publishable yet:{}", _errors_html(exc.errors))
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
                    step_errors = _errors_by_step(exc.errors)
                else:
                    if action == "publish":
                        try:
                            workflow_validate_for(workflow=workflow)
                        except WorkflowValidationError as exc:
                            step_errors = _errors_by_step(exc.errors)
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
                step_errors = _errors_by_step(exc.errors)
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
                    return redirect("admin:workflows_workflow_editor", workflow.pk)
        else:
            try:
                workflow_validate_for(workflow=workflow)
            except WorkflowValidationError as exc:
                errors = exc.errors
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
                    if workflow_id.isdigit()
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
            chosen_workflow=int(chosen) if chosen.isdigit() else None,
            is_fetch=request.headers.get("x-requested-with") == "fetch",
            **simulator.simulator_view_get(user=user),
        )
        if request.headers.get("x-requested-with") == "fetch":
            return TemplateResponse(request, "admin/workflows/simulator_panel.html", context)
        return TemplateResponse(request, "admin/workflows/simulator.html", context)


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


class BroadcastForm(forms.ModelForm):
    buttons_text = forms.CharField(
        label="Buttons",
        required=False,
        max_length=10_000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="One button per line: “Label | https://link” opens a link, "
        "“Label | data:shop” sends button data to a callback trigger.",
    )

    class Meta:
        model = Broadcast
        fields = (
            "project",
            "bot",
            "title",
            "text",
            "workflow",
            "segment",
            "level",
            "condition",
            "scheduled_at",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rows = self.instance.buttons or []
        self.initial["buttons_text"] = "\n".join(
            f"{b['text']} | {b['url'] if b.get('url') else 'data:' + b.get('data', '')}"
            for row in rows
            for b in row
        )

    def clean_buttons_text(self) -> list:
        rows = []
        for number, line in enumerate(self.cleaned_data["buttons_text"].splitlines(), start=1):
            if not line.strip():
                continue
            label, sep, target = (part.strip() for part in line.partition("|"))
            if not sep or not label or not target:
                raise forms.ValidationError(f"Line {number}: write “Label | https://link”.")
            if target.startswith("data:"):
                data = target[5:].strip()
                if not data or len(data.encode()) > 64 or data.startswith("w:"):
                    raise forms.ValidationError(
                        f"Line {number}: button data is 1-64 bytes and does not start with w:."
                    )
                rows.append([{"text": label, "data": data}])
            elif target.startswith(("https://", "http://", "tg://")):
                rows.append([{"text": label, "url": target}])
            else:
                raise forms.ValidationError(
                    f"Line {number}: “{target}” is neither a link nor button data. Start a "
                    "link with https:// (e.g. https://shop.example), or write data:… for data."
                )
        return rows

    def clean(self):
        cleaned = super().clean()
        project = cleaned.get("project")
        workflow = cleaned.get("workflow")
        if not cleaned.get("text", "").strip() and workflow is None:
            self.add_error("text", "Write the message, or choose a workflow to start.")
        if workflow is not None:
            if project is not None and workflow.project_id != project.pk:
                self.add_error("workflow", "This workflow belongs to another project.")
            elif workflow.published_version_id is None:
                self.add_error("workflow", "Publish this workflow first.")
        bot = cleaned.get("bot")
        if bot is not None and project is not None and bot.project_id != project.pk:
            self.add_error("bot", "This bot belongs to another project.")
        segment = cleaned.get("segment")
        if segment == Broadcast.Segment.LEVEL and not cleaned.get("level", "").strip():
            self.add_error("level", "Name the level, e.g. Gold.")
        if segment == Broadcast.Segment.CONDITION:
            problem = broadcast_services.condition_problem(cleaned.get("condition", ""))
            if problem:
                self.add_error("condition", f"This condition cannot be used: {problem}.")
        if cleaned.get("text"):
            problem = broadcast_services.broadcast_text_problem(cleaned["text"])
            if problem:
                self.add_error("text", problem)
        return cleaned

    def save(self, commit: bool = True):
        self.instance.buttons = self.cleaned_data.get("buttons_text") or []
        return super().save(commit=commit)


@admin.register(Broadcast)
class BroadcastAdmin(ProjectScopedAdmin):
    form = BroadcastForm
    list_display = ("title", "project", "status", "scheduled_at", "progress", "created_at")
    list_filter = ("status", "project")
    search_fields = ("title", "text")
    list_select_related = ("project",)
    readonly_fields = (
        "status",
        "recipients",
        "progress",
        "started_at",
        "finished_at",
        "created_by",
    )
    fieldsets = (
        (None, {"fields": ("project", "bot", "title")}),
        ("Message", {"fields": ("text", "buttons_text", "workflow")}),
        ("Who gets it", {"fields": ("segment", "level", "condition", "recipients")}),
        ("When", {"fields": ("scheduled_at", "status", "started_at", "finished_at")}),
        ("Delivery", {"fields": ("progress", "created_by")}),
    )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and obj.status != Broadcast.Status.DRAFT:
            editable = [n for n in self.form.base_fields if n not in fields]
            return (*fields, *editable, "buttons_text")
        return fields

    @admin.display(description="buttons")
    def buttons_text(self, obj: Broadcast) -> str:
        return ", ".join(b.get("text", "") for row in obj.buttons or [] for b in row) or "-"

    @admin.display(description="recipients")
    def recipients(self, obj: Broadcast) -> str:
        if obj.pk is None:
            return "Saved drafts show how many users they would reach."
        if obj.status != Broadcast.Status.DRAFT and obj.status != Broadcast.Status.SCHEDULED:
            return f"{obj.total} (fixed when sending started)"
        count = len(broadcast_services.broadcast_recipient_ids(broadcast=obj))
        return f"{count} user(s) right now (test users never get broadcasts)"

    @admin.display(description="progress")
    def progress(self, obj: Broadcast) -> str:
        if obj.pk is not None and not obj.total and obj.status == Broadcast.Status.DONE:
            return "Nobody matched the segment when sending started, so nothing was sent."
        if obj.pk is None or not obj.total:
            return "-"
        done = obj.sent + obj.failed + obj.blocked
        if obj.status == Broadcast.Status.SENDING:
            bot = broadcast_services.broadcast_bot(obj)
            if bot is not None and bot.status == bot.Status.UNAUTHORIZED:
                return format_html(
                    "{} of {} sent. <b>Paused: Telegram rejects the token of {}.</b> "
                    "Paste a new token on the bot's page; sending then resumes by itself.",
                    obj.sent,
                    obj.total,
                    bot,
                )
        return format_html(
            '<progress class="broadcast-progress" value="{}" max="{}"></progress> '
            "{} of {} · sent {} · failed {} · blocked {}",
            done,
            obj.total,
            done,
            obj.total,
            obj.sent,
            obj.failed,
            obj.blocked,
        )

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
            super().save_model(request, obj, form, change)
        elif form.changed_data:
            fields = [n for n in form.changed_data if n != "buttons_text"]
            if "buttons_text" in form.changed_data:
                fields.append("buttons")
            obj.save(update_fields=[*fields, "updated_at"])

    def change_view(self, request, object_id, form_url="", extra_context=None):
        broadcast = self.get_object(request, object_id)
        if broadcast is not None and broadcast.status != Broadcast.Status.DRAFT:
            # Nothing left to edit once it is scheduled or sent: no Save buttons.
            extra_context = {
                **(extra_context or {}),
                "show_save": False,
                "show_save_and_continue": False,
                "show_save_and_add_another": False,
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def response_change(self, request, obj):
        if "_send_now" in request.POST:
            # Saved; nothing is sent before the operator has seen whom it reaches.
            return redirect("admin:workflows_broadcast_send", obj.pk)
        if "_schedule" in request.POST:
            if obj.scheduled_at is None or obj.scheduled_at <= timezone.now():
                self.message_user(
                    request, "Set “scheduled at” to a moment in the future first.", messages.ERROR
                )
            elif broadcast_services.broadcast_schedule(broadcast_id=obj.pk, when=obj.scheduled_at):
                self.message_user(
                    request,
                    f"Scheduled for {obj.scheduled_at:%Y-%m-%d %H:%M} UTC.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(request.path)
        if "_cancel_broadcast" in request.POST:
            if broadcast_services.broadcast_cancel(broadcast_id=obj.pk):
                self.message_user(request, "Cancelled; nothing more is sent.", messages.SUCCESS)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="workflows_broadcast_progress",
            ),
            path(
                "<path:object_id>/send/",
                self.admin_site.admin_view(self.send_view),
                name="workflows_broadcast_send",
            ),
            *super().get_urls(),
        ]

    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """ "Send now": how many users it reaches right now, then a confirmed start."""
        broadcast = self.get_object(request, object_id)
        if broadcast is None:
            raise Http404("No such broadcast in your projects.")
        if not (
            self.has_change_permission(request, broadcast)
            and self.role_permits(request, roles.SEND_BROADCAST, broadcast, named=True)
        ):
            raise PermissionDenied
        change_url = reverse("admin:workflows_broadcast_change", args=[broadcast.pk])
        if broadcast.status != Broadcast.Status.DRAFT:
            self.message_user(request, "It was already started.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        if request.method == "POST" and request.POST.get("confirm"):
            if broadcast_services.broadcast_start(broadcast_id=broadcast.pk):
                self.message_user(request, "Sending started.", messages.SUCCESS)
            else:
                self.message_user(request, "It was already started.", messages.WARNING)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Send “{broadcast.title}” now?",
            "opts": self.opts,
            "original": broadcast,
            "recipients": len(broadcast_services.broadcast_recipient_ids(broadcast=broadcast)),
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/workflows/broadcast/send_confirm.html", context)

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """Figures for the progress bar (polled while sending)."""
        broadcast = self.get_object(request, object_id)
        if broadcast is None or not self.has_view_or_change_permission(request, broadcast):
            raise Http404("No such broadcast in your projects.")
        return JsonResponse(
            {
                "status": broadcast.status,
                "total": broadcast.total,
                "sent": broadcast.sent,
                "failed": broadcast.failed,
                "blocked": broadcast.blocked,
            }
        )


@admin.register(BroadcastDelivery)
class BroadcastDeliveryAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    project_path = "broadcast__project"
    list_display = ("broadcast", "user", "status", "error", "claimed_at", "finished_at")
    list_filter = ("status", "broadcast")
    search_fields = ("user__username", "user__telegram_id", "error")
    list_select_related = ("broadcast", "user")
