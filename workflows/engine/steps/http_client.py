"""Performing the request of an ``http_request`` step (in a Celery worker).

One try connects to the vetted addresses only (``http_pinning``), within a total
deadline (``http_deadline``), and reads at most ``MAX_RESPONSE_BYTES``; failed tries
are retried after network errors, timeouts, 5xx and 429. The caller always gets a
result, never an exception: the step's ``timer`` sends anything not ok to
``on_failure`` with the ``error`` text.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import ssl
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from workflows.engine.steps.http_deadline import Deadline
from workflows.engine.steps.http_pinning import (
    BlockedAddress,
    UnresolvableHost,
    addresses_resolve,
    pinned_opener,
)
from workflows.engine.steps.http_request import (
    DEFAULT_TIMEOUT,
    MAX_RETRIES,
    RequestRefused,
    request_check,
)

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1_000_000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: they could lead to a private address."""

    def redirect_request(self, *args, **kwargs):
        return None


MAX_HEADERS = 50  # response headers kept for ``save_headers``
MAX_HEADER_VALUE = 1000


class _Failed(Exception):
    """One try failed; ``retry`` says whether another try may help."""

    def __init__(
        self, error: str, *, retry: bool, status: int | None = None, answer: dict | None = None
    ) -> None:
        super().__init__(error)
        self.retry = retry
        self.status = status
        self.answer = answer or {}  # an HTTP error's headers and JSON body, when readable


def _headers(message: Any) -> dict[str, str]:
    """Response headers by lower-case name (bounded), for ``save_headers``."""
    found: dict[str, str] = {}
    for name, value in list((message or {}).items())[: MAX_HEADERS * 2]:
        key = str(name).lower()
        if key not in found and len(found) < MAX_HEADERS:
            found[key] = str(value)[:MAX_HEADER_VALUE]
    return found


def _error_answer(exc: urllib.error.HTTPError) -> dict:
    """An error status's headers and, when it is JSON, its body (404 {"error": ...})."""
    answer: dict = {"headers": _headers(exc.headers)}
    try:
        raw = exc.read(MAX_RESPONSE_BYTES + 1)
    except (OSError, http.client.HTTPException, ValueError):
        return answer
    if raw and len(raw) <= MAX_RESPONSE_BYTES:
        document, json_error = _json_parse(raw)
        if json_error is None:
            answer["json"] = document
    return answer


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):  # ``1e999``: a variable in jsonb cannot hold it
        raise ValueError(f"the number {text[:40]} is too large")
    return number


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _json_parse(raw: bytes) -> tuple[Any, str | None]:
    """(document, None), or (None, why the answer is not usable JSON)."""
    if not raw:
        return None, "the answer is empty, JSON was expected"
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_refuse_constant), None
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        return None, f"the answer is not valid JSON: {str(exc)[:200]}"


def _body_read(response: http.client.HTTPResponse) -> bytes:
    """The whole body, at most ``MAX_RESPONSE_BYTES``; a cut-off answer is an error."""
    length = response.getheader("Content-Length")
    if (
        length
        and length.strip().isascii()
        and length.strip().isdigit()
        and int(length) > MAX_RESPONSE_BYTES
    ):
        raise _Failed(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes", retry=False)
    chunks, size = [], 0
    while chunk := response.read(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _Failed(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes", retry=False)
        chunks.append(chunk)
    if response.length:  # a Content-Length the connection did not deliver
        raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return b"".join(chunks)


def _reason(exc: Exception) -> str:
    """An operator-readable reason for a failed try."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and isinstance(reason, Exception):
        exc = reason
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the whole answer arrived"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate check failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    return f"{type(exc).__name__}: {exc}"


def _try(request: dict, addresses: list[str], data: bytes | None, headers: dict) -> dict:
    """One try within its deadline: the result, or :class:`_Failed`."""
    timeout = float(request.get("timeout") or DEFAULT_TIMEOUT)
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked by url_finish
        request["url"], data=data, headers=headers, method=request["method"]
    )
    status: int | None = None
    with Deadline(timeout) as deadline:
        opener = pinned_opener(addresses, _NoRedirect, deadline=deadline)
        try:
            with opener.open(req, timeout=timeout) as response:
                status = response.status
                headers = _headers(response.headers)
                raw = _body_read(response)
        except urllib.error.HTTPError as exc:
            status = exc.code
            answer = _error_answer(exc) if not deadline.expired else {}
            exc.close()
            retry = status >= 500 or status == 429
            raise _Failed(f"HTTP {status}", retry=retry, status=status, answer=answer) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            if deadline.expired:
                raise _Failed(f"no complete answer within {timeout:g} s", retry=True) from None
            raise _Failed(f"request failed: {_reason(exc)}", retry=True) from None
        deadline.close()
        if deadline.expired:  # shut down mid-body: what was read may look complete
            raise _Failed(f"no complete answer within {timeout:g} s", retry=True, status=status)
    document, json_error = _json_parse(raw)
    result = {"ok": 200 <= status < 300, "status": status, "json": document, "headers": headers}
    if json_error:
        result["json_error"] = json_error
    return result


def _encoded(request: dict) -> tuple[bytes | None, dict]:
    """(body bytes, header values as UTF-8 bytes) of a checked request."""
    headers: dict = dict(request["headers"])
    body = request.get("body")
    data = None
    if isinstance(body, dict | list):
        data = json.dumps(body).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    elif body is not None:
        data = str(body).encode()
    return data, {name: value.encode() for name, value in headers.items()}


def _perform(request: dict, *, allow_private: bool) -> dict:
    try:
        request = request_check(request)
    except RequestRefused as exc:
        return {"ok": False, "error": str(exc)}
    data, headers = _encoded(request)
    parts = urlsplit(request["url"])
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attempts = min(int(request.get("retries", 0)), MAX_RETRIES) + 1
    result: dict = {"ok": False, "error": "not attempted"}
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(2**attempt, 8) * 0.25)
        # Resolved once per try and connected to exactly the checked addresses: a
        # second lookup could answer differently (DNS rebinding) and reach inside.
        try:
            addresses = addresses_resolve(host, port, allow_private=allow_private)
        except UnresolvableHost as exc:
            result = {"ok": False, "error": str(exc)}
            continue
        except BlockedAddress as exc:
            return {"ok": False, "error": str(exc)}
        try:
            return _try(request, addresses, data, headers)
        except _Failed as exc:
            result = {"ok": False, "error": str(exc), **exc.answer}
            if exc.status is not None:
                result["status"] = exc.status
            if not exc.retry:
                return result
    return result


def http_perform(request: dict, *, allow_private: bool) -> dict:
    """Perform one request with retries; the result the step's ``timer`` reads.

    Never raises: a request our side cannot send, a failed try and anything
    unexpected (logged) are a result with ``ok`` false and the reason in ``error``,
    so the execution always continues to ``on_failure``. Each try has a total
    deadline (``timeout``); the answer is read up to ``MAX_RESPONSE_BYTES``.
    """
    try:
        return _perform(request, allow_private=allow_private)
    except Exception as exc:
        logger.exception("HTTP request step failed unexpectedly")
        return {"ok": False, "error": f"unexpected error: {type(exc).__name__}: {exc}"}
