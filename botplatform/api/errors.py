"""Every API error is JSON ``{"code": ..., "detail": ...}``: a stable machine code and
a sentence for people (validation errors add ``errors``, field by field)."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from users.customers import CustomerError
from users.earn_rules import AmountInvalid
from users.holds import HoldError
from users.purchases import PurchaseError

logger = logging.getLogger(__name__)

DOMAIN_ERRORS = (CustomerError, AmountInvalid, HoldError, PurchaseError)

_CODES = {
    exceptions.NotAuthenticated: "unauthorized",
    exceptions.AuthenticationFailed: "unauthorized",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "malformed_json",
}


class ApiError(exceptions.APIException):
    """An error with its own code and status (idempotency conflicts, scopes...)."""

    def __init__(self, code: str, detail: str, status_code: int = 400) -> None:
        super().__init__(detail=detail, code=code)
        self.status_code = status_code
        self.error_code = code


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for field, value in detail.items():
            message = _first_message(value)
            return message if field == "non_field_errors" else f"{field}: {message}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def error_response(code: str, detail: str, status_code: int, **extra) -> Response:
    return Response({"code": code, "detail": detail, **extra}, status=status_code)


def exception_handler(exc, context) -> Response | None:
    """DRF's exception handler: the JSON error for ``exc`` (None: a bug, a 500)."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, DOMAIN_ERRORS):
        return error_response(exc.code, str(exc), getattr(exc, "status", 400))
    if isinstance(exc, ApiError):
        return error_response(exc.error_code, str(exc.detail), exc.status_code)
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            "invalid", _first_message(exc.detail), status.HTTP_400_BAD_REQUEST, errors=exc.detail
        )
    if isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
        response = error_response(code, str(exc.detail), exc.status_code)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            response["Retry-After"] = str(max(int(exc.wait), 1))
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    return None
