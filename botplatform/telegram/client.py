"""The one place that points pyTelegramBotAPI at the Bot API and classifies its errors.

``telebot.apihelper.API_URL`` is a module global ("<base>/bot{0}/{1}"); it is set here
from ``settings.TELEGRAM_API_URL`` so that a self-hosted Bot API server, or the test
double, can stand in. Everything else calls the library through :func:`api`.

telebot still builds every call, checks every answer and raises its exceptions; only
the HTTP transport under it is ours (``CUSTOM_REQUEST_SENDER``, telebot's hook): a
plain call goes over one keep-alive ``http.client`` connection per thread, anything
unusual over requests (see :func:`_request_send`).
"""

from __future__ import annotations

import functools
import http.client
import os
import select
import ssl
import threading
import zlib
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import certifi
import requests
from django.conf import settings
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar, merge_cookies
from requests.structures import CaseInsensitiveDict
from requests.utils import (
    default_user_agent,
    get_encoding_from_headers,
    get_environ_proxies,
    get_netrc_auth,
)
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
    _lean_close()
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
    """telebot's CUSTOM_REQUEST_SENDER: its call, through this thread's connection.

    telebot hands every parameter over as ``params``, which requests would put in the
    query string and then re-quote and re-parse (the text and the JSON keyboard, on
    every send). A POST carries them as a form body instead, which the Bot API takes
    alike, encoded once here. The common call (plain values, no upload, no proxy, no
    auth, no cookies) then goes out over :func:`_lean_send`: this thread's own
    keep-alive ``http.client`` connection, without requests' and urllib3's layers
    (about a third of a message's CPU). Anything else goes through this thread's
    requests session, as before: uploads, a telebot proxy or one from the
    environment, ~/.netrc auth, cookies a server set, a parameter that is not a
    plain value.
    """
    origin = url[: url.find("/", url.find("://") + 3)]  # scheme://host[:port]
    session = _session_for(origin)
    post = method.lower() == "post"
    body = None
    if post and params and not files:
        body = _form_encode(params) or None  # all values None: as requests would
    if files or proxies or (params and post and body is None):
        return session.request(
            method, url, params=params, files=files, timeout=timeout, proxies=proxies
        )
    if not (session.proxies or session.auth or session.cookies or session.verify is False):
        query = b""
        if params and not post:
            query = _form_encode(params)  # a GET's params go in the query, as before
        if query is not None:
            return _lean_send(session, method.upper(), url, query, body, timeout)
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


# --- The lean transport: one keep-alive http.client connection per thread ---------
#
# Retrying a call that failed is only safe when the Bot API provably did not take it
# (a sendMessage sent twice is a message the user sees twice). Two cases qualify:
#
# * Before a reused connection carries a request, it is polled: a server that closed
#   it while idle (its keep-alive timeout) has left an end-of-file, or a reset, to
#   read, and the connection is replaced before anything is sent. Nothing is retried
#   here: the request was never written (urllib3 checks its pooled connections alike).
# * The close can still cross the request in flight, in the microseconds between the
#   poll and the write. The request then fails on the REUSED connection with a broken
#   pipe or a reset while being written, or with an end-of-file or a reset before the
#   first byte of the status line (http.client's RemoteDisconnected). A server closes
#   a keep-alive connection only while it is idle, i.e. when it has not read a
#   request on it; one that has read a request answers it (with an error, if need
#   be) before closing. So such a failure means the request was not taken, and it is
#   sent once more, on a fresh connection. A failure on a FRESH connection is never
#   retried (no idle close can explain it), nor is one after any byte of the answer
#   arrived, nor a timeout (the server may be working on the request): those surface
#   as requests' ConnectionError / ReadTimeout, which error_classify calls "network"
#   and the sender's own retry policy handles, as before.

_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _lean_failure(exc: BaseException) -> requests.exceptions.RequestException:
    """Drop the connection; requests' own exception for the failure (telebot passes it
    through and ``error_classify`` calls it a network error)."""
    _lean_close()
    if isinstance(exc, TimeoutError):
        return requests.exceptions.ReadTimeout(exc, request=None)
    return requests.exceptions.ConnectionError(exc, request=None)


_USER_AGENT = default_user_agent()


