"""Short-lived mutual exclusion across processes: ``lock:{resource}:{id}`` in Redis.

A lock answers "is somebody already doing this?" quickly (a second "spend" press gets
"operation already in progress"). It is never the last line of defence: it expires
after ``LOCK_TTL`` seconds and Redis may be gone, so the data it protects must also
be guarded by database row locks and constraints.

Acquire is ``SET key token NX PX ttl`` with a random token per holder; release is a
Lua compare-and-delete, so a holder whose lock expired (and was taken by someone
else) can never release the new holder's lock.

When Redis is unreachable, :func:`redis_lock` falls back to a PostgreSQL advisory lock
on the same key (``_fallback_lock``), so "in progress" keeps working; Redis is tried
again on the next call, so nothing needs a restart when it comes back. While Redis is down the shared circuit
breaker (``botplatform/breaker.py``) makes the Redis attempt fail at once instead of
after a socket timeout.

PostgreSQL advisory locks of the platform, each family under its own name below, so
no number appears anywhere else and two families can never take each other's locks:

- :data:`SESSION_LOCK_SEED`: a conversation (session) lock, one bigint key per
  session (:func:`session_lock`, :func:`sessions_lock_sql`), held until commit;
- :data:`JOURNAL_CLAIM_NAMESPACE`: a claim on a journal row (``TelegramUpdate``),
  the two-int form ``(namespace, row key)``, held by the processing connection;
- :data:`USER_SPEND_NAMESPACE`: a user's "spend in progress" lock, the two-int form
  ``(namespace, user key)``, tried (never waited for) inside the spend's one statement
  (:func:`user_spend_lock_try_sql`) and held until its transaction ends;
- :func:`advisory_lock`: the fallback of :func:`redis_lock`, one bigint key hashed
  from the ``lock:*`` key.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from botplatform.cache import LOCK_TTL, lock_key, redis_client

logger = logging.getLogger(__name__)

# Seed of ``hashtextextended(session key, seed)``: a session's lock is one bigint key.
SESSION_LOCK_SEED = 7411
# First half of a journal row's two-int claim key ``(namespace, claim key)``.
JOURNAL_CLAIM_NAMESPACE = 7467
# Second half: the row's id folded into an int (``dispatch.claim_key`` in Python).
JOURNAL_CLAIM_KEY_MODULUS = 2_147_483_647


# First half of a user's "spend in progress" lock ``(namespace, user key)``; the
# second half is the user's id folded into an int (:func:`user_spend_lock_key`). Two
# users whose ids differ by a multiple of the modulus share a lock: at worst a rare
# "in progress" answer, never a wrong balance (the row lock decides that).
USER_SPEND_NAMESPACE = 7489
USER_SPEND_KEY_MODULUS = 2_147_483_647


def journal_claim_key_sql(column: str) -> str:
    """``dispatch.claim_key`` in SQL, for a statement that claims a row it has just
    inserted (its id known only there). ``%`` doubled: the statement has parameters."""
    return f"({column} %% {JOURNAL_CLAIM_KEY_MODULUS})::int"


def user_spend_lock_key(user_id: int) -> tuple[int, int]:
    """The two-int advisory lock key of a user's spend lock (what the statement of
    :func:`user_spend_lock_try_sql` tries), for a caller that holds it from Python."""
    return USER_SPEND_NAMESPACE, user_id % USER_SPEND_KEY_MODULUS


def user_spend_lock_try_sql(user_id_sql: str) -> str:
    """A boolean SQL expression that tries the spend lock of the user whose id is
    ``user_id_sql`` (a placeholder or column): true if this transaction now holds it
    (or already did: the lock is re-entrant), false at once if another does.

    Transaction-scoped (``pg_try_advisory_xact_lock``): released by commit or
    rollback, so neither a crash nor an aborted transaction can leave it behind, and
    nothing needs releasing (no round trip). ``%`` doubled: the statement has
    parameters."""
    return (
        f"pg_try_advisory_xact_lock({USER_SPEND_NAMESPACE}, "
        f"({user_id_sql} %% {USER_SPEND_KEY_MODULUS})::int)"
    )


# One programme-figures rollup at a time (analytics.rollups): a second one skips.
ROLLUP_LOCK = "analytics:rollup"

# KEYS[1] = lock key, ARGV[1] = the holder's token. Deletes only our own lock.
_RELEASE_SCRIPT = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class LockNotAcquired(Exception):
    """Another holder has the lock: the caller should answer "in progress"."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"{key} is held by another operation")


