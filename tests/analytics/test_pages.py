"""The programme pages: CSV equals the page, funnels on known conversations, roles."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.periods import MAX_DAYS, period_parse
from analytics.rollups import rollup_rebuild, rollup_run
from analytics.tables import Table, table_csv
from tests.admin.conftest import operator_create
from tests.analytics.traffic import generate
from tests.factories import bot_user_create, project_create
from tests.workflows.conftest import command, publish, text

pytestmark = pytest.mark.django_db


class _Tables(HTMLParser):
    """{data-table: [[cell text]]} of every analytics table on a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: str | None = None
        self.row: list[str] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "data-table" in attrs:
            self.current = attrs["data-table"]
            self.tables[self.current] = []
        elif self.current and tag == "tr":
            self.row = []
        elif self.row is not None and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None
        elif tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[self.current].append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _page_tables(response) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(response.content.decode())
    return parser.tables


def _url(name: str, project, **query) -> str:
    url = reverse(f"admin:botplatform_project_{name}", args=[project.pk])
    return url + "?" + "&".join(f"{k}={v}" for k, v in query.items())


@pytest.fixture
def traffic(db):
    today = timezone.now().date()
    project, workflow = generate(seed=11, today=today, days=25, members=30)
    rollup_rebuild()
    return project, workflow, today


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_every_csv_export_equals_the_table_on_the_page(client, traffic, period):
    project, _workflow, _today = traffic
    client.force_login(operator_create("analyst", project, role="analyst"))
    query = {"period": period}
    page = client.get(_url("programme", project, **query))
    assert page.status_code == 200
    shown = _page_tables(page)
    assert set(shown) == {"summary", "daily", "levels", "level_moves", "retention", "workflows"}
    for key, rows in shown.items():
        response = client.get(_url("programme_export", project, table=key, format="csv", **query))
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        exported = list(csv.reader(io.StringIO(response.content.decode())))
        assert exported == rows, key
    as_json = client.get(_url("programme_export", project, table="summary", format="json"))
    data = json.loads(as_json.content)
    assert data["project"] == project.slug
    assert data["tables"]["summary"]["columns"][0] == "Figure"


def test_level_moves_on_the_page_and_in_the_exports_match_the_history(client, traffic):
    from collections import Counter

    from users.models import LevelChange

    project, _workflow, today = traffic
    client.force_login(operator_create("analyst2", project, role="analyst"))
    query = {"period": "custom", "start": (today - timedelta(days=29)).isoformat()}
    page = client.get(_url("programme", project, **query))
    shown = _page_tables(page)["level_moves"]
    assert shown[0] == ["From level", "To level", "Moves this period", "Previous period", "Change"]
    expected = Counter(
        (c.from_level or "(none)", c.to_level)
        for c in LevelChange.objects.filter(project=project, user__is_test=False)
        if c.at.date() >= today - timedelta(days=29)
    )
    assert expected  # the generated traffic moved members
    assert {(r[0], r[1]): int(r[2]) for r in shown[1:]} == dict(expected)
    assert "Level moves per day" in page.content.decode()  # the chart
    csv_rows = client.get(
        _url("programme_export", project, table="level_moves", format="csv", **query)
    )
    assert list(csv.reader(io.StringIO(csv_rows.content.decode()))) == shown
    data = client.get(_url("programme_export", project, table="summary", format="json", **query))
    json_rows = data.json()["tables"]["level_moves"]["rows"]
    assert {(r[0], r[1]): r[2] for r in json_rows} == dict(expected)


def test_the_dashboard_answers_how_many_members_and_what_we_owe(client, traffic):
    project, _workflow, _today = traffic
    client.force_login(operator_create("owner", project, role="owner"))
    summary = {
        row[0]: row for row in _page_tables(client.get(_url("programme", project)))["summary"]
    }
    from users.models import BonusTransaction, BotUser

    members = BotUser.objects.filter(project=project, is_test=False).count()
    owed = sum(
        BonusTransaction.objects.filter(project=project, user__is_test=False).values_list(
            "amount", flat=True
        )
    )
    assert summary["Members (end of period)"][1] == str(members)
    assert summary["Outstanding balance (what the programme owes)"][1] == str(owed)
    phones = BotUser.objects.filter(
        project=project, is_test=False, telegram_id__isnull=False, phone_linked_at__isnull=False
    ).exclude(phone="")
    assert phones.exists()
    assert summary["Phone linked (end of period)"][1] == str(phones.count())