@functools.lru_cache(maxsize=4096)
def _lean_target(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a Bot API URL, prepared as requests would."""
    parts = urlsplit(_url_prepare(url))
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname or "", port, path


@functools.lru_cache(maxsize=16)
def _ssl_context(cafile: str) -> ssl.SSLContext:
    """Certificates checked against the same CA bundle requests would use; host name
    checked and sent as SNI (create_default_context's defaults)."""
    if os.path.isdir(cafile):
        return ssl.create_default_context(capath=cafile)
    return ssl.create_default_context(cafile=cafile)


def _timeouts(timeout) -> tuple[float | None, float | None]:
    """telebot's ``timeout``: a number, a (connect, read) pair, or None (no limit)."""
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout


def _lean_close() -> None:
    """Close this thread's lean connection, if any (it is opened again when needed)."""
    conn = getattr(_sessions, "conn", None)
    if conn is not None:
        conn.close()
        _sessions.conn = None


def _lean_connect(session, scheme: str, host: str, port: int, connect_timeout):
    """A fresh connection, with connect (and TLS handshake) failures as requests names them."""
    if scheme == "https":
        verify = session.verify
        cafile = verify if isinstance(verify, str) else certifi.where()
        conn = http.client.HTTPSConnection(
            host, port, timeout=connect_timeout, context=_ssl_context(cafile)
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
    try:
        conn.connect()
    except TimeoutError as exc:
        conn.close()
        raise requests.exceptions.ConnectTimeout(exc, request=None) from exc
    except ssl.SSLError as exc:
        conn.close()
        raise requests.exceptions.SSLError(exc, request=None) from exc
    except OSError as exc:
        conn.close()
        raise requests.exceptions.ConnectionError(exc, request=None) from exc
    _sessions.conn = conn
    _sessions.conn_target = (scheme, host, port)
    _sessions.poller = select.poll()
    _sessions.poller.register(conn.sock, select.POLLIN)
    return conn


def _lean_idle_ok(conn) -> bool:
    """Whether a kept connection is still open: nothing (no end-of-file, no reset, no
    stray bytes) is waiting to be read on it. Over TLS, records that carry no data (a
    TLS 1.3 session ticket arriving late) make the socket readable too: they are read
    and dropped without blocking, and only data or an end-of-file counts."""
    sock = conn.sock
    if sock is None:
        return False
    if not isinstance(sock, ssl.SSLSocket):
        return not _sessions.poller.poll(0)
    if not sock.pending() and not _sessions.poller.poll(0):
        return True
    sock.settimeout(0)  # the call sets its own timeout again before writing
    try:
        sock.recv(1)  # b"": closed; a byte: stray data. Either way, not reusable
    except ssl.SSLWantReadError:
        return True  # only TLS housekeeping was waiting
    except OSError:
        pass
    return False


def _lean_send(session, method: str, url: str, query: bytes, body, timeout):
    """One Bot API call over this thread's keep-alive connection; a requests.Response.

    Only for plain calls (see :func:`_request_send`). The answer is read whole; chunked
    transfer is undone by http.client, and no compression is asked for (http.client
    sends ``Accept-Encoding: identity``; a gzip or deflate body is decoded anyway).
    Redirects are not followed (the Bot API does not redirect; a 3xx reaches telebot
    as an HTTP error). Failures are raised as requests' exceptions (ConnectTimeout,
    ReadTimeout, SSLError, ConnectionError), as the requests path raises them.
    """
    scheme, host, port, path = _lean_target(url)
    if query:
        path += ("&" if "?" in path else "?") + query.decode("ascii")
    connect_timeout, read_timeout = _timeouts(timeout)
    headers = {"User-Agent": _USER_AGENT, "Accept": "*/*"}
    if body is not None:
        headers["Content-Type"] = _FORM

    conn = getattr(_sessions, "conn", None)
    reused = False
    if conn is not None:
        if _sessions.conn_target == (scheme, host, port) and _lean_idle_ok(conn):
            reused = True
        else:
            _lean_close()
    if not reused:
        conn = _lean_connect(session, scheme, host, port, connect_timeout)
    while True:
        try:
            conn.sock.settimeout(read_timeout)
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            break
        except _RETRYABLE as exc:
            _lean_close()
            if not reused:
                raise requests.exceptions.ConnectionError(exc, request=None) from exc
            reused = False  # the idle-close race: once more, on a fresh connection
            conn = _lean_connect(session, scheme, host, port, connect_timeout)
        except (OSError, http.client.HTTPException) as exc:
            raise _lean_failure(exc) from exc
    try:
        content = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise _lean_failure(exc) from exc
    if response.will_close:
        _lean_close()  # http.client has let the socket go with the response

    result = requests.Response()
    result.status_code = response.status
    result.reason = response.reason
    result.url = url
    received = CaseInsensitiveDict()
    for name, value in response.msg.items():
        received[name] = f"{received[name]}, {value}" if name in received else value
    result.headers = received
    encoding = received.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "deflate") and content:
        try:  # wbits 47: a gzip header; MAX_WBITS: the zlib format "deflate" names
            content = zlib.decompress(content, 47 if encoding == "gzip" else zlib.MAX_WBITS)
        except zlib.error as exc:
            raise requests.exceptions.ContentDecodingError(exc, request=None) from exc
    result._content = content
    result._content_consumed = True
    result.encoding = get_encoding_from_headers(received)
    if "set-cookie" in received:  # keep them; later calls go the requests way with them
        extract_cookies_to_jar(
            session.cookies, requests.Request(method, url).prepare(), _Raw(response)
        )
    return result


class _Raw:
    """What requests' cookie extraction reads from a raw response."""

    __slots__ = ("_original_response",)

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self._original_response = response


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
