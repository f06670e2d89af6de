"""The webhook endpoint Telegram calls: authenticate, record, handle, answer fast."""

from __future__ import annotations

import hmac
import json
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from botplatform import ratelimit
from botplatform.bots import webhook_secret_get
from botplatform.cache import rate_limit_webhook_key
from botplatform.env import rate_parse
from botplatform.telegram.batch import update_process
from botplatform.telegram.journal_clean import UpdateRefused

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_NO_SECRET = "-" * 64  # compared against when the bot is unknown, to keep timing flat
# Telegram's largest updates (4,096 characters of text, entities, a quoted message) are
# a few tens of kilobytes; below Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), which
# would otherwise answer a bigger body with its own 400.
MAX_BODY_BYTES = 1_000_000


def _webhook_limited(bot_id: int) -> bool:
    """Over ``TELEGRAM_WEBHOOK_RATE`` for this bot: one script call (GCRA,
    ``botplatform/ratelimit.py``; in-process while Redis is down), where
    django-ratelimit's fixed window took three or four round trips."""
    count, window_ms = rate_parse(settings.TELEGRAM_WEBHOOK_RATE)
    return ratelimit.rate_hit([(rate_limit_webhook_key(bot_id), count, window_ms)]) > 0


@csrf_exempt
@require_POST
def telegram_webhook(request: HttpRequest, bot_id: int) -> HttpResponse:
    """Answers so that Telegram retries only what a retry can fix.

    - 200: handled, a duplicate, or skipped (malformed, unsupported, unrecordable:
      logged, and recorded as ``skipped`` where it has an update_id);
    - 403: wrong secret; 429: over the per-bot rate;
    - 413 / 400: refused, a body over ``MAX_BODY_BYTES`` or nested too deep (logged);
    - 503: only when the database fails, so that Telegram delivers the update again
      (the unique update_id makes that safe). Bad input never gets a 5xx.
    """
    if _webhook_limited(bot_id):
        return JsonResponse({"ok": False, "error": "rate limited"}, status=429)
    try:
        secret = webhook_secret_get(bot_id=bot_id)
    except DatabaseError:
        logger.exception("Webhook for bot %s: the database is unavailable", bot_id)
        return JsonResponse({"ok": False}, status=503)
    given = request.headers.get(SECRET_HEADER, "")
    expected = secret if secret is not None else _NO_SECRET
    if not hmac.compare_digest(given.encode(), expected.encode()) or secret is None:
        logger.warning("Webhook for bot %s: wrong or missing secret token; rejected", bot_id)
        return JsonResponse({"ok": False}, status=403)
    update, refusal = _body_read(request, bot_id)
    if refusal is not None:
        return refusal
    if not isinstance(update, dict):
        logger.warning("Webhook for bot %s: update is not an object; skipped", bot_id)
        return JsonResponse({"ok": True})
    try:
        update_process(bot_id=bot_id, update=update)
    except UpdateRefused as exc:
        logger.warning("Webhook for bot %s: update %s", bot_id, exc)
        return JsonResponse({"ok": False, "error": str(exc)}, status=400)
    except DatabaseError:
        logger.exception("Webhook for bot %s: the database failed; Telegram will retry", bot_id)
        return JsonResponse({"ok": False}, status=503)
    except Exception:
        # Not the database: retrying the same update would fail the same way.
        logger.exception("Webhook for bot %s: update skipped after an unexpected error", bot_id)
    return JsonResponse({"ok": True})


def _body_read(request: HttpRequest, bot_id: int) -> tuple[object, HttpResponse | None]:
    """The JSON body, or the answer that refuses (or skips) it."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    try:
        body = request.body if declared <= MAX_BODY_BYTES else b""
    except RequestDataTooBig:
        declared = MAX_BODY_BYTES + 1
    if declared > MAX_BODY_BYTES or len(body) > MAX_BODY_BYTES:
        logger.warning("Webhook for bot %s: body over %s bytes; refused", bot_id, MAX_BODY_BYTES)
        return None, JsonResponse({"ok": False, "error": "body too large"}, status=413)
    try:
        return json.loads(body), None
    except RecursionError:
        logger.warning("Webhook for bot %s: body nested too deep; refused", bot_id)
        return None, JsonResponse({"ok": False, "error": "nested too deep"}, status=400)
    except (ValueError, UnicodeDecodeError):
        logger.warning("Webhook for bot %s: body is not JSON; skipped", bot_id)
        return None, JsonResponse({"ok": True})
