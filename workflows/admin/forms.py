"""Forms of the workflow screens: the workflow's own fields, publishing, import."""

from __future__ import annotations

import json

from django import forms
from django.utils.html import format_html, format_html_join

from botplatform.admin import JSONWhereField
from workflows.engine.validation import triggers_problems
from workflows.models import Workflow
from workflows.publishing import NOTE_MAX

MAX_IMPORT_BYTES = 1_000_000


def errors_html(errors) -> str:
    return format_html(
        "<ul>{}</ul>",
        format_html_join(
            "", "<li><b>{}</b>: {}</li>", ((e.step or "workflow", e.message) for e in errors)
        ),
    )


def errors_by_step(errors) -> dict[str, list[str]]:
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
