"""manage.py exportworkflow --project SLUG --workflow SLUG [--output FILE]"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from workflows.models import Workflow
from workflows.publishing import workflow_export


class Command(BaseCommand):
    help = "Write a workflow's draft (definition and triggers) as JSON, for version control."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="Slug of the project.")
        parser.add_argument("--workflow", required=True, help="Slug of the workflow.")
        parser.add_argument("--output", "-o", help="Write to this file instead of stdout.")

    def handle(self, *args, project: str, workflow: str, output: str | None, **options) -> None:
        try:
            row = Workflow.objects.get(project__slug=project, slug=workflow)
        except Workflow.DoesNotExist:
            raise CommandError(
                f"There is no workflow '{workflow}' in a project with the slug '{project}'."
            ) from None
        text = json.dumps(workflow_export(workflow=row), indent=2, ensure_ascii=False) + "\n"
        if output:
            Path(output).write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {output}.")
        else:
            self.stdout.write(text, ending="")
