"""Media files: operators upload photos and files once, message steps use them by number.

The upload is checked (type, size, for photos the picture's first bytes) before
anything is stored, by the same rules as ``botplatform.media``; a refusal is shown on
the form in plain words. After the upload only the title can change: a different
file is a new upload (each bot's Telegram ``file_id`` belongs to the old bytes).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from botplatform.admin_scoping import ProjectScopedAdmin
from botplatform.conversation import MEDIA_KINDS
from botplatform.media import KIND_RULES, media_kind_limit, media_upload_check
from botplatform.models import MediaFile


def _kind_help() -> str:
    parts = []
    for kind in MEDIA_KINDS:
        endings, _ = KIND_RULES[kind]
        limit = media_kind_limit(kind)
        size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
        parts.append(f"{kind}: {', '.join(endings) or 'any type'}, up to {size}")
    return "; ".join(parts) + "."


class MediaFileForm(forms.ModelForm):
    kind = forms.ChoiceField(
        label="What it is",
        choices=[(kind, kind.capitalize()) for kind in MEDIA_KINDS],
        help_text=_kind_help(),
    )

    class Meta:
        model = MediaFile
        fields = ("project", "kind", "title", "file")
        help_texts = {
            "file": "Uploaded to Telegram once per bot when a step first sends it.",
            "title": "Empty: the file's name.",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "title" in self.fields:
            self.fields["title"].required = False

    def clean(self) -> dict:
        data = super().clean()
        upload = data.get("file")
        if self.instance.pk or upload is None or "kind" not in data:
            return data
        head = upload.read(16)
        upload.seek(0)
        problems = media_upload_check(
            kind=data["kind"], name=upload.name or "", size=upload.size, head=head
        )
        if problems:
            raise ValidationError({"file": problems})
        if not (data.get("title") or "").strip():
            data["title"] = (upload.name or "file")[:200]
        return data


@admin.register(MediaFile)
class MediaFileAdmin(ProjectScopedAdmin):
    """Photos and files for message steps: ``"media": {"type": "photo", "file": <number>}``."""

    form = MediaFileForm
    list_display = ("number", "title", "kind", "size_text", "project", "created_at")
    list_filter = ("kind",)
    search_fields = ("title",)
    list_select_related = ("project",)

    @admin.display(description='Number (use as "file")', ordering="pk")
    def number(self, obj: MediaFile):
        return format_html("<code>{}</code>", obj.pk)

    @admin.display(description="Size", ordering="size")
    def size_text(self, obj: MediaFile) -> str:
        return (
            f"{obj.size / 1024 / 1024:.1f} MB"
            if obj.size >= 1024 * 1024
            else f"{obj.size // 1024 + 1} KB"
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:  # a different file is a new upload
            return ("project", "kind", "file", "content_type", "size", "created_at")
        return ()

    def get_fields(self, request, obj=None):
        if obj is not None:
            return ("title", "project", "kind", "file", "content_type", "size", "created_at")
        return ("project", "kind", "title", "file")

    def save_model(self, request, obj: MediaFile, form, change: bool) -> None:
        if not change:
            upload = form.cleaned_data["file"]
            obj.size = upload.size
            obj.content_type = (getattr(upload, "content_type", "") or "")[:100]
        super().save_model(request, obj, form, change)
