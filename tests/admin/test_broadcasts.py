"""Broadcasts: segments, a frozen recipient list, claim-once sending, figures, admin."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from botplatform.conversation import SendMessage
from tests.factories import bot_create, bot_user_create
from tests.workflows.conftest import publish
from users.variables import user_variable_set
from workflows import broadcasts
from workflows.models import Broadcast, BroadcastDelivery

pytestmark = pytest.mark.django_db


@pytest.fixture
def audience(project):
    bot = bot_create(project=project)
    users = {
        "ann": bot_user_create(project=project, first_name="Ann", level="Gold"),
        "bob": bot_user_create(project=project, first_name="Bob", level="Silver"),
        "cid": bot_user_create(project=project, first_name="Cid", is_blocked=True),
        "sim": bot_user_create(project=project, telegram_id=-(10**15) - 1, is_test=True),
    }
    user_variable_set(user_id=users["ann"].pk, project_id=project.pk, key="city", value="Paris")
    user_variable_set(user_id=users["bob"].pk, project_id=project.pk, key="city", value="Rome")
    return bot, users


def _broadcast(project, **fields) -> Broadcast:
    fields.setdefault("title", "News")
    fields.setdefault("text", "Hello {{ user.first_name }}!")
    return Broadcast.objects.create(project=project, **fields)


def test_segments_choose_the_right_users_and_never_test_users(project, audience):
    _, users = audience

    def names(**fields):
        ids = broadcasts.broadcast_recipient_ids(broadcast=_broadcast(project, **fields))
        return sorted(u for u, user in users.items() if user.pk in ids)

    assert names(segment="all") == ["ann", "bob", "cid"]
    assert names(segment="not_blocked") == ["ann", "bob"]
    assert names(segment="level", level="Gold") == ["ann"]
    assert names(segment="condition", condition='vars.city == "rome"') == ["bob"]
    assert names(segment="condition", condition="vars.city is not set") == ["cid"]
    assert names(
        segment="condition", condition='user.level == "Gold" or user.first_name == "Cid"'
    ) == [
        "ann",
        "cid",
    ]


def test_sending_counts_sent_and_blocked_and_renders_per_user(project, audience, telegram):
    bot, _users = audience
    broadcast = _broadcast(
        project, segment="all", buttons=[[{"text": "Shop", "url": "https://s.io"}]]
    )
    assert broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    assert not broadcasts.broadcast_start(broadcast_id=broadcast.pk)  # once
    assert broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10) == 3
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.total, broadcast.sent, broadcast.blocked) == (
        "done",
        3,
        2,
        1,
    )
    texts = sorted(call["actions"][0].text for call in telegram)
    assert texts == ["Hello Ann!", "Hello Bob!"]
    assert all(call["bot_id"] == bot.pk for call in telegram)
    assert telegram[0]["actions"][0].buttons[0][0].url == "https://s.io"
    # A second batch (a retried task) sends nothing more.
    assert broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10) == 0
    assert len(telegram) == 2


def test_a_user_who_blocks_the_bot_while_sending_is_counted_blocked(project, audience, delivery_to):
    _, users = audience
    calls = []

    def sender_marks_blocked(*, bot_id, chat_id, actions):
        calls.append(chat_id)
        from users.models import BotUser

        BotUser.objects.filter(chat_id=chat_id, project=project).update(is_blocked=True)

    delivery_to(sender_marks_blocked)
    broadcast = _broadcast(project, segment="level", level="Gold")
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=5)
    broadcast.refresh_from_db()
    assert calls == [users["ann"].chat_id]
    assert (broadcast.sent, broadcast.blocked, broadcast.failed) == (0, 1, 0)


def test_failures_are_counted_and_do_not_stop_the_rest(project, audience, delivery_to):
    _, users = audience

    def flaky(*, bot_id, chat_id, actions):
        if chat_id == users["ann"].chat_id:
            raise RuntimeError("Telegram is down")

    delivery_to(flaky)
    broadcast = _broadcast(project, segment="not_blocked")
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=5)
    broadcast.refresh_from_db()
    assert (broadcast.sent, broadcast.failed) == (1, 1)
    failed = BroadcastDelivery.objects.get(broadcast=broadcast, status="failed")
    assert failed.user_id == users["ann"].pk and "Telegram is down" in failed.error


def test_rows_claimed_by_a_dead_worker_are_failed_never_resent(project, audience, telegram):
    broadcast = _broadcast(project, segment="not_blocked")
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    # A worker claimed one row, then died before recording the result.
    claimed = broadcasts._claim(broadcast.pk, 1)
    assert len(claimed) == 1
    BroadcastDelivery.objects.filter(pk=claimed[0].pk).update(
        claimed_at=timezone.now() - broadcasts.STALE_SENDING * 2
    )
    assert broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10) == 1
    assert len(telegram) == 1
    broadcast.refresh_from_db()
    assert broadcast.status == "sending"  # one row is still open
    broadcasts.broadcasts_due()
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.sent, broadcast.failed) == ("done", 1, 1)
    assert len(telegram) == 1  # the claimed user never got it a second time


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_claim_the_same_row(project, audience):
    _bot, _ = audience
    for n in range(40):
        bot_user_create(project=project, first_name=f"U{n}")
    broadcast = _broadcast(project, segment="not_blocked", status="sending")
    ids = broadcasts.broadcast_recipient_ids(broadcast=broadcast)
    BroadcastDelivery.objects.bulk_create(
        BroadcastDelivery(broadcast=broadcast, user_id=user_id) for user_id in ids
    )
    claimed: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def worker(slot: int) -> None:
        try:
            barrier.wait()
            while batch := broadcasts._claim(broadcast.pk, 3):
                claimed[slot].extend(d.pk for d in batch)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 42
    assert claimed[0] and claimed[1]


def test_a_broadcast_can_start_a_workflow(project, audience, telegram):
    _bot, users = audience
    workflow = publish(
        project,
        {
            "start": "a",
            "steps": {"a": {"type": "message", "text": "Quiz time, {{ user.first_name }}"}},
        },
        triggers=[],
    )
    broadcast = _broadcast(project, text="", workflow=workflow, segment="level", level="Silver")
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=5)
    [call] = telegram
    assert call["chat_id"] == users["bob"].chat_id
    assert [a.text for a in call["actions"] if isinstance(a, SendMessage)] == ["Quiz time, Bob"]
    assert users["bob"].executions.get().workflow == workflow


def test_the_task_sends_a_share_of_the_bot_rate_per_batch(project, audience, telegram, settings):
    for n in range(10):
        bot_user_create(project=project, first_name=f"U{n}")
    project.bot_send_rate_per_second = 8
    project.save(update_fields=["bot_send_rate_per_second"])
    settings.BROADCAST_RATE_SHARE = 0.5
    broadcast = _broadcast(project, segment="not_blocked")
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send(broadcast.pk)  # one batch; the pace key stops an immediate next one
    assert len(telegram) == 4
    broadcasts.broadcast_send(broadcast.pk)
    assert len(telegram) == 4
    from django.core.cache import cache

    from botplatform.cache import broadcast_pace_key

    cache.delete(broadcast_pace_key(broadcast.pk))
    broadcasts.broadcast_send(broadcast.pk)
    assert len(telegram) == 8


def test_scheduled_broadcasts_start_when_due(project, audience, telegram):
    broadcast = _broadcast(project, segment="not_blocked")
    later = timezone.now() + timezone.timedelta(hours=1)
    assert broadcasts.broadcast_schedule(broadcast_id=broadcast.pk, when=later)
    broadcasts.broadcasts_due()
    broadcast.refresh_from_db()
    assert broadcast.status == "scheduled"
    Broadcast.objects.filter(pk=broadcast.pk).update(scheduled_at=timezone.now())
    broadcasts.broadcasts_due()  # starts it, then sends the first batch (tasks run in-process)
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.total, broadcast.sent) == ("done", 2, 2)
    assert len(telegram) == 2


# --- Admin ------------------------------------------------------------------------------


def test_admin_compose_preview_send_and_progress(
    operator_client, project, audience, telegram, django_capture_on_commit_callbacks
):
    bot, _ = audience
    add = reverse("admin:workflows_broadcast_add")
    form = {
        "project": project.pk,
        "bot": bot.pk,
        "title": "Spring sale",
        "text": "Sale, {{ user.first_name }}!",
        "buttons_text": "Shop | https://shop.example\nMore | data:sale:more",
        "segment": "condition",
        "condition": 'vars.city in ["Paris", "Rome"]',
    }
    response = operator_client.post(add, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    broadcast = Broadcast.objects.get(title="Spring sale")
    assert broadcast.buttons == [
        [{"text": "Shop", "url": "https://shop.example"}],
        [{"text": "More", "data": "sale:more"}],
    ]
    change = reverse("admin:workflows_broadcast_change", args=[broadcast.pk])
    page = operator_client.get(change).content.decode()
    assert "2 user(s) right now" in page and "Save and send now" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(change, {**form, "_send_now": "1"}, follow=True)
    page = response.content.decode()
    # Saved, not sent: first the recipient count, and a button to confirm.
    assert "It goes to <b>2 users</b> right now" in page
    assert 'value="Send to 2 users now"' in page and telegram == []
    broadcast.refresh_from_db()
    assert broadcast.status == "draft"
    send = reverse("admin:workflows_broadcast_send", args=[broadcast.pk])
    assert response.redirect_chain[-1][0] == send
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(send, {"confirm": "1"}, follow=True)
    assert "Sending started." in response.content.decode()
    broadcast.refresh_from_db()
    assert broadcast.status in {"sending", "done"} and broadcast.total == 2
    progress = operator_client.get(
        reverse("admin:workflows_broadcast_progress", args=[broadcast.pk])
    ).json()
    assert progress["total"] == 2 and progress["sent"] == len(telegram) >= 1
    page = operator_client.get(change).content.decode()
    assert "<progress" in page and "Save and send now" not in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page  # nothing to edit


def test_admin_refuses_unusable_broadcasts_readably(operator_client, project, audience):
    response = operator_client.post(
        reverse("admin:workflows_broadcast_add"),
        {
            "project": project.pk,
            "title": "Bad",
            "text": "",
            "buttons_text": "Shop without target",
            "segment": "condition",
            "condition": "balance > 5",
        },
    )
    page = response.content.decode()
    assert response.status_code == 200 and "Traceback" not in page
    assert "Write the message, or choose a workflow to start." in page
    assert "Line 1: write “Label | https://link”." in page
    assert "This condition cannot be used: unknown variable" in page
    assert not Broadcast.objects.filter(title="Bad").exists()


def test_without_a_worker_the_whole_broadcast_goes_out_at_the_same_pace(
    project, audience, telegram, settings
):
    settings.BROADCAST_SEND_INLINE = True
    for n in range(10):
        bot_user_create(project=project, first_name=f"U{n}")
    project.bot_send_rate_per_second = 20  # batches of 10: two batches, one pause
    project.save(update_fields=["bot_send_rate_per_second"])
    broadcast = _broadcast(project, segment="not_blocked")
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send(broadcast.pk)
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.sent) == ("done", 12)
    assert len(telegram) == 12
