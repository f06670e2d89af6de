"""``/metrics`` is rendered by prometheus_client from a collector over the Redis totals.

Read back here with prometheus_client's own text parser, as a Prometheus server would.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from botplatform import metrics
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


@pytest.fixture
def scrape(client, settings):
    """GET /metrics as Prometheus would; returns {family name: Metric}."""
    settings.METRICS_TOKEN = TOKEN

    def get() -> dict:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        return {f.name: f for f in text_string_to_metric_families(response.content.decode())}

    return get


def _value(family, sample_name: str, **labels: str) -> float:
    (value,) = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    return value


def test_the_exposition_parses_with_types_and_values_after_real_traffic(demo_bot, double, scrape):
    for text in ("/start", "/menu", "/start"):
        (row,) = updates_record(
            bot_id=demo_bot.pk, updates=[double.command(demo_bot.token, 4242, text)]
        )
        assert update_run(update_pk=row.pk) == "done"
    families = scrape()

    kinds = {name: family.type for name, family in families.items()}
    assert kinds == kinds | {  # counters are named without _total by the parser
        "bp_updates_processed": "counter",
        "bp_cache_requests": "counter",
        "bp_rate_limited": "counter",
        "bp_lock_contention": "counter",
        "bp_sends": "counter",
        "bp_send_failures": "counter",
        "bp_update_processing_seconds": "histogram",
        "bp_celery_queue_depth": "gauge",
        "bp_executions": "gauge",
    }
    processed = families["bp_updates_processed"]
    assert _value(processed, "bp_updates_processed_total", outcome="ok") == 3
    sends = _value(families["bp_sends"], "bp_sends_total", kind="message")
    assert sends == len(double.sent_texts(demo_bot.token, 4242)) >= 3

    latency = families["bp_update_processing_seconds"]
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    bounds = [s.labels["le"] for s in buckets]
    assert bounds == [*(str(b) for b in metrics.LATENCY_BUCKETS), "+Inf"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == _value(latency, "bp_update_processing_seconds_count") == 3
    assert _value(latency, "bp_update_processing_seconds_sum") > 0

    executions = families["bp_executions"]
    for status in ("running", "waiting"):
        in_db = WorkflowExecution.objects.filter(status=status).count()
        assert _value(executions, "bp_executions", status=status) == in_db
    assert _value(executions, "bp_executions", status="waiting") >= 1


def test_a_histogram_with_no_observation_lists_every_bucket_at_zero(scrape):
    latency = scrape()["bp_update_processing_seconds"]
    assert [s.value for s in latency.samples if s.name.endswith("_bucket")] == [0] * (
        len(metrics.LATENCY_BUCKETS) + 1
    )
    assert _value(latency, "bp_update_processing_seconds_count") == 0


def test_a_counter_nobody_declared_is_still_exposed_untyped(scrape):
    metrics.inc("bp_from_a_newer_release_total", 2, shard="a")
    family = scrape()["bp_from_a_newer_release_total"]
    assert family.type == "unknown"
    assert _value(family, "bp_from_a_newer_release_total", shard="a") == 2


def test_a_gauge_that_cannot_be_read_is_left_out_and_the_rest_is_served(scrape):
    def broken() -> dict:
        raise RuntimeError("database unreachable")

    metrics.gauge_register("bp_test_broken", documentation="A broken figure.", read=broken)
    try:
        families = scrape()
    finally:
        metrics._gauges.pop("bp_test_broken")
    assert "bp_test_broken" not in families
    assert "bp_executions" in families and "bp_updates_processed" in families


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=st.text(max_size=200) | st.sampled_from(['a"b', "a\\nb", "x\\", "\n", "\x00", "}{"]))
def test_any_label_value_comes_back_through_the_parser(scrape, value):
    """Quotes, backslashes, newlines, NUL, braces, odd Unicode: escaped, never a broken
    line (the hand-written renderer wrote backslashes and newlines raw)."""
    metrics.inc("bp_hostile_label_total", 1, v=value)
    expected = metrics.counters_read()[metrics._sample("bp_hostile_label_total", {"v": value})]
    family = scrape()["bp_hostile_label_total"]
    assert _value(family, "bp_hostile_label_total", v=value.replace('"', "")) == expected


def test_the_metrics_module_imports_nothing_from_the_applications():
    """Infrastructure imports neither workflows nor users (also inside functions)."""
    path = Path(metrics.__file__)
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    apps = {name for name in imported if name.split(".")[0] in {"workflows", "users"}}
    assert apps == set()
    assert "prometheus_client" in {name.split(".")[0] for name in imported}
