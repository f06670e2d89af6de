from __future__ import annotations

import logging

from botplatform.logging import RedactSecretsFilter, redact
from botplatform.models import mask_secret

TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"


def test_redact_masks_tokens_in_urls_and_text():
    text = f"POST https://api.telegram.org/bot{TOKEN}/sendMessage failed"
    assert TOKEN not in redact(text)
    assert "123456789:***" in redact(text)


def test_log_filter_masks_message_args_and_exceptions():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s", (TOKEN,), None)
    try:
        raise RuntimeError(f"bad {TOKEN}")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactSecretsFilter().filter(record) is True
    assert TOKEN not in record.getMessage()
    assert TOKEN not in record.exc_text


def test_mask_secret_keeps_only_id_and_tail():
    masked = mask_secret(TOKEN)
    assert masked.startswith("123456789:…")
    assert masked.endswith(TOKEN[-4:])
    assert TOKEN[10:30] not in masked
