"""Admin changelists cost the same number of queries for 1 row as for 20.

Rows whose ``__str__`` follows a foreign key (a version names its workflow, an
execution names its workflow) and sidebar filters listing such rows must not query
once per row.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import bot_user_create, execution_create, workflow_create
from workflows.models import ExecutionStepLog

pytestmark = pytest.mark.django_db

CHANGELISTS = (
    "admin:workflows_workflow_changelist",
    "admin:workflows_workflowexecution_changelist",
    "admin:workflows_executionsteplog_changelist",
)


def _rows(project, n: int) -> None:
    for _ in range(n):
        workflow = workflow_create(project=project)
        execution = execution_create(
            workflow=workflow, user=bot_user_create(project=project), status="waiting"
        )
        ExecutionStepLog.objects.create(execution=execution, step="hello", step_type="end")


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx)


@pytest.mark.parametrize("name", CHANGELISTS)
@pytest.mark.parametrize("as_superuser", [False, True], ids=["operator", "superuser"])
def test_changelist_queries_do_not_grow_with_rows(client, operator, project, name, as_superuser):
    if as_superuser:
        operator.is_superuser = True
        operator.save(update_fields=["is_superuser"])
    client.force_login(operator)
    url = reverse(name)
    _rows(project, 1)
    few = _queries(client, url)
    _rows(project, 19)
    many = _queries(client, url)
    assert many == few, f"{url}: {few} queries for 1 row, {many} for 20"
