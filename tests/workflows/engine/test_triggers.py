"""Trigger kinds, the waiting execution getting input first, interrupts, the cache."""

from __future__ import annotations

from django.core.cache import cache

from botplatform.cache import workflow_waiting_key
from botplatform.conversation import AnswerCallback, InputEvent
from tests.workflows.conftest import buttons, command, press, publish, text, texts
from workflows.models import WorkflowExecution
from workflows.services import event_process

Status = WorkflowExecution.Status


def say(project, slug, message, triggers, priority=0):
    return publish(
        project,
        {"start": "m", "steps": {"m": {"type": "message", "text": message}}},
        triggers=triggers,
        slug=slug,
        priority=priority,
    )


def test_command_with_deep_link_payload(project, user):
    say(project, "plain", "plain start", [{"type": "command", "command": "start"}])
    say(
        project,
        "ref",
        "referral start",
        [{"type": "command", "command": "/start", "payload_prefix": "ref_"}],
        priority=5,
    )
    say(
        project,
        "promo",
        "promo",
        [{"type": "command", "command": "start", "payload": "promo"}],
        priority=5,
    )
    assert texts(command(user, "start")) == ["plain start"]
    assert texts(command(user, "start", "ref_abc")) == ["referral start"]
    assert texts(command(user, "START", "promo")) == ["promo"]
    assert texts(command(user, "help")) == []
    assert command(user, "help").handled is False


def test_exact_text_regex_callback_and_fallback(project, user):
    say(project, "exact", "exact", [{"type": "text", "text": "Balance"}])
    say(project, "regex", "regex", [{"type": "regex", "pattern": r"^hel+o\b"}])
    say(project, "cb", "callback", [{"type": "callback", "data": "menu:history"}])
    say(project, "cbp", "callback prefix", [{"type": "callback", "prefix": "shop:"}])
    say(project, "fb", "fallback", [{"type": "fallback"}])
    assert texts(text(user, " balance ")) == ["exact"]
    assert texts(text(user, "Hellllo there")) == ["regex"]
    assert texts(text(user, "something else")) == ["fallback"]
    assert texts(command(user, "unknown")) == ["fallback"]
    cb = press(user, "menu:history", query_id="c1")
    assert cb.actions[0] == AnswerCallback(callback_query_id="c1") and texts(cb) == ["callback"]
    assert texts(press(user, "shop:42")) == ["callback prefix"]
    # A callback nobody handles still gets an answer (no endless spinner).
    unknown = press(user, "nobody:home", query_id="c9")
    assert unknown.actions == [AnswerCallback(callback_query_id="c9")] and not unknown.handled


def test_priority_and_inactive_and_unpublished(project, user):
    say(project, "low", "low", [{"type": "text", "text": "hi"}], priority=1)
    high = say(project, "high", "high", [{"type": "text", "text": "hi"}], priority=9)
    assert texts(text(user, "hi")) == ["high"]
    high.is_active = False
    high.save(update_fields=["is_active"])
    assert texts(text(user, "hi")) == ["low"]


def test_waiting_execution_gets_input_first_and_interrupting_command_restarts(project, user):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "City?", "variable": "city", "next": "ok"},
                "ok": {"type": "message", "text": "City is {{ vars.city }}"},
            },
        },
        triggers=[{"type": "command", "command": "start", "interrupt": True}],
        slug="ask",
    )
    say(project, "hello", "hello trigger", [{"type": "text", "text": "Hello"}])
    say(project, "help", "help", [{"type": "command", "command": "help"}])
    command(user, "start")
    # A text that would match another trigger goes to the waiting question first.
    assert texts(text(user, "Hello")) == ["City is Hello"]

    command(user, "start")
    first = WorkflowExecution.objects.get(status=Status.WAITING)
    # A non-interrupting command is an answer too.
    assert texts(command(user, "help")) == ["City is /help"]
    command(user, "start")
    second = WorkflowExecution.objects.get(status=Status.WAITING)
    assert second.pk != first.pk
    # /start interrupts: the old wait is cancelled, a new one starts.
    assert texts(command(user, "start")) == ["City?"]
    second.refresh_from_db()
    assert second.status == Status.CANCELLED and "interrupted" in second.error
    assert WorkflowExecution.objects.filter(status=Status.WAITING).count() == 1


def test_trigger_while_buttons_shown_cancels_the_old_wait_and_its_buttons(project, user):
    publish(
        project,
        {
            "start": "menu",
            "steps": {
                "menu": {
                    "type": "message",
                    "text": "Menu",
                    "buttons": [[{"text": "A", "next": "a"}]],
                },
                "a": {"type": "message", "text": "A!"},
            },
        },
    )
    say(project, "other", "other", [{"type": "text", "text": "other"}])
    shown = buttons(command(user, "start"))
    assert texts(text(user, "other")) == ["other"]
    stale = press(user, shown["A"], query_id="z")
    assert stale.actions == [
        AnswerCallback(
            callback_query_id="z",
            text="This button is no longer active.",
        )
    ]


