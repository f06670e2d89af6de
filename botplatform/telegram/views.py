"""The webhook endpoint Telegram calls: authenticate, record, handle, answer fast."""

from __future__ import annotations

import hmac
import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from django_ratelimit.decorators import ratelimit

from botplatform.models import Bot
from botplatform.telegram.dispatch import update_process

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_NO_SECRET = "-" * 64  # compared against when the bot is unknown, to keep timing flat


def _webhook_rate(group: str, request: HttpRequest) -> str:
    return settings.TELEGRAM_WEBHOOK_RATE


def _webhook_key(group: str, request: HttpRequest) -> str:
    return str(request.resolver_match.kwargs.get("bot_id", ""))


@csrf_exempt
@require_POST
@ratelimit(group="telegram_webhook", key=_webhook_key, rate=_webhook_rate, block=False)
def telegram_webhook(request: HttpRequest, bot_id: int) -> HttpResponse:
    """200 for handled, duplicate or malformed (logged) updates; 403 for a wrong secret.

    Telegram retries anything but 2xx, so garbage is acknowledged (and logged) rather
    than retried forever; only a failure to record the update answers 503, so that
    Telegram delivers it again (the unique update_id makes that safe).
    """
    if getattr(request, "limited", False):
        return JsonResponse({"ok": False, "error": "rate limited"}, status=429)
    bot = Bot.objects.filter(pk=bot_id, is_active=True).only("pk", "webhook_secret").first()
    given = request.headers.get(SECRET_HEADER, "")
    expected = bot.webhook_secret if bot is not None else _NO_SECRET
    if not hmac.compare_digest(given.encode(), expected.encode()) or bot is None:
        logger.warning("Webhook for bot %s: wrong or missing secret token; rejected", bot_id)
        return JsonResponse({"ok": False}, status=403)
    try:
        update = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        logger.warning("Webhook for bot %s: body is not JSON; skipped", bot_id)
        return JsonResponse({"ok": True})
    if not isinstance(update, dict):
        logger.warning("Webhook for bot %s: update is not an object; skipped", bot_id)
        return JsonResponse({"ok": True})
    try:
        update_process(bot_id=bot.pk, update=update)
    except Exception:
        logger.exception("Webhook for bot %s: update could not be recorded", bot_id)
        return JsonResponse({"ok": False}, status=503)
    return JsonResponse({"ok": True})
