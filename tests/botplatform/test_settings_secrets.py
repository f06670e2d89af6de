"""Production refuses to start without a token key; development derives one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from botplatform.env import bot_token_keys, trusted_proxy_count
from tests.botplatform.test_settings import _settings_with

PRODUCTION_KEY = "p" + "roduction-secret-key-with-enough-entropy-0123456789abcdefXYZ"


def test_production_refuses_to_start_without_bot_token_keys():
    result = _settings_with({"DEBUG": "false", "SECRET_KEY": PRODUCTION_KEY, "BOT_TOKEN_KEYS": ""})
    assert result.returncode != 0
    assert "BOT_TOKEN_KEYS must be set when DEBUG is off" in result.stderr


def test_a_malformed_key_is_named_without_echoing_it():
    with pytest.raises(ImproperlyConfigured, match="key 2 is not a Fernet key") as info:
        bot_token_keys(
            ["G3QmWLuyRCFjdV-poGVa8dKu0C5v4zBkVDaj7IL05Eg=", "hunter2"],
            secret_key="x",
            debug=False,
        )
    assert "hunter2" not in str(info.value)


def test_development_derives_a_stable_key_from_secret_key():
    first = bot_token_keys([], secret_key="dev", debug=True)
    assert first == bot_token_keys([], secret_key="dev", debug=True)
    assert first != bot_token_keys([], secret_key="other", debug=True)


def test_a_negative_proxy_count_is_refused():
    with pytest.raises(ImproperlyConfigured):
        trusted_proxy_count(-1)