def test_waiting_cache_is_used_and_kept_correct(project, user, django_assert_max_num_queries):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "City?", "variable": "city", "next": "done"},
                "done": {"type": "end"},
            },
        },
    )
    session = f"sim:{user.chat_id}"
    key = workflow_waiting_key(session)
    command(user, "start")
    execution = WorkflowExecution.objects.get()
    assert cache.get(key) == execution.pk
    text(user, "Rome")
    assert cache.get(key) is None  # left the waiting state: key dropped
    text(user, "anything")  # nothing waits: looked up in the DB, remembered as "none"
    assert cache.get(key) == 0
    # A stale positive entry is verified against the database, never trusted blindly.
    cache.set(key, 999_999, 300)
    assert texts(command(user, "start")) == ["City?"]
    assert cache.get(key) == WorkflowExecution.objects.get(status=Status.WAITING).pk
    # With the cache gone (Redis flushed, TTL over), the database is the truth.
    cache.delete(key)
    assert texts(text(user, "Oslo")) == []
    assert WorkflowExecution.objects.filter(status=Status.WAITING).count() == 0


def test_sessions_are_separate_per_bot(project, user):
    from tests.factories import bot_create

    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "City?", "variable": "city", "next": "ok"},
                "ok": {"type": "message", "text": "ok {{ vars.city }}"},
            },
        },
    )
    bot_a, bot_b = bot_create(project=project), bot_create(project=project)
    command(user, "start", bot=bot_a)
    assert WorkflowExecution.objects.get().session_key == f"{bot_a.pk}:{user.chat_id}"
    # Another bot's chat has nothing waiting.
    assert text(user, "Rome", bot=bot_b).handled is False
    assert texts(text(user, "Rome", bot=bot_a)) == ["ok Rome"]


def test_explicit_session_key(project, user):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "?", "variable": "x", "next": "e"},
                "e": {"type": "end"},
            },
        },
    )
    event_process(user=user, event=InputEvent(kind="command", command="start"), session_key="web:1")
    assert WorkflowExecution.objects.get().session_key == "web:1"


def test_conversation_goes_on_when_redis_is_unreachable(project, user, settings):
    publish(
        project,
        {
            "start": "ask",
            "steps": {
                "ask": {"type": "input", "text": "City?", "variable": "city", "next": "ok"},
                "ok": {"type": "message", "text": "ok {{ vars.city }}"},
            },
        },
    )
    config = dict(settings.CACHES["default"])
    config["LOCATION"] = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.CACHES = {"default": config}
    assert texts(command(user, "start")) == ["City?"]
    assert texts(text(user, "Rome")) == ["ok Rome"]


def test_triggers_saved_in_a_draft_start_nothing_until_published(
    project, user, django_capture_on_commit_callbacks
):
    from workflows.publishing import workflow_draft_save, workflow_publish

    flow = say(project, "greet", "hello", [{"type": "text", "text": "hi"}])
    assert texts(text(user, "hi")) == ["hello"]  # the trigger table is now cached
    with django_capture_on_commit_callbacks(execute=True):
        workflow_draft_save(
            workflow=flow,
            definition=flow.draft,
            triggers=[{"type": "text", "text": "coffee"}, {"type": "fallback"}],
        )
    # The draft's triggers are not live: users still get the published ones.
    assert texts(text(user, "coffee")) == []
    assert texts(text(user, "anything at all")) == []
    assert texts(text(user, "hi")) == ["hello"]
    with django_capture_on_commit_callbacks(execute=True):
        workflow_publish(workflow=flow, note="coffee trigger")
    assert texts(text(user, "coffee")) == ["hello"]
    assert texts(text(user, "hi")) == ["hello"]  # the fallback now answers everything


def test_the_trigger_table_follows_publishes_not_saves(
    project, user, django_capture_on_commit_callbacks
):
    from botplatform.cache import workflow_triggers_key
    from workflows.engine.triggers import trigger_candidates
    from workflows.publishing import workflow_draft_save, workflow_publish

    flow = say(project, "greet", "hello", [{"type": "text", "text": "hi"}])
    table = trigger_candidates(project.pk)
    key = workflow_triggers_key(project.pk)
    assert cache.get(key) == table
    with django_capture_on_commit_callbacks(execute=True):
        workflow_draft_save(
            workflow=flow, definition=flow.draft, triggers=[{"type": "text", "text": "x"}]
        )
        flow.name = "Renamed"
        flow.save(update_fields=["name", "updated_at"])
    assert cache.get(key) == table  # saving the draft keeps users' table
    with django_capture_on_commit_callbacks(execute=True):
        workflow_publish(workflow=flow, note="x")
    assert cache.get(key) is None  # dropped after the publish committed
    assert trigger_candidates(project.pk)[0]["triggers"] == [{"type": "text", "text": "x"}]
