"""Every cache key name and TTL of the platform lives here, and only here.

Nobody formats a Redis key by hand elsewhere: call the key function for the family.
Each cached entity has one read-through getter and one invalidation function, kept
with the code that owns the entity: a user's state (``users.selectors.user_state_get``,
``users.invalidation.user_state_changed``), a session's waiting execution
(``workflows.engine.waiting``: ``waiting_get``, ``waiting_cache_clear``), a project's
trigger table (``workflows.engine.triggers``: ``trigger_candidates``,
``trigger_candidates_invalidate``), a published version
(``workflows.engine.version_cache``; versions are immutable, publishing rewrites it).
"""

from __future__ import annotations

from django.core.cache import cache

# TTLs in seconds. A user's state is never stale by its TTL (a generation token
# decides, see users/selectors.py) and its TTL is not renewed on reads (that cost two
# EXPIREs a message): it only bounds memory and how often an active user reloads.
USER_VARIABLES_TTL = 600
USER_PROFILE_TTL = 600
WORKFLOW_WAITING_TTL = 300
WORKFLOW_VERSION_TTL = 3600
RATE_LIMIT_TTL = 60
LOCK_TTL = 10


def redis_client():
    """The raw redis-py client behind the default cache, or None when the cache is not
    Redis (the embedded in-process default): callers then use their local fallback."""
    from django_redis import get_redis_connection

    try:
        return get_redis_connection("default")
    except NotImplementedError:
        return None


def redis_pipeline():
    """A redis-py pipeline behind the default cache (no MULTI), or None for other
    backends. Commands queued with ``cache.set(..., client=pipeline)`` go out in one
    round trip at ``pipeline.execute()``; that call is not behind the cache's fallback,
    so its caller handles an unreachable Redis itself."""
    client = getattr(cache, "client", None)
    get_client = getattr(client, "get_client", None)
    if get_client is None:
        return None
    return get_client(write=True).pipeline(transaction=False)


def raw_key(key: str, key_prefix: str, version: int) -> str:
    """django-redis KEY_FUNCTION: store keys exactly as named here, no prefix."""
    return key


def user_variables_key(user_id: int, project_id: int) -> str:
    return f"user:{user_id}:{project_id}:variables"


def user_profile_key(user_id: int, project_id: int) -> str:
    return f"user:{user_id}:{project_id}:profile"


def workflow_waiting_key(session_key: str) -> str:
    return f"workflow:waiting:{session_key}"


def workflow_version_key(project_id: int, workflow_id: int) -> str:
    return f"workflow:version:{project_id}:{workflow_id}"


def rate_limit_key(kind: str, identifier: str | int, window: str | int) -> str:
    return f"rate_limit:{kind}:{identifier}:{window}"


def lock_key(resource: str, resource_id: str | int) -> str:
    return f"lock:{resource}:{resource_id}"


# --- Telegram --------------------------------------------------------------------


def telegram_lease_key(bot_id: int) -> str:
    """Which runner polls this bot (value: the runner's name); valid while that
    runner's :func:`telegram_runner_key` lives (botplatform/telegram/leases.py)."""
    return f"telegram:lease:{bot_id}"


def telegram_runner_key(holder: str) -> str:
    """Set while a runner lives (TTL = the lease TTL, renewed every TTL/3)."""
    return f"telegram:runner:{holder}"


def telegram_runners_key() -> str:
    """Sorted set of live `runbot --all` runners (score: last heartbeat, ms)."""
    return "telegram:runners"


def telegram_bots_changed_key() -> str:
    """Counter bumped after a bot or project is saved: `runbot --all` rediscovers."""
    return "telegram:bots:changed"


def rate_limit_user_key(project_id: int, telegram_id: int) -> str:
    """GCRA TAT (a string, ms) of one user's incoming updates in a project.

    Named apart from the sorted sets of the sliding-window log it replaced, so a
    runner of either version never reads the other's type (WRONGTYPE)."""
    return rate_limit_key("user", f"{project_id}:{telegram_id}", "60s:tat")


def rate_limit_notice_key(project_id: int, telegram_id: int) -> str:
    """Set while a rate-limited user has already been told to wait (one notice only)."""
    return rate_limit_key("notice", f"{project_id}:{telegram_id}", "60s")


def rate_limit_bot_send_key(bot_id: int) -> str:
    """GCRA TAT of one bot's outgoing messages, shared by every process."""
    return rate_limit_key("bot_send", bot_id, "1s:tat")


def rate_limit_webhook_key(bot_id: int) -> str:
    """GCRA TAT of one bot's webhook requests (``TELEGRAM_WEBHOOK_RATE``)."""
    return rate_limit_key("webhook", bot_id, "tat")


def rate_limit_chat_send_key(bot_id: int, chat_id: int) -> str:
    """GCRA TAT of one bot's outgoing messages to one chat."""
    return rate_limit_key("chat_send", f"{bot_id}:{chat_id}", "window:tat")


def rate_limit_api_key_key(api_key_id: int) -> str:
    """Sliding-window log of one API key's requests (per minute), shared by web workers."""
    return rate_limit_key("api_key", api_key_id, "60s")


