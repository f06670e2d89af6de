"""Bearer API keys: who is calling (one project), what they may do (scopes), how often
(a per-key sliding window in Redis, shared by every web worker)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from botplatform.cache import rate_limit_api_key_key
from botplatform.ratelimit import rate_hit
from users.apikeys import apikey_authenticate, apikey_touch
from users.models_pos import ApiKey


class ApiClient:
    """``request.user`` of an API call: the key's project, nothing else."""

    is_authenticated = True
    is_staff = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.project_id = api_key.project_id

    def __str__(self) -> str:
        return f"API key {self.api_key.prefix}"


class BearerKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer bp_…``; unknown and revoked keys get 401, too many
    requests 429."""

    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        scheme, _, plain = header.partition(" ")
        if not header:
            return None
        if scheme.lower() != "bearer" or not plain.strip():
            raise exceptions.AuthenticationFailed("use the header Authorization: Bearer <key>")
        api_key = apikey_authenticate(plain.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        wait_ms = rate_hit(
            [(rate_limit_api_key_key(api_key.pk), api_key.rate_limit_per_minute, 60_000)]
        )
        if wait_ms:
            raise exceptions.Throttled(wait=wait_ms / 1000)
        apikey_touch(api_key)
        return ApiClient(api_key), api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class HasScope(permissions.BasePermission):
    """The view's ``required_scopes[method]`` must all be on the key."""

    message = "this API key lacks the scope for this request"

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            raise exceptions.NotAuthenticated("send Authorization: Bearer <API key>")
        needed = view.required_scopes.get(request.method, ())
        missing = [scope for scope in needed if scope not in (api_key.scopes or [])]
        if missing:
            self.message = f"this API key lacks the scope {missing[0]!r}"
            return False
        return True


class BearerKeyScheme(OpenApiAuthenticationExtension):
    """The key's place in the OpenAPI schema (``BearerKey``)."""

    target_class = "botplatform.api.auth.BearerKeyAuthentication"
    name = "BearerKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key: bp_…"}
