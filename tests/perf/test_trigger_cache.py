"""The trigger table is cached per project and dropped whenever a workflow changes."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from botplatform.cache import workflow_triggers_key
from workflows.engine.triggers import trigger_candidates
from workflows.models import Workflow

pytestmark = pytest.mark.django_db(transaction=True)


def test_trigger_table_is_cached_and_dropped_after_a_workflow_save(demo_bot):
    project_id = demo_bot.project_id
    first = trigger_candidates(project_id)
    with CaptureQueriesContext(connection) as queries:
        assert trigger_candidates(project_id) == first
    assert len(queries) == 0

    workflow = Workflow.objects.filter(project_id=project_id).order_by("pk").first()
    workflow.is_active = False
    workflow.save(update_fields=["is_active"])  # autocommit: dropped now and after commit
    assert cache.get(workflow_triggers_key(project_id)) is None
    assert workflow.pk not in [row["id"] for row in trigger_candidates(project_id)]


def test_deleting_a_workflow_drops_the_table(demo_bot):
    project_id = demo_bot.project_id
    trigger_candidates(project_id)
    Workflow.objects.filter(project_id=project_id).delete()
    assert trigger_candidates(project_id) == []
