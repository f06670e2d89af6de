"""manage.py workflowschema [--write | --check]: docs/workflow.schema.json from the step types."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from workflows.engine.schema import workflow_schema_text

SCHEMA_FILE = Path(settings.BASE_DIR) / "docs" / "workflow.schema.json"


class Command(BaseCommand):
    help = (
        "Print the workflow file's JSON Schema, built from the step types; --write "
        "updates docs/workflow.schema.json, --check fails when that file is stale."
    )

    def add_arguments(self, parser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--write", action="store_true", help=f"Write {SCHEMA_FILE.name}.")
        group.add_argument(
            "--check", action="store_true", help="Exit with an error if the file is stale."
        )

    def handle(self, *args, write: bool, check: bool, **options) -> None:
        text = workflow_schema_text()
        if write:
            SCHEMA_FILE.write_text(text, encoding="utf-8")
            self.stderr.write(f"Wrote {SCHEMA_FILE}.")
        elif check:
            current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.exists() else ""
            if current != text:
                raise CommandError(
                    f"{SCHEMA_FILE} is out of date: run `manage.py workflowschema --write`."
                )
            self.stderr.write(f"{SCHEMA_FILE.name} is up to date.")
        else:
            self.stdout.write(text, ending="")