# --- Loyalty ---------------------------------------------------------------------

# A random token rewritten by every write to a user's state. Cached variables and
# profile carry the token they were built under; a reader that loaded the database
# before a write cannot leave a stale copy behind, because its token no longer
# matches. Outlives the data keys by far, so a token never comes back.
USER_STATE_GENERATION_TTL = 86400


def user_state_generation_key(user_id: int, project_id: int) -> str:
    return f"user:{user_id}:{project_id}:generation"


# --- Performance -----------------------------------------------------------------

# Metrics are counted in each process and flushed here every few seconds (one
# pipeline), so /metrics and the dashboard see every runner, web and Celery process.
METRICS_SERIES_TTL = 2 * 3600  # per-minute series: the dashboard shows the last hour


def metrics_counters_key() -> str:
    """Hash of every counter and histogram bucket, field = Prometheus sample name."""
    return "metrics:counters"


def metrics_project_minute_key(project_id: int, minute: int) -> str:
    """Hash of one project's figures in one minute (minute = unix time // 60)."""
    return f"metrics:project:{project_id}:{minute}"


# A project's trigger table (live workflows, their published versions' triggers and
# ids), read by every command or text message. It follows publishes, not saves:
# dropped (now and after commit) when a workflow is published, switched on or off,
# reprioritised, renamed (slug) or deleted, never by a draft save; the short TTL
# bounds the one race left (a reader that loaded the table just before a commit
# writing it back just after the drop).
WORKFLOW_TRIGGERS_TTL = 60


def workflow_triggers_key(project_id: int) -> str:
    return f"workflow:triggers:{project_id}"


# --- Admin ---------------------------------------------------------------------------

# A broadcast sends at most one batch per this many seconds (shared by all workers).
BROADCAST_PACE_TTL = 1


def broadcast_pace_key(broadcast_id: int) -> str:
    return f"broadcast:pace:{broadcast_id}"


# --- Resilience --------------------------------------------------------------------

# Families another process may change (a write there invalidates them). While Redis is
# unreachable they are never kept in one process's memory: they read as misses, so the
# database answers (see botplatform/cache_backend.py).
CACHE_SHARED_PREFIXES = ("user:", "workflow:waiting:")

# Without Redis at all (the embedded default) processes never share memory, so these
# are never cached there; the trigger table too, or a workflow published in the admin
# (runserver) would not start from the bot (runbot) until the TTL ran out.
CACHE_PROCESS_LOCAL_SKIP_PREFIXES = (*CACHE_SHARED_PREFIXES, "workflow:triggers:")

# Deleted from Redis when it comes back after an outage: writes made meanwhile could
# not invalidate them there. (workflow:version entries are immutable per version id
# and checked against the workflow row, so they stay.)
CACHE_RECOVERY_FLUSH_PATTERNS = ("user:*", "workflow:waiting:*")


# --- Telegram file ids of files a bot uploaded -------------------------------------

# The one cache of Telegram's ``file_id`` for a file a bot uploaded (an admin's stored
# file, ``stored:<id>``; a customer card's QR code, its ``Media.cache_name``), so the
# same file sent again by that bot goes by id instead of a new upload. Kept in Redis,
# not the database: an id is only a saving (a lost one costs one upload, a stale one
# Telegram refuses and the transport uploads again), and the cards make one entry per
# customer and bot that a rotated code leaves behind: the TTL clears those without a
# clean-up job. File ids stay valid for the bot; the TTL only bounds the leftovers.
MEDIA_FILE_ID_TTL = 30 * 86400


def media_file_id_key(bot_id: int, name: str) -> str:
    return f"file_id:{bot_id}:{name}"


def media_file_id_get(*, bot_id: int, name: str) -> str | None:
    """This bot's cached file id of the file ``name``, or None (never uploaded)."""
    value = cache.get(media_file_id_key(bot_id, name))
    return value if isinstance(value, str) and value else None


def media_file_id_remember(*, bot_id: int, name: str, file_id: str) -> None:
    """Called by the transport after an upload: Telegram's id for the file."""
    if file_id:
        cache.set(media_file_id_key(bot_id, name), file_id[:300], MEDIA_FILE_ID_TTL)


def media_file_id_forget(*, bot_id: int, name: str) -> None:
    """Telegram no longer knows the id: the next send uploads again."""
    cache.delete(media_file_id_key(bot_id, name))


# --- The cashier menu -------------------------------------------------------------

# Where a cashier is in the menu of one bot (waiting for a card code, an amount, ...).
# Lost state costs a cashier one "/cashier": nothing is written until the last answer.
CASHIER_STATE_TTL = 15 * 60


def cashier_state_key(bot_id: int, telegram_id: int) -> str:
    return f"cashier:{bot_id}:{telegram_id}"


# --- Background work: the Celery queue the health report measures ---------------------
# Celery (kombu's Redis transport) keeps a queue as a Redis list named after the queue,
# newest message pushed on the left: the oldest waiting message is at index -1.


def celery_queue_key(queue: str) -> str:
    return queue
