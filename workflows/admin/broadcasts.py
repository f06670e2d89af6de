"""Broadcasts: compose with a segment, confirm the recipients, send, follow progress."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from botplatform import roles
from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from workflows import broadcasts as broadcast_services
from workflows.models import (
    Broadcast,
    BroadcastDelivery,
)


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
