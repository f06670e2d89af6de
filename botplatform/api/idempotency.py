"""``Idempotency-Key`` on every write: the same key with the same request answers the
first result again (header ``Idempotent-Replayed: true``); with another request, 409.

The record is inserted (unique per API key and key) before the write runs, in its own
transaction, so a concurrent duplicate finds it: while the first is still running the
duplicate gets 409 ``idempotency_in_progress`` (retry later); afterwards the stored
answer. A 5xx answer, or a crash, removes the record so the write can be retried.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

from django.db import IntegrityError, transaction
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from botplatform.api.errors import ApiError
from users.models_pos import ApiIdempotency

HEADER = "Idempotency-Key"
KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")


def request_hash(request) -> str:
    """What makes two requests "the same": method, path and the parsed JSON body."""
    try:
        body = json.dumps(request.data, sort_keys=True, cls=JSONEncoder, separators=(",", ":"))
    except (TypeError, ValueError):
        body = repr(request.data)
    text = f"{request.method} {request.path}\n{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _stored(data) -> object:
    return json.loads(json.dumps(data, cls=JSONEncoder))


def idempotent(handler):
    """Decorate a write handler of an APIView (post/put/patch/delete)."""

    @functools.wraps(handler)
    def wrapped(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not KEY_RE.match(key):
            raise ApiError(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 200 visible ASCII characters",
                400,
            )
        digest = request_hash(request)
        api_key = request.auth
        try:
            with transaction.atomic():
                record = ApiIdempotency.objects.create(
                    api_key=api_key, key=key, request_hash=digest
                )
        except IntegrityError:
            record = ApiIdempotency.objects.filter(api_key=api_key, key=key).first()
            if record is None:  # removed by a failed first attempt meanwhile: run again
                return wrapped(view, request, *args, **kwargs)
            if record.request_hash != digest:
                raise ApiError(
                    "idempotency_key_reused",
                    "this Idempotency-Key was already used for a different request",
                    409,
                ) from None
            if record.status_code is None:
                raise ApiError(
                    "idempotency_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                    409,
                ) from None
            response = Response(record.response, status=record.status_code)
            response["Idempotent-Replayed"] = "true"
            return response
        try:
            try:
                response = handler(view, request, *args, **kwargs)
            except Exception as exc:
                response = view.handle_exception(exc)  # re-raises what is a bug
        except BaseException:
            ApiIdempotency.objects.filter(pk=record.pk).delete()
            raise
        if response.status_code >= 500:
            ApiIdempotency.objects.filter(pk=record.pk).delete()
            return response
        ApiIdempotency.objects.filter(pk=record.pk).update(
            status_code=response.status_code, response=_stored(response.data)
        )
        return response

    return wrapped
