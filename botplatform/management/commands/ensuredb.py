"""manage.py ensuredb: make sure the configured database exists (PostgreSQL).

The quick start runs it before ``migrate``: a DATABASE_URL naming a database that does
not exist yet is created (through the server's ``postgres`` maintenance database),
and when that is not allowed the operator gets one line saying how, not a traceback.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand
from django.db import connection

from botplatform.dbcreate import DatabaseMissing, database_ensure


class Command(BaseCommand):
    help = "Create the PostgreSQL database of DATABASE_URL when it does not exist yet."

    def handle(self, *args, **options) -> None:
        try:
            created = database_ensure(connection.settings_dict)
        except DatabaseMissing as exc:
            self.stderr.write(str(exc))
            sys.exit(2)
        if created:
            self.stdout.write(f"Created the database {connection.settings_dict['NAME']}.")
