"""The one place that points pyTelegramBotAPI at the Bot API and classifies its errors.

``telebot.apihelper.API_URL`` is a module global ("<base>/bot{0}/{1}"); it is set here
from ``settings.TELEGRAM_API_URL`` so that a self-hosted Bot API server, or the test
double, can stand in. Everything else calls the library through :func:`api`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import requests
from django.conf import settings
from requests.utils import get_environ_proxies, get_netrc_auth
from telebot import apihelper

from botplatform.logging import redact

_configured_for: tuple[str, int] | None = None


def api_configure() -> None:
    """Point the library at settings.TELEGRAM_API_URL (idempotent, cheap)."""
    global _configured_for
    base = settings.TELEGRAM_API_URL
    timeout = settings.TELEGRAM_HTTP_TIMEOUT
    if _configured_for == (base, timeout):
        return
    apihelper.API_URL = base + "/bot{0}/{1}"
    apihelper.FILE_URL = base + "/file/bot{0}/{1}"
    apihelper.CONNECT_TIMEOUT = min(timeout, 10)
    apihelper.READ_TIMEOUT = timeout  # getUpdates adds its long-poll timeout on top
    apihelper.CUSTOM_REQUEST_SENDER = _request_send
    _configured_for = (base, timeout)


_sessions = threading.local()


def _session_for(origin: str) -> requests.Session:
    """This thread's keep-alive session to ``origin``, with the environment read once.

    requests consults the environment (proxy variables, ``no_proxy``, CA bundle
    variables, ~/.netrc) on every call when ``trust_env`` is on: ~3 % of a message's
    CPU here. The Bot API host is fixed, so the answer is the same for every call;
    it is worked out once per thread and origin, with requests' own functions,
    and the session then skips the lookups (same proxies, CA bundle and auth).
    """
    session = getattr(_sessions, "session", None)
    if session is not None and _sessions.origin == origin:
        return session
    if session is not None:
        session.close()
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(get_environ_proxies(origin))
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    session.auth = get_netrc_auth(origin)
    _sessions.session, _sessions.origin = session, origin
    return session


def _request_send(method: str, url: str, **kwargs) -> requests.Response:
    """telebot's CUSTOM_REQUEST_SENDER: its call, through this thread's session."""
    origin = url[: url.find("/", url.find("://") + 3)]  # scheme://host[:port]
    return _session_for(origin).request(method, url, **kwargs)


def api():
    """``telebot.apihelper``, configured: call its functions with the token first."""
    api_configure()
    return apihelper


@dataclass(frozen=True, slots=True)
class ApiError:
    """What a failed Bot API call means for the caller."""

    kind: str  # "unauthorized", "forbidden", "retry_after", "server", "network", "bad_request", "conflict"
    code: int | None
    description: str
    retry_after: float = 0.0

    @property
    def transient(self) -> bool:
        return self.kind in {"retry_after", "server", "network"}


def error_classify(exc: BaseException) -> ApiError:
    """Map a library or network exception to an :class:`ApiError` (token-free text)."""
    if isinstance(exc, apihelper.ApiTelegramException):
        code = exc.error_code
        description = redact(str(exc.description))
        params = exc.result_json.get("parameters") or {}
        if code == 429:
            return ApiError("retry_after", code, description, float(params.get("retry_after", 1)))
        if code == 401:
            return ApiError("unauthorized", code, description)
        if code == 403:
            return ApiError("forbidden", code, description)
        if code == 409:
            return ApiError("conflict", code, description)
        if code >= 500:
            return ApiError("server", code, description)
        return ApiError("bad_request", code, description)
    if isinstance(exc, apihelper.ApiException):
        status = getattr(getattr(exc, "result", None), "status_code", None)
        if status == 401:
            return ApiError("unauthorized", status, "Unauthorized")
        if status == 429:
            return ApiError("retry_after", status, "Too Many Requests", 1.0)
        kind = "server" if status is None or status >= 500 else "bad_request"
        return ApiError(kind, status, redact(str(exc))[:300])
    if isinstance(exc, requests.RequestException | ConnectionError | TimeoutError | OSError):
        return ApiError("network", None, redact(f"{type(exc).__name__}: {exc}")[:300])
    return ApiError("bad_request", None, redact(f"{type(exc).__name__}: {exc}")[:300])