def _redis():
    """The raw redis-py client; without Redis (the embedded default) the database lock
    stands in, exactly as during an outage."""
    import redis.exceptions

    client = redis_client()
    if client is None:
        raise redis.exceptions.ConnectionError("the cache is not Redis")
    return client


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "Redis cannot be reached" (not "the lock is taken")."""
    import redis.exceptions

    errors: list[type[BaseException]] = [
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ]
    try:
        from django_redis.exceptions import ConnectionInterrupted

        errors.append(ConnectionInterrupted)
    except ImportError:  # pragma: no cover - django-redis is a requirement
        pass
    return tuple(errors)


def lock_acquire(key: str, *, ttl: float = LOCK_TTL) -> str | None:
    """Try once to take ``key`` for ``ttl`` seconds; return the holder's token or None.

    Low level: prefer :func:`redis_lock`. The token is what proves ownership on release.
    """
    if ttl <= 0:
        raise ValueError(f"a lock TTL must be positive, got {ttl!r}")
    token = secrets.token_hex(16)
    taken = _redis().set(key, token, nx=True, px=max(1, int(ttl * 1000)))
    return token if taken else None


def lock_release(key: str, token: str) -> bool:
    """Release ``key`` if ``token`` still owns it; False if it expired or changed hands."""
    client = _redis()
    script = client.register_script(_RELEASE_SCRIPT)
    return bool(script(keys=[key], args=[token], client=client))


def advisory_lock_id(key: str) -> int:
    """A stable signed 64-bit id for ``key`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def advisory_lock(key: str) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock on ``key`` for the block, or raise LockNotAcquired.

    Never waits. Inside a transaction the lock is transaction-scoped (released at commit
    or rollback, so an aborted transaction can never leave it behind); in autocommit it
    is session-scoped and released at the end of the block. It has no TTL, but a dead
    holder's connection (even after SIGKILL) drops it. On other databases the block
    runs unguarded: callers keep their own guards (row locks, constraints, keys).
    """
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        yield
        return
    lock_id = advisory_lock_id(key)
    scoped_to_transaction = connection.in_atomic_block
    function = "pg_try_advisory_xact_lock" if scoped_to_transaction else "pg_try_advisory_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [lock_id])
        taken = cursor.fetchone()[0]
    if not taken:
        raise LockNotAcquired(key)
    try:
        yield
    finally:
        if not scoped_to_transaction:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
            except DatabaseError:
                logger.warning("could not release advisory lock %s; its session drops it", key)


@contextmanager
def _fallback_lock(key: str) -> Iterator[None]:
    """Redis is unreachable: hold a PostgreSQL advisory lock on ``key`` instead."""
    # Not a warning per call: the breaker logs the outage once (botplatform/breaker.py).
    logger.debug("Redis unreachable; %s held as a PostgreSQL advisory lock", key)
    with advisory_lock(key):
        yield


@contextmanager
def redis_lock(resource: str, resource_id: object, *, ttl: float = LOCK_TTL) -> Iterator[None]:
    """Hold ``lock:{resource}:{resource_id}`` for the block, or raise LockNotAcquired.

    Never waits: a taken lock means the same operation is already running. The lock
    expires after ``ttl`` seconds even if the holder dies; release is token-checked.
    """
    key = lock_key(resource, resource_id)
    unavailable = _unavailable_errors()
    try:
        token = lock_acquire(key, ttl=ttl)
    except unavailable:
        token = None
        fallback = True
    else:
        fallback = False
        if token is None:
            raise LockNotAcquired(key)

    if fallback:
        with _fallback_lock(key):
            yield
        return

    try:
        yield
    finally:
        try:
            if not lock_release(key, token):
                logger.warning("%s expired before its holder finished (ttl %ss)", key, ttl)
        except unavailable:
            logger.debug("Redis unreachable; %s will expire on its own", key)


# --- Conversation (session) locks -----------------------------------------------------


def _session_lock_key(session_key: str) -> str:
    return f"workflow-session:{session_key}"


def session_lock(session_key: str) -> None:
    """Serialise everything that touches one session's executions (until commit).

    A PostgreSQL transaction-level advisory lock: released by commit or rollback,
    never leaked, and independent of Redis being up. SQLite (the embedded default)
    serialises writers on its own. Waits for the holder.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))",
            [_session_lock_key(session_key), SESSION_LOCK_SEED],
        )


def sessions_lock_sql(session_keys: list[str]) -> tuple[str, list]:
    """:func:`session_lock` for a whole batch: a SELECT (for the caller to run, or to
    join into one of its statements) taking every lock in a fixed (sorted) order, so
    two batch handlers cannot deadlock on each other. The caller remembers which
    sessions it holds (``workflows.engine.batch.Batch.locked_sessions``) and does not
    take them again.
    """
    keys = [_session_lock_key(key) for key in sorted(set(session_keys))]
    return (
        "SELECT count(pg_advisory_xact_lock(hashtextextended(k, %s))) FROM unnest(%s::text[]) AS k",
        [SESSION_LOCK_SEED, keys],
    )
