"""Bot tokens encrypted at rest (Fernet), findable by a keyed hash, never by prefix.

``settings.BOT_TOKEN_KEYS`` lists Fernet keys, newest first: the first encrypts, all
decrypt (``MultiFernet``), so a key is rotated by putting the new one in front, running
``manage.py tokens_reencrypt`` and then removing the old one (docs/telegram.md).

The column ``Bot.token`` holds ciphertext; the model attribute holds the plain token,
so every ``bot.token`` reader keeps working. Equality is the only lookup: ``token=`` and
``token__in=`` compare an HMAC-SHA256 of the token (``Bot.token_hash``, unique) under
every configured key. Ordering, ranges, prefixes and substrings are refused by the
field itself (``Unsupported lookup``), so no query can serve as a guessing oracle.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import Lookup


class TokenKeyError(ImproperlyConfigured):
    """A stored token does not decrypt with any key in BOT_TOKEN_KEYS."""


@lru_cache(maxsize=4)
def _ciphers(keys: tuple[str, ...]) -> tuple[MultiFernet, tuple[bytes, ...]]:
    fernets = [Fernet(key.encode()) for key in keys]
    digest_keys = tuple(hashlib.sha256(b"bot-token-digest:" + k.encode()).digest() for k in keys)
    return MultiFernet(fernets), digest_keys


def _keys() -> tuple[MultiFernet, tuple[bytes, ...]]:
    keys = tuple(settings.BOT_TOKEN_KEYS)
    if not keys:
        raise ImproperlyConfigured("BOT_TOKEN_KEYS is empty: bot tokens cannot be encrypted.")
    return _ciphers(keys)


def token_encrypt(token: str) -> str:
    return _keys()[0].encrypt(token.encode()).decode()


def token_decrypt(ciphertext: str) -> str:
    """The plain token; memoised per ciphertext, since every update loads its bot.

    A Fernet decryption costs about 0.1 ms (HMAC check + AES); the same ciphertext
    comes back from the database for every update until the token or key changes.
    """
    _keys()  # refuses an empty key list with a clear message
    return _decrypt_cached(tuple(settings.BOT_TOKEN_KEYS), ciphertext)


@lru_cache(maxsize=4096)
def _decrypt_cached(keys: tuple[str, ...], ciphertext: str) -> str:
    try:
        return _ciphers(keys)[0].decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenKeyError(
            "A bot token cannot be decrypted with any key in BOT_TOKEN_KEYS. Was the key "
            "replaced without keeping the old one during rotation? (docs/telegram.md, Secrets)"
        ) from None


def token_digests(token: str) -> list[str]:
    """HMAC-SHA256 of the token under each configured key, newest first."""
    return [hmac.new(key, token.encode(), hashlib.sha256).hexdigest() for key in _keys()[1]]


def token_digest(token: str) -> str:
    return token_digests(token)[0]


class TokenExact(Lookup):
    """``token=<plain>``: compares the keyed hash column, never the ciphertext."""

    lookup_name = "exact"
    prepare_rhs = False

    def _digests(self) -> list[str]:
        values = self.rhs if isinstance(self.rhs, list | tuple | set) else [self.rhs]
        if not all(isinstance(value, str) for value in values):
            # F(), OuterRef() or a subquery would compare ciphertext: never a match.
            raise TypeError("token lookups take the plain token as a string")
        return [d for value in values for d in token_digests(value)]

    def as_sql(self, compiler, connection):
        hash_field = self.lhs.target.model._meta.get_field(self.lhs.target.digest_field)
        lhs_sql, lhs_params = compiler.compile(hash_field.get_col(self.lhs.alias))
        digests = self._digests()
        placeholders = ", ".join(["%s"] * len(digests)) or "NULL"
        return f"{lhs_sql} IN ({placeholders})", [*lhs_params, *digests]


class TokenIn(TokenExact):
    lookup_name = "in"


class EncryptedTokenField(models.TextField):
    """Plain text in Python, Fernet ciphertext in the column; equality lookups only."""

    def __init__(self, *args, digest_field: str = "token_hash", **kwargs) -> None:
        self.digest_field = digest_field
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["digest_field"] = self.digest_field
        return name, path, args, kwargs

    def from_db_value(self, value, expression, connection):
        return value if not value else token_decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value if not value else token_encrypt(value)

    def get_lookup(self, lookup_name):
        if lookup_name == "exact":
            return TokenExact
        if lookup_name == "in":
            return TokenIn
        if lookup_name == "isnull":
            return super().get_lookup(lookup_name)
        return None  # gte, startswith, contains, regex...: "Unsupported lookup"

    def get_transform(self, lookup_name):
        return None


class TokenDigestField(models.CharField):
    """The keyed hash of another field, recomputed on every save (unique, not editable)."""

    def __init__(self, *args, source: str = "token", **kwargs) -> None:
        self.source = source
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs["source"] = self.source
        kwargs.pop("editable", None)
        if kwargs.get("max_length") == 64:
            kwargs.pop("max_length")
        return name, path, args, kwargs

    def pre_save(self, model_instance, add):
        plain = getattr(model_instance, self.source) or ""
        value = token_digest(plain) if plain else ""
        setattr(model_instance, self.attname, value)
        return value

    def get_lookup(self, lookup_name):
        # The hash is compared for equality only; a range on it would still leak bits.
        if lookup_name in {"exact", "in", "isnull"}:
            return super().get_lookup(lookup_name)
        return None

    def get_transform(self, lookup_name):
        return None
