"""Broadcast results: button presses on the broadcast's own messages, and who came back
(the same day included), on the page, in the CSV and JSON, and only for the project's
roles that may see figures."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.broadcasts import came_back_count
from analytics.models import BroadcastPress
from analytics.rollups import rollup_rebuild, rollup_run
from botplatform.telegram.journal import updates_record
from devtools.telegram_double import TelegramDouble
from tests.admin.conftest import operator_create
from tests.analytics.test_pages import _page_tables, _url
from tests.analytics.traffic import at, ledger_add
from tests.factories import bot_create, bot_user_create, project_create
from workflows import broadcasts
from workflows.models import Broadcast, BroadcastDelivery, BroadcastMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def double(settings):
    server = TelegramDouble().start()
    settings.TELEGRAM_API_URL = server.url
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 0
    yield server
    server.stop()


def _send(project, title: str) -> Broadcast:
    broadcast = Broadcast.objects.create(
        project=project,
        title=title,
        text=f"{title}: interested?",
        buttons=[[{"text": "Yes", "data": "yes"}, {"text": "Site", "url": "https://x.example"}]],
        segment="all",
    )
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=50)
    broadcast.refresh_from_db()
    assert broadcast.status == "done"
    return broadcast


def _message_of(broadcast: Broadcast, user) -> int:
    return BroadcastMessage.objects.get(broadcast=broadcast, user=user).message_id


def test_presses_count_only_the_broadcasts_own_messages(client, double):
    project = project_create()
    bot = bot_create(project=project)
    double.bot_add(bot.token, bot.username)
    other_bot = bot_create(project=project_create())
    double.bot_add(other_bot.token, other_bot.username)
    ann, bob, cid = (bot_user_create(project=project, first_name=n) for n in ("A", "B", "C"))
    spring = _send(project, "Spring")
    summer = _send(project, "Summer")

    # The ids kept are the ids Telegram gave the messages, in bulk, one per recipient.
    sent = {
        (chat, message_id)
        for (chat, message_id), message in double.messages.items()
        if message.get("text", "").startswith("Spring")
    }
    kept = set(
        BroadcastMessage.objects.filter(broadcast=spring).values_list("chat_id", "message_id")
    )
    assert kept == sent and len(kept) == 3

    token = bot.token
    updates = [
        double.callback(token, ann.chat_id, "yes", message_id=_message_of(spring, ann)),
        double.callback(token, ann.chat_id, "yes", message_id=_message_of(spring, ann)),
        double.callback(token, bob.chat_id, "yes", message_id=_message_of(spring, bob)),
        double.callback(token, cid.chat_id, "yes", message_id=_message_of(summer, cid)),
        double.callback(token, cid.chat_id, "menu", message_id=10_000),  # not a broadcast's
        double.message(token, ann.chat_id, "hello"),
    ]
    updates_record(bot_id=bot.pk, updates=updates)
    # The same chat and message id from another bot is another message.
    updates_record(
        bot_id=other_bot.pk,
        updates=[
            double.callback(other_bot.token, ann.chat_id, "y", message_id=_message_of(spring, ann))
        ],
    )
    rollup_run()
    rollup_run()  # reading the same updates again adds nothing

    def figures(broadcast):
        rows = BroadcastPress.objects.filter(broadcast_id=broadcast.pk)
        return rows.count(), len(set(rows.values_list("user_id", flat=True)))

    assert figures(spring) == (3, 2) and figures(summer) == (1, 1)
    rollup_rebuild()  # a rebuild reads the journal again: the same presses
    assert figures(spring) == (3, 2) and figures(summer) == (1, 1)

    client.force_login(operator_create("analyst", project, role="analyst"))
    page = client.get(_url("broadcast_results", project))
    table = _page_tables(page)["broadcasts"]
    header, rows = table[0], {row[0]: row for row in table[1:]}
    col = {name: i for i, name in enumerate(header)}
    assert rows["Spring"][col["Button presses"]] == "3"
    assert rows["Spring"][col["Members who pressed"]] == "2"
    assert rows["Spring"][col["Pressed % of delivered"]] == "66.7"
    assert rows["Summer"][col["Button presses"]] == "1"
    assert rows["Summer"][col["Pressed % of delivered"]] == "33.3"
    exported = client.get(_url("programme_export", project, table="broadcasts", format="csv"))
    assert list(csv.reader(io.StringIO(exported.content.decode()))) == table
    as_json = client.get(_url("programme_export", project, table="broadcasts", format="json"))
    json_rows = as_json.json()["tables"]["broadcasts"]["rows"]
    assert {r[0]: r[col["Button presses"]] for r in json_rows} == {"Spring": 3, "Summer": 1}


def _broadcast_at(project, users, sent_at):
    broadcast = Broadcast.objects.create(
        project=project, title="Tuesday", text="hi", status="done", started_at=sent_at
    )
    for user in users:
        BroadcastDelivery.objects.create(
            broadcast=broadcast,
            user=user,
            status="sent",
            finished_at=sent_at + timedelta(minutes=1),
        )
    return broadcast


def test_came_back_counts_the_same_day_after_the_delivery_and_not_before():
    project = project_create()
    day = timezone.now().date() - timedelta(days=20)
    early, same_day, next_day, too_late, silent = (
        bot_user_create(project=project) for _ in range(5)
    )
    broadcast = _broadcast_at(project, [early, same_day, next_day, too_late, silent], at(day, 12))
    ledger_add(early, 5, "earn", at(day, 11), "early")  # before the message
    ledger_add(same_day, 5, "earn", at(day, 18), "same-day")  # after it, that day
    ledger_add(next_day, 5, "earn", at(day + timedelta(days=1), 9), "next-day")
    ledger_add(too_late, 5, "earn", at(day + timedelta(days=8), 9), "too-late")
    rollup_rebuild()
    assert came_back_count(broadcast, days=7) == 2  # same_day and next_day
    assert came_back_count(broadcast, days=8) == 3
    # Idempotent: a re-run gives the same figure.
    rollup_rebuild()
    assert came_back_count(broadcast, days=7) == 2
    # A late event: the early member also came back that evening, recorded now.
    ledger_add(early, 5, "earn", at(day, 23), "early-evening")
    rollup_run()
    assert came_back_count(broadcast, days=7) == 3


def test_came_back_is_measured_from_each_members_own_delivery():
    """A broadcast that runs past a member's visit: the visit before their message
    arrived is not a return."""
    project = project_create()
    day = timezone.now().date() - timedelta(days=5)
    first, last = bot_user_create(project=project), bot_user_create(project=project)
    broadcast = _broadcast_at(project, [first, last], at(day, 12))
    BroadcastDelivery.objects.filter(broadcast=broadcast, user=last).update(finished_at=at(day, 20))
    ledger_add(first, 5, "earn", at(day, 15), "first")
    ledger_add(last, 5, "earn", at(day, 15), "last")  # before their own message
    rollup_rebuild()
    assert came_back_count(broadcast, days=7) == 1


def test_roles_without_the_figures_see_no_presses_or_moves_not_even_by_export(client):
    project = project_create()
    other = project_create()
    user = bot_user_create(project=project)
    _broadcast_at(project, [user], timezone.now() - timedelta(hours=2))
    rollup_run()
    client.force_login(operator_create("support", project, role="support"))
    for table in ("broadcasts", "level_moves"):
        for fmt in ("csv", "json"):
            response = client.get(_url("programme_export", project, table=table, format=fmt))
            assert response.status_code == 403, (table, fmt)
    assert client.get(_url("broadcast_results", project)).status_code == 403
    client.force_login(operator_create("outsider", other, role="owner"))
    for table in ("broadcasts", "level_moves"):
        for fmt in ("csv", "json"):
            response = client.get(_url("programme_export", project, table=table, format=fmt))
            assert response.status_code == 404, (table, fmt)
    own = client.get(_url("programme_export", other, table="broadcasts", format="json")).json()
    assert own["tables"]["broadcasts"]["rows"] == []
