"""The one place that points pyTelegramBotAPI at the Bot API and classifies its errors.

``telebot.apihelper.API_URL`` is a module global ("<base>/bot{0}/{1}"); it is set here
from ``settings.TELEGRAM_API_URL`` so that a self-hosted Bot API server, or the test
double, can stand in. Everything else calls the library through :func:`api`.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from urllib.parse import urlencode

import requests
from django.conf import settings
from requests.cookies import RequestsCookieJar, merge_cookies
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


_FORM = "application/x-www-form-urlencoded"
_SCALARS = (str, int, float)  # bool is an int


def _form_encode(params: dict) -> bytes | None:
    """The params as a form body, byte for byte what requests would encode; None when a
    value is not a plain scalar (requests' own encoder then handles it)."""
    fields = {}
    for key, value in params.items():
        if value is None:
            continue  # requests leaves None out
        if not isinstance(value, _SCALARS):
            return None
        fields[key] = value
    return urlencode(fields).encode("ascii")


@functools.lru_cache(maxsize=4096)
def _url_prepare(url: str) -> str:
    """requests' own URL preparation (IDNA, re-quoting), once per bot token and method."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url


def _request_send(
    method: str, url: str, params=None, files=None, timeout=None, proxies=None
) -> requests.Response:
    """telebot's CUSTOM_REQUEST_SENDER: its call, through this thread's session.

    telebot hands every parameter over as ``params``, which requests would put in the
    query string and then re-quote and re-parse (the text and the JSON keyboard, on
    every send). A POST carries them as a form body instead, which the Bot API takes
    alike, encoded once here; the request is prepared directly rather than through
    ``Session.request``, whose per-call merging of session settings (headers, cookie
    jars, hooks, environment) is the same every time for this fixed session. It still
    goes out through ``Session.send`` (same adapter, pool, proxies, CA bundle, auth,
    redirects and cookies). Uploads, a telebot proxy, or a parameter that is not a
    plain value fall back to ``Session.request`` unchanged.
    """
    origin = url[: url.find("/", url.find("://") + 3)]  # scheme://host[:port]
    session = _session_for(origin)
    body = None
    if method.lower() == "post" and params and not files:
        body = _form_encode(params) or None  # all values None: as requests would
    if files or proxies or (params and method.lower() == "post" and body is None):
        return session.request(
            method, url, params=params, files=files, timeout=timeout, proxies=proxies
        )
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    if body is None and params:
        prepared.prepare_url(url, params)  # a GET's params go in the query, as before
    else:
        prepared.url = _url_prepare(url)
    prepared.prepare_headers(session.headers)
    if session.cookies:  # a server set some (a load balancer's, say): send them back
        prepared.prepare_cookies(merge_cookies(RequestsCookieJar(), session.cookies))
    else:  # nothing to add; preparing an empty jar only costs a scan of it
        prepared._cookies = RequestsCookieJar()
    prepared.prepare_body(body, None)
    if body is not None:
        prepared.headers["Content-Type"] = _FORM
    if session.auth:
        prepared.prepare_auth(session.auth, url)
    return session.send(
        prepared,
        timeout=timeout,
        proxies=session.proxies,
        verify=session.verify,
        cert=session.cert,
        stream=False,
        allow_redirects=True,
    )


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