FLOW = {
    "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": "Hello", "next": "ask"},
        "ask": {"type": "input", "text": "City?", "variable": "city", "next": "thanks"},
        "thanks": {"type": "message", "text": "Thanks", "next": "bye"},
        "bye": {"type": "end"},
    },
}


def test_funnel_counts_known_conversations_and_draws_them_on_the_flow(client, db):
    project = project_create()
    workflow = publish(project, FLOW)
    finishers = [bot_user_create(project=project) for _ in range(3)]
    quitters = [bot_user_create(project=project) for _ in range(2)]
    for user in finishers + quitters:
        command(user, "start")
    for user in finishers:
        text(user, "Paris")
    rollup_run()
    client.force_login(operator_create("editor", project, role="editor"))
    response = client.get(_url("funnel", project, workflow=workflow.pk))
    assert response.status_code == 200
    rows = {row[0]: row[1:] for row in _page_tables(response)["funnel"][1:]}
    assert rows["(started)"][0] == "5"
    assert rows["hello"][:2] == ["5", "100.0"]
    assert rows["ask"][0] == "5"
    assert rows["thanks"] == ["3", "60.0", "40.0"]  # 2 of 5 dropped at the question
    assert rows["(completed)"][0] == "3" and rows["(still open)"][0] == "2"
    body = response.content.decode()
    assert 'data-step="thanks"' in body and "3 · 60%" in body  # on the flow itself
    exported = client.get(
        _url("programme_export", project, table="funnel", format="csv", workflow=workflow.pk)
    )
    assert list(csv.reader(io.StringIO(exported.content.decode())))[1:] == [
        [k, *v] for k, v in rows.items()
    ]


def test_a_role_without_the_figures_cannot_read_them_not_even_by_export(client, traffic):
    project, _workflow, _today = traffic
    other = project_create(name="Other")
    client.force_login(operator_create("support", project, role="support"))
    for name in ("programme", "funnel", "broadcast_results", "programme_export"):
        assert client.get(_url(name, project)).status_code == 403, name
    client.force_login(operator_create("outsider", other, role="owner"))
    for fmt in ("csv", "json"):
        response = client.get(_url("programme_export", project, table="daily", format=fmt))
        assert response.status_code == 404
    # Their own project's export holds nothing of the other project.
    own = client.get(_url("programme_export", other, table="daily", format="json")).json()
    assert all(row[1] == 0 for row in own["tables"]["daily"]["rows"])


def test_bad_export_arguments_get_a_plain_answer(client, traffic):
    project, _workflow, _today = traffic
    client.force_login(operator_create("owner2", project, role="owner"))
    response = client.get(_url("programme_export", project, table="nope", format="csv"))
    assert response.status_code == 400 and b"Tables:" in response.content


def test_csv_cells_that_look_like_formulas_are_quoted():
    table = Table("t", "T", ["a"], [["=cmd()"], [-5], ["-x"], ["+1"]])
    rows = list(csv.reader(io.StringIO(table_csv(table))))
    assert rows == [["a"], ["'=cmd()"], ["-5"], ["'-x"], ["'+1"]]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["period", "start", "end", "other"]),
        st.one_of(
            st.text(max_size=50),
            st.sampled_from(["day", "week", "month", "custom", "2026-02-30", "0001-01-01"]),
            st.dates().map(str),
            st.text(alphabet="\x00\u202e\U0001d54f-0123456789", max_size=12),
            st.just("2026-01-01" + "\x00" * 100_000),  # absurd size
        ),
    )
)
def test_any_query_string_gives_a_bounded_period(params):
    today = timezone.now().date()
    period = period_parse(params, today=today)
    assert period.start <= period.end <= today
    assert period.days <= MAX_DAYS
    assert period.previous.end == period.start - timedelta(days=1)
