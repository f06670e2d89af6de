"""Migration operations shared by the apps' migrations.

:class:`AddIndexConcurrentlyOnPostgres` builds an index on a big table without
locking out writes (``CREATE INDEX CONCURRENTLY``) on PostgreSQL, and falls back to a
plain ``CREATE INDEX`` elsewhere (SQLite, the embedded default, where tables are small
and the statement cannot run concurrently). The migration using it must set
``atomic = False``: PostgreSQL refuses a concurrent build inside a transaction.
"""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations.operations import AddIndex


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    """``AddIndexConcurrently`` on PostgreSQL, ``AddIndex`` on any other database."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
