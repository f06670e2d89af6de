"""Creating the configured PostgreSQL database when it is missing (the quick start)."""

from __future__ import annotations


class DatabaseMissing(Exception):
    """The database does not exist and could not be created; the message says how."""


def _how(settings_dict: dict) -> str:
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    user = settings_dict.get("USER") or "postgres"
    return f"createdb -h {host} -p {port} -U {user} {settings_dict['NAME']}"


def _connect(settings_dict: dict, dbname: str):
    import psycopg

    return psycopg.connect(
        dbname=dbname,
        host=settings_dict.get("HOST") or None,
        port=settings_dict.get("PORT") or None,
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        connect_timeout=5,
        autocommit=True,
    )


def database_ensure(settings_dict: dict) -> bool:
    """True when the database was created now, False when it existed (or is SQLite).

    Raises :class:`DatabaseMissing` with a one-line message otherwise.
    """
    if "postgresql" not in settings_dict.get("ENGINE", ""):
        return False  # SQLite creates its file itself
    import psycopg
    from psycopg import sql

    name = settings_dict["NAME"]
    try:
        _connect(settings_dict, name).close()
        return False
    except psycopg.OperationalError as exc:
        text = str(exc)
        if "does not exist" not in text or f'"{name}"' not in text:
            host = settings_dict.get("HOST") or "localhost"
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise DatabaseMissing(
                f"Cannot reach PostgreSQL at {host}: {first[:200]} (check DATABASE_URL)."
            ) from None
    try:
        with _connect(settings_dict, "postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        return False  # created in between by someone else
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise DatabaseMissing(
            f"The database {name} does not exist and could not be created ({reason}); "
            f"create it with: {_how(settings_dict)}"
        ) from None
    return True
