"""Shared tools of the API tests: a project with a key, and a client that sends it."""

from __future__ import annotations

import json
from decimal import Decimal

from django.test import Client

from botplatform.models import Project
from tests.factories import bot_user_create, project_create
from users.apikeys import apikey_create
from users.models import BotUser
from users.models_pos import EarnRule

ALL_SCOPES = "read,accrue,redeem,events"


class Api:
    """A Django test client that sends ``Authorization: Bearer <key>`` and JSON."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.client = Client()

    def _headers(self, idem: str | None, extra: dict | None) -> dict:
        headers = dict(extra or {})
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        if idem is not None:
            headers["Idempotency-Key"] = idem
        return headers

    def get(self, path: str, params: dict | None = None, headers: dict | None = None):
        return self.client.get(
            f"/api/v1/{path}", params or {}, headers=self._headers(None, headers)
        )

    def post(self, path: str, body=None, *, idem: str | None = None, headers: dict | None = None):
        data = (
            body if isinstance(body, str | bytes) else json.dumps(body if body is not None else {})
        )
        return self.client.post(
            f"/api/v1/{path}",
            data,
            content_type="application/json",
            headers=self._headers(idem, headers),
        )


def project_with_rules(**fields) -> Project:
    project = project_create(**fields)
    EarnRule.objects.create(project=project, name="Base 5 %", percent=Decimal(5))
    return project


def api_for(project: Project, scopes: str = ALL_SCOPES) -> Api:
    return Api(apikey_create(project=project, name="test", scopes=scopes).plain)


def customer(project: Project, *, balance: int = 0, **fields) -> BotUser:
    from users.ledger import bonus_earn

    user = bot_user_create(project=project, level=fields.pop("level", "Bronze"), **fields)
    if balance:
        bonus_earn(user_id=user.pk, amount=balance, idempotency_key=f"seed:{user.pk}")
        user.refresh_from_db()
    return user
