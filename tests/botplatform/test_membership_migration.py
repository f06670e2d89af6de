"""The migration to roles keeps every former operator able to work: they become Owners."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("botplatform", "0005_telegram_update_quarantine")]
AFTER = [("botplatform", "0006_project_memberships_with_roles")]


@pytest.mark.django_db(transaction=True)
def test_operators_become_owners_and_back():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    user = old.get_model("auth", "User").objects.create(username="ann", is_staff=True)
    project = old.get_model("botplatform", "Project").objects.create(name="Shop", slug="shop")
    project.operators.add(user)
    old.get_model("botplatform", "Project").objects.create(name="Empty", slug="empty")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    rows = new.get_model("botplatform", "Membership").objects.values_list(
        "project__slug", "user__username", "role"
    )
    assert list(rows) == [("shop", "ann", "owner")]

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)  # reversible
    old = executor.loader.project_state(BEFORE).apps
    shop = old.get_model("botplatform", "Project").objects.get(slug="shop")
    assert list(shop.operators.values_list("username", flat=True)) == ["ann"]

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
