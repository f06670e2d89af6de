"""``manage.py createapikey --project SLUG --scopes read,accrue,redeem [--name NAME]``:
a new API key for the project, printed once (only its hash is stored)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from botplatform.models import Project
from users.apikeys import SCOPES, ApiKeyInvalid, apikey_create


class Command(BaseCommand):
    help = "Create an API key for a project and print it once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="The project's slug.")
        parser.add_argument("--scopes", required=True, help=f"Comma-separated: {','.join(SCOPES)}")
        parser.add_argument("--name", default="", help="What uses the key, e.g. 'Till 3'.")

    def handle(self, *args, project: str, scopes: str, name: str, **options) -> None:
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project with the slug {project!r}")
        try:
            new = apikey_create(project=found, name=name or "API key", scopes=scopes)
        except ApiKeyInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(
            f"API key {new.api_key.prefix}… for {found.slug} "
            f"(scopes: {','.join(new.api_key.scopes)}). Shown once; store it now:"
        )
        self.stdout.write(new.plain)
