"""manage.py importworkflow FILE --project SLUG [--publish --note TEXT]"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from botplatform.models import Project
from workflows.engine.validation import WorkflowValidationError
from workflows.publishing import workflow_import


class Command(BaseCommand):
    help = "Create or update a workflow from a JSON file (see docs/workflows.md)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="Path to the workflow JSON file ('-' for stdin).")
        parser.add_argument("--project", required=True, help="Slug of the project.")
        parser.add_argument(
            "--publish",
            action="store_true",
            help="Validate and publish it (definition and triggers) as a new version. "
            "Without it only the draft changes; users keep the live version.",
        )
        parser.add_argument(
            "--note",
            default="",
            help="Why it is published (stored on the version). Default: the file's name.",
        )

    def handle(self, *args, file: str, project: str, publish: bool, note: str, **options) -> None:
        try:
            target = Project.objects.get(slug=project)
        except Project.DoesNotExist:
            raise CommandError(f"There is no project with the slug '{project}'.") from None
        try:
            raw = self.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CommandError(f"{file} is not valid JSON: {exc}") from None
        try:
            workflow, version = workflow_import(
                project_id=target.pk,
                data=data,
                publish=publish,
                note=note.strip() or f"imported from {Path(file).name if file != '-' else 'stdin'}",
            )
        except WorkflowValidationError as exc:
            lines = "\n".join(f"  - {error}" for error in exc.errors)
            raise CommandError(f"{file} was not imported:\n{lines}") from None
        message = f"Imported workflow '{workflow.slug}' into project '{target.slug}'"
        if version is not None:
            message += f" and published version {version.number}"
        else:
            message += " (the draft only: publish it to make it live)"
        self.stdout.write(self.style.SUCCESS(message + "."))
