"""Log filters shared by every process."""

from __future__ import annotations

import logging
import re

# A Bot API token is "<digits>:<35 url-safe characters>"; it also appears in API URLs
# as ".../bot<token>/method" when a library logs a failed request.
_TOKEN_RE = re.compile(r"(?<!\d)(\d{5,}):([A-Za-z0-9_-]{20,})")


# A webhook secret travels as "secret_token=<value>" in a setWebhook URL, which a
# failed request's exception text repeats.
_SECRET_PARAM_RE = re.compile(r"(secret_token=)[^&\s'\"]+")


def redact(text: str) -> str:
    """Mask every bot token (keeping the bot id for debugging) and webhook secret."""
    text = _TOKEN_RE.sub(lambda m: f"{m.group(1)}:***", text)
    return _SECRET_PARAM_RE.sub(r"\1***", text)


class RedactSecretsFilter(logging.Filter):
    """Masks bot tokens in every log record, including exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
            record.exc_info = None
        return True
