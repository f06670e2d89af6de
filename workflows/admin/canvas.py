"""The visual editor (canvas) screens of a workflow, and the templates gallery.

Thin views over ``workflows.canvas`` and ``workflows.canvas_gallery``: the page, its
JSON endpoints (draft read/save with conflicts, live checks, message preview) and
the gallery. Mixed into :class:`workflows.admin.workflow.WorkflowAdmin`.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from botplatform import roles
from botplatform.admin_scoping import projects_for
from workflows.canvas import (
    CanvasConflict,
    CanvasPayloadError,
    canvas_check,
    canvas_payload_parse,
    canvas_registry,
    canvas_save,
    canvas_state,
    canvas_vocabulary,
    message_preview,
)
from workflows.canvas_gallery import UnknownTemplate, gallery_add, gallery_templates
from workflows.engine.validation import WorkflowValidationError
from workflows.models import Workflow

PREVIEW_MAX = 64 * 1024


def _problem(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


class CanvasViews:
    """The canvas page and its endpoints (needs ``_workflow`` and ``_context``)."""

    def canvas_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("gallery/", view(self.gallery_view), name="workflows_workflow_gallery"),
            path(
                "<path:object_id>/canvas/draft/",
                view(self.canvas_draft_view),
                name="workflows_workflow_canvas_draft",
            ),
            path(
                "<path:object_id>/canvas/check/",
                view(self.canvas_check_view),
                name="workflows_workflow_canvas_check",
            ),
            path(
                "<path:object_id>/canvas/preview/",
                view(self.canvas_preview_view),
                name="workflows_workflow_canvas_preview",
            ),
            path(
                "<path:object_id>/canvas/", view(self.canvas_view), name="workflows_workflow_canvas"
            ),
        ]

    def canvas_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The workflow's main editing page: drag, connect, edit in the side panel."""
        workflow = self._workflow(request, object_id, change=False)
        can_change = self.has_change_permission(request, workflow)
        project_id = workflow.project_id
        simulate = roles.may(request.user, roles.SIMULATE, project_id=project_id)
        config = {
            "workflow": {"id": workflow.pk, "name": workflow.name, "slug": workflow.slug},
            "state": canvas_state(workflow),
            "registry": canvas_registry(),
            "vocabulary": canvas_vocabulary(project_id=project_id),
            "workflows": self._workflow_slugs(workflow),
            "can_change": can_change,
            "urls": {
                "draft": reverse("admin:workflows_workflow_canvas_draft", args=[workflow.pk]),
                "check": reverse("admin:workflows_workflow_canvas_check", args=[workflow.pk]),
                "preview": reverse("admin:workflows_workflow_canvas_preview", args=[workflow.pk]),
                "publish": reverse("admin:workflows_workflow_publish", args=[workflow.pk])
                + "?from=canvas",
                "simulator": (
                    reverse("admin:workflows_simulator", args=[project_id])
                    + f"?workflow={workflow.pk}"
                    if simulate
                    else ""
                ),
            },
        }
        context = self._context(
            request,
            f"“{workflow.name}”: visual editor",
            original=workflow,
            can_change=can_change,
            can_simulate=simulate,
            config=config,
        )
        return TemplateResponse(request, "admin/workflows/workflow/canvas.html", context)

    def canvas_draft_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the draft, layout and revision. POST: save them over that revision."""
        workflow = self._workflow(request, object_id, change=request.method == "POST")
        if request.method != "POST":
            return JsonResponse(canvas_state(workflow))
        try:
            payload = canvas_payload_parse(request.body)
        except CanvasPayloadError as exc:
            return _problem(f"Not saved: {exc}.")
        try:
            state = canvas_save(workflow_id=workflow.pk, payload=payload, saved_by=request.user)
        except CanvasConflict as conflict:
            return JsonResponse(
                {
                    "error": conflict.message(),
                    "conflict": {
                        "by": conflict.by,
                        "at": conflict.at,
                        "revision": conflict.revision,
                    },
                },
                status=409,
            )
        except WorkflowValidationError as exc:
            return _problem("Not saved: " + "; ".join(str(error) for error in exc.errors))
        return JsonResponse(state)

    def canvas_check_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Publishing's checks, per step: GET the saved draft, POST a draft being edited."""
        workflow = self._workflow(request, object_id, change=False)
        definition, triggers = workflow.draft, workflow.triggers
        if request.method == "POST":
            try:
                payload = canvas_payload_parse(request.body)
            except CanvasPayloadError as exc:
                return _problem(f"Cannot check: {exc}.")
            definition, triggers = payload.definition, payload.triggers
        return JsonResponse(
            canvas_check(workflow=workflow, definition=definition, triggers=triggers)
        )

    def canvas_preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """A message as a sample user sees it (the real template renderer)."""
        workflow = self._workflow(request, object_id, change=False)
        text, buttons, names = request.GET.get("text", "Hello {{ user.first_name }}!"), [], []
        if request.method == "POST":
            if len(request.body) > PREVIEW_MAX:
                return _problem("The message is too long to preview.")
            try:
                data = json.loads(request.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                return _problem("The preview needs JSON: {text, buttons}.")
            if not isinstance(data, dict):
                return _problem("The preview needs JSON: {text, buttons}.")
            text, buttons, names = data.get("text"), data.get("buttons"), data.get("vars")
        return JsonResponse(
            message_preview(
                project_id=workflow.project_id, text=text, buttons=buttons, variables=names
            )
        )

    def gallery_view(self, request: HttpRequest) -> HttpResponse:
        """Ready-made workflows: one click adds one as a new draft, then the canvas opens."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        projects = list(projects_for(request.user, roles.ADD, Workflow))
        if not projects:
            raise PermissionDenied
        if request.method == "POST":
            chosen = request.POST.get("project", "")
            project = next((p for p in projects if str(p.pk) == chosen), None)
            if project is None:
                messages.error(request, "Choose one of your projects.")
            else:
                try:
                    workflow = gallery_add(project_id=project.pk, key=request.POST.get("key", ""))
                except UnknownTemplate:
                    messages.error(request, "There is no such template.")
                else:
                    messages.success(
                        request,
                        f"“{workflow.name}” added as a draft: edit it, then publish it.",
                    )
                    return redirect("admin:workflows_workflow_canvas", workflow.pk)
        context = self._context(
            request,
            "Start from a template",
            templates=[
                {"key": key, **template, "steps": len(template["definition"]["steps"])}
                for key, template in gallery_templates().items()
            ],
            projects=projects,
        )
        return TemplateResponse(request, "admin/workflows/workflow/gallery.html", context)
