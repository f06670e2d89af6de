"""API keys: made once (the full key is shown only then), stored as SHA-256, scoped,
revocable, rate-limited per key in Redis, and marked when last used.

A key looks like ``bp_<prefix>_<secret>``: the prefix (``bp_`` and 8 characters) is
stored in clear to tell keys apart; the whole key is hashed. Keys carry 190+ bits
of randomness, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from botplatform.models import Project
from users.models_pos import ApiKey

SCOPES = tuple(ApiKey.Scope.values)
KEY_PREFIX = "bp_"
KEY_MAX_LENGTH = 100
# last_used_at is written at most this often per key (a busy till costs no writes).
LAST_USED_RESOLUTION = timedelta(seconds=60)


class ApiKeyInvalid(ValueError):
    pass


@dataclass(frozen=True)
class NewKey:
    api_key: ApiKey
    plain: str  # shown once, never stored


def key_hash(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def scopes_parse(raw: object) -> list[str]:
    """``"read,accrue"`` or a list → the known scopes, sorted; anything else refused."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise ApiKeyInvalid("scopes must be a comma-separated list")
    scopes = sorted({str(item).strip() for item in items if str(item).strip()})
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise ApiKeyInvalid(
            f"unknown scopes: {', '.join(unknown)[:100]} (known: {', '.join(SCOPES)})"
        )
    if not scopes:
        raise ApiKeyInvalid(f"give at least one scope of {', '.join(SCOPES)}")
    return scopes


def apikey_create(*, project: Project, name: str, scopes: Any, created_by: Any = None) -> NewKey:
    """A new key for ``project``; the plain key is in the result and nowhere else."""
    scopes = scopes_parse(scopes)
    name = (name or "").strip()[:100] or "API key"
    for _attempt in range(5):
        prefix = KEY_PREFIX + secrets.token_hex(4)
        plain = f"{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    project=project,
                    name=name,
                    prefix=prefix,
                    key_hash=key_hash(plain),
                    scopes=scopes,
                    created_by=created_by,
                )
        except IntegrityError:
            continue
        return NewKey(api_key=api_key, plain=plain)
    raise RuntimeError("could not draw a free key prefix; try again")


def apikey_authenticate(plain: str) -> ApiKey | None:
    """The active key ``plain`` is, or None (unknown, malformed or revoked)."""
    if (
        not isinstance(plain, str)
        or not plain.startswith(KEY_PREFIX)
        or len(plain) > KEY_MAX_LENGTH
    ):
        return None
    digest = key_hash(plain)
    api_key = (
        ApiKey.objects.select_related("project")
        .filter(key_hash=digest, revoked_at__isnull=True, project__is_active=True)
        .first()
    )
    if api_key is None or not hmac.compare_digest(api_key.key_hash, digest):
        return None
    return api_key


def apikey_touch(api_key: ApiKey) -> None:
    """Record the use (at most once a minute per key)."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def apikey_revoke(api_key: ApiKey) -> None:
    """Refuse the key from now on (kept for the record)."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
