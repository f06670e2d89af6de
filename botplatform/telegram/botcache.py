"""The bot and project a wave runs with, kept per process and checked in one statement.

Every wave (``batch._wave_run``) needs its bot and project, read inside its
transaction so that an operator's change applies from the next wave. Loading them
through the ORM each time (a joined query compiled anew, two models built, the token
decrypted) was about a seventh of the runner's CPU for a lone update. Here the wave's
one statement (:func:`bot_for_wave`, which also takes the wave's conversation locks)
reads only the two rows' ``xmin``: the id of the transaction that wrote the row's
current version, which every UPDATE changes, however it is made (``save()``, a
queryset ``update()``, raw SQL, another process). While both match what this process
loaded, the loaded objects are current and are used as they are; otherwise they are
loaded again (one more statement) in the same transaction.

The objects are shared by the process's threads: the transport only reads them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from django.db import connection

from botplatform.models import Bot, Project


@dataclass(frozen=True)
class _Loaded:
    versions: tuple[str, str]  # (bot xmin, project xmin) the objects were loaded at
    bot: Bot


_loaded: dict[int, _Loaded] = {}
_lock = threading.Lock()

_VERSIONS_SQL = (
    "SELECT b.xmin::text, p.xmin::text{locks} FROM {bots} AS b "
    "JOIN {projects} AS p ON p.id = b.project_id WHERE b.id = %s"
)


def bot_for_wave(bot_id: int, locks: tuple[str, list] | None = None) -> Bot:
    """The bot with its project, current as of this statement, and (``locks``: a
    SELECT with its parameters, see ``locks.sessions_lock_sql``) the wave's
    conversation locks taken: one statement while nothing changed. Raises
    ``Bot.DoesNotExist`` for a bot that is gone."""
    quote = connection.ops.quote_name
    sql = _VERSIONS_SQL.format(
        locks=f", ({locks[0]})" if locks is not None else "",
        bots=quote(Bot._meta.db_table),
        projects=quote(Project._meta.db_table),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(locks[1] if locks is not None else []), bot_id])
        found = cursor.fetchone()
    if found is None:
        raise Bot.DoesNotExist(f"bot {bot_id} does not exist")
    versions = (found[0], found[1])
    loaded = _loaded.get(bot_id)
    if loaded is not None and loaded.versions == versions:
        return loaded.bot
    bot = Bot.objects.select_related("project").get(pk=bot_id)
    with _lock:
        _loaded[bot_id] = _Loaded(versions=versions, bot=bot)
    return bot


def bots_forget() -> None:
    """Drop every loaded bot (tests; a process that wants a cold start)."""
    with _lock:
        _loaded.clear()
