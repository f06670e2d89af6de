from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from botplatform import metrics
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    return settings.METRICS_TOKEN


def test_metrics_need_a_token_or_a_staff_session(client, token):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    user = get_user_model().objects.create_user("visitor", password="x", is_staff=False)
    client.force_login(user)
    assert client.get("/metrics").status_code == 403


def test_an_empty_token_setting_never_matches(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_a_staff_operator_cannot_read_the_cross_tenant_metrics(client, project):
    from tests.admin.conftest import operator_create

    client.force_login(operator_create("ops", project, role="owner"))
    assert client.get("/metrics").status_code == 403


def test_superuser_session_reads_metrics(client):
    user = get_user_model().objects.create_superuser("root", password="x")
    client.force_login(user)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")


def test_processed_updates_show_up_in_prometheus_format(client, token, demo_bot, double):
    before = metrics.counters_read().get('bp_updates_processed_total{outcome="ok"}', 0)
    for text in ("/start", "/menu"):
        (row,) = updates_record(
            bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, 4242, text)]
        )
        assert update_run(update_pk=row.pk) == "done"
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    body = response.content.decode()
    lines = dict(line.rsplit(" ", 1) for line in body.splitlines() if not line.startswith("#"))
    assert float(lines['bp_updates_processed_total{outcome="ok"}']) == before + 2
    assert float(lines["bp_update_processing_seconds_count"]) >= 2
    assert 'bp_update_processing_seconds_bucket{le="+Inf"}' in lines
    assert float(lines['bp_sends_total{kind="message"}']) >= 2
    assert 'bp_cache_requests_total{family="user_state",result="miss"}' in lines
    assert 'bp_executions{status="waiting"}' in lines
    assert "bp_celery_queue_depth" in lines
    for name in (
        "bp_rate_limited_total",
        "bp_lock_contention_total",
        "bp_send_failures_total",
    ):
        assert f"# TYPE {name} counter" in body


def test_counters_from_several_processes_add_up_in_redis():
    """Each process flushes deltas (HINCRBYFLOAT): two flushes add, none overwrites."""
    metrics.flush()
    start = metrics.counters_read().get('bp_lock_contention_total{lock="test"}', 0)
    metrics.inc("bp_lock_contention_total", lock="test")
    assert metrics.flush()
    metrics.inc("bp_lock_contention_total", 2, lock="test")
    assert metrics.flush()
    assert metrics.counters_read()['bp_lock_contention_total{lock="test"}'] == start + 3


def test_rate_limited_updates_are_counted(client, token, demo_bot, double):
    demo_bot.project.user_rate_limit_per_minute = 1
    demo_bot.project.save(update_fields=["user_rate_limit_per_minute"])
    for text in ("/start", "/menu"):
        (row,) = updates_record(
            bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, 4343, text)]
        )
        update_run(update_pk=row.pk)
    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()
    assert 'bp_updates_processed_total{outcome="rate_limited"}' in body
    assert any(
        line.startswith("bp_rate_limited_total ") and float(line.split()[1]) >= 1
        for line in body.splitlines()
    )


def test_a_spend_that_finds_the_user_locked_counts_as_lock_contention(bot_user):
    from botplatform.locks import redis_lock
    from tests.users.helpers import spend_lock_held_elsewhere
    from users import ledger
    from users.ledger import bonus_spend

    sample = 'bp_lock_contention_total{lock="user_spend"}'
    before = metrics.totals().get(sample, 0)
    with spend_lock_held_elsewhere(bot_user.pk):  # PostgreSQL: the one-statement spend
        result = bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="k1")
    assert result.status == "in_progress"
    assert metrics.totals()[sample] == before + 1
    # Other databases: the Redis lock.
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        redis_lock("user", f"{bot_user.pk}:spend"),
    ):
        monkeypatch.setattr(ledger, "spends_in_one_statement", lambda: False)
        result = bonus_spend(user_id=bot_user.pk, amount=10, idempotency_key="k2")
    assert result.status == "in_progress"
    assert metrics.totals()[sample] == before + 2


def test_cache_backend_gauge_follows_the_fallback_status(client, token, monkeypatch):
    """The resilience helper's ``cache_status()`` (botplatform/cache_backend.py, on its
    way to main) becomes ``bp_cache_backend_up``; absent, the gauge is left out."""
    import sys
    import types

    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if "botplatform.cache_backend" not in sys.modules:
        body = client.get("/metrics", **auth).content.decode()
        assert "\nbp_cache_backend_up " not in body
    module = types.ModuleType("botplatform.cache_backend")
    module.cache_status = lambda: {"redis_available": False, "since": None}
    monkeypatch.setitem(sys.modules, "botplatform.cache_backend", module)
    assert "\nbp_cache_backend_up 0.0\n" in client.get("/metrics", **auth).content.decode()
    module.cache_status = lambda: {"redis_available": True, "since": None}
    assert "\nbp_cache_backend_up 1.0\n" in client.get("/metrics", **auth).content.decode()
