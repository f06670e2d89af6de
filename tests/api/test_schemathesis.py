"""Schema-driven fuzzing: Schemathesis generates requests from /api/v1/openapi.json and
checks every answer: no 5xx, documented status codes and content types, bodies that
match the schema. Bounded: a few examples per operation (the suite's time budget)."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.helpers import api_for, customer, project_with_rules

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def bearer(db):
    """A key of a project with a customer; the raw WSGI app must not close the test's
    database connection after each request (Django's own test client does the same)."""
    project = project_with_rules()
    customer(project, balance=500, phone="+4915112345678")
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield {"Authorization": f"Bearer {api_for(project).key}"}
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
def test_the_api_keeps_its_schema(case, bearer):
    case.call_and_validate(headers=bearer, checks=CHECKS)
