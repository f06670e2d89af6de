"""The chat simulator: the real engine, a test user, a transcript, never Telegram."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.admin.conftest import operator_create
from tests.factories import bot_create, bot_user_create, execution_create
from tests.workflows.conftest import publish
from users.models import BonusTransaction, BotUser, UserVariable
from workflows.delivery import actions_deliver
from workflows.models import SimulatorMessage, WorkflowExecution
from workflows.services import execution_timer_fire
from workflows.simulator import simulator_user_get, telegram_html

pytestmark = pytest.mark.django_db

FLOW = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "Hi <b>{{ user.first_name }}</b>!",
            "buttons": [[{"text": "City", "next": "ask"}, {"text": "Later", "next": "wait"}]],
        },
        "ask": {"type": "input", "text": "Which city?", "variable": "city", "next": "done"},
        "done": {"type": "message", "text": "{{ vars.city }} it is.", "reply_keyboard": [["Menu"]]},
        "wait": {"type": "delay", "seconds": 30, "next": "late"},
        "late": {"type": "message", "text": "Here I am again."},
    },
}


def _url(project) -> str:
    return reverse("admin:workflows_simulator", args=[project.pk])


def _bot_messages(user) -> list[SimulatorMessage]:
    return list(SimulatorMessage.objects.filter(user=user, direction="bot").order_by("id"))


def test_a_conversation_through_the_simulator_page(
    operator_client, operator, project, telegram, django_capture_on_commit_callbacks
):
    publish(project, FLOW)
    real = bot_user_create(project=project, first_name="Real")
    response = operator_client.post(_url(project), {"action": "send", "text": "/start"})
    assert response.status_code == 302
    user = BotUser.objects.get(project=project, is_test=True)
    assert user.telegram_id < 0 and user.chat_id == user.telegram_id
    [menu] = _bot_messages(user)
    assert menu.text == "Hi <b>ann</b>!"
    assert [b["text"] for b in menu.buttons[0]] == ["City", "Later"]

    city = menu.buttons[0][0]
    operator_client.post(
        _url(project), {"action": "press", "data": city["data"], "message_id": menu.pk}
    )
    with django_capture_on_commit_callbacks(execute=True):  # the cache refresh after commit
        operator_client.post(_url(project), {"action": "send", "text": "Paris"})
    page = operator_client.get(_url(project)).content.decode()
    assert "Which city?" in page and "Paris it is." in page
    assert "[pressed] City" in page
    # The side panel: the execution, its current step, the variables, the step log.
    assert 'class="sim-step">done<' in page and "<th>city</th><td>Paris</td>" in page
    assert "<td>ask</td><td>input</td>" in page
    # The reply keyboard is offered as buttons.
    assert 'name="text" value="Menu"' in page
    # The real user was never touched and nothing went to Telegram.
    assert not UserVariable.objects.filter(user=real).exists()
    assert not WorkflowExecution.objects.filter(user=real).exists()
    assert telegram == []


def test_a_stale_button_and_an_unknown_text_are_explained(operator_client, project, telegram):
    publish(project, FLOW)
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    menu = _bot_messages(user)[0]
    operator_client.post(
        _url(project),
        {"action": "press", "data": menu.buttons[0][0]["data"], "message_id": menu.pk},
    )
    operator_client.post(
        _url(project),
        {"action": "press", "data": menu.buttons[0][1]["data"], "message_id": menu.pk},
    )
    notices = SimulatorMessage.objects.filter(user=user, direction="notice")
    assert [n.text for n in notices] == ["This button is no longer active."]
    WorkflowExecution.objects.filter(user=user).update(status="cancelled")
    from django.core.cache import cache

    cache.clear()
    operator_client.post(_url(project), {"action": "send", "text": "hello?"})
    assert "No workflow answered" in notices.order_by("-id").first().text


def test_delayed_answers_land_in_the_transcript_not_in_telegram(operator_client, project, telegram):
    publish(project, FLOW)
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    menu = _bot_messages(user)[0]
    operator_client.post(
        _url(project),
        {"action": "press", "data": menu.buttons[0][1]["data"], "message_id": menu.pk},
    )
    execution = WorkflowExecution.objects.get(user=user, status="running")
    assert execution.current_step == "wait"
    seq = execution.context["pending"]["seq"]
    assert execution_timer_fire(execution_id=execution.pk, seq=seq, force=True)
    assert _bot_messages(user)[-1].text == "Here I am again."
    assert telegram == []


def test_without_a_broker_the_page_itself_brings_a_due_delay(
    operator_client, project, telegram, settings
):
    """The zero-setup default runs only runserver: no beat, yet the reminder comes."""
    publish(project, FLOW)
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    menu = _bot_messages(user)[0]
    operator_client.post(
        _url(project),
        {"action": "press", "data": menu.buttons[0][1]["data"], "message_id": menu.pk},
    )
    execution = WorkflowExecution.objects.get(user=user, status="running")
    operator_client.get(_url(project))
    assert _bot_messages(user)[-1].text != "Here I am again."  # not due yet

    WorkflowExecution.objects.filter(pk=execution.pk).update(
        wait_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a broker exists: beat's job, not the page's
    operator_client.get(_url(project))
    assert _bot_messages(user)[-1].text != "Here I am again."
    settings.CELERY_TASK_ALWAYS_EAGER = True
    operator_client.get(_url(project))
    assert _bot_messages(user)[-1].text == "Here I am again."
    assert telegram == []


def test_the_delivery_router_sends_real_chats_to_telegram(project, telegram):
    bot = bot_create(project=project)
    from botplatform.conversation import SendMessage

    actions_deliver(bot_id=bot.pk, chat_id=42, actions=[SendMessage(chat_id=42, text="hi")])
    assert telegram == [{"bot_id": bot.pk, "chat_id": 42, "actions": [SendMessage(42, "hi")]}]
    # Without a bot, a chat that is not a test user's is dropped, never sent.
    real = bot_user_create(project=project)
    actions_deliver(bot_id=None, chat_id=real.chat_id, actions=[SendMessage(real.chat_id, "x")])
    assert len(telegram) == 1
    assert not SimulatorMessage.objects.exists()


def test_reset_starts_over_with_a_fresh_test_user(operator_client, project, telegram):
    publish(project, FLOW)
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    menu = _bot_messages(user)[0]
    operator_client.post(
        _url(project),
        {"action": "press", "data": menu.buttons[0][0]["data"], "message_id": menu.pk},
    )
    operator_client.post(_url(project), {"action": "send", "text": "Rome"})
    from users.ledger import bonus_earn

    bonus_earn(user_id=user.pk, amount=50, idempotency_key="sim-test")
    ledger = list(BonusTransaction.objects.filter(user=user).values_list("pk", "amount"))
    assert ledger
    response = operator_client.post(_url(project), {"action": "reset"})
    assert response.status_code == 302
    fresh = BotUser.objects.get(project=project, is_test=True, telegram_id=user.telegram_id)
    assert fresh.pk != user.pk and fresh.balance == 0
    assert not SimulatorMessage.objects.filter(user__is_test=True).exists()
    assert not WorkflowExecution.objects.filter(user=fresh).exists()
    # The ledger is never deleted, not even a test user's: the old user is set aside.
    assert list(BonusTransaction.objects.filter(user=user).values_list("pk", "amount")) == ledger
    old = BotUser.objects.get(pk=user.pk)
    assert old.is_test and old.telegram_id < -(10**17) and old.balance == 50
    assert not WorkflowExecution.objects.filter(
        user=old, status__in=["waiting", "running"]
    ).exists()
    page = operator_client.get(_url(project)).content.decode()
    assert "Rome" not in page and "Say /start" in page


def test_start_a_workflow_without_a_trigger_and_the_fetch_fragment(
    operator_client, project, telegram
):
    workflow = publish(project, FLOW, triggers=[])
    response = operator_client.post(
        _url(project), {"action": "start", "workflow": workflow.pk}, HTTP_X_REQUESTED_WITH="fetch"
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body and "Hi <b>ann</b>!" in body
    assert "Started “" in body


def test_each_operator_has_their_own_test_user_per_project(project, other_project):
    ann = operator_create("ann2", project, other_project)
    bob = operator_create("bob", project)
    ids = {
        simulator_user_get(project_id=project.pk, operator=ann).chat_id,
        simulator_user_get(project_id=other_project.pk, operator=ann).chat_id,
        simulator_user_get(project_id=project.pk, operator=bob).chat_id,
    }
    assert len(ids) == 3 and all(i < -(10**15) for i in ids)
    assert simulator_user_get(project_id=project.pk, operator=ann).chat_id in ids


def test_a_new_test_user_arrives_like_a_real_one(project):
    project.welcome_bonus = 25
    project.save(update_fields=["welcome_bonus"])
    ann = operator_create("ann3", project)
    user = simulator_user_get(project_id=project.pk, operator=ann)
    assert user.is_test is True
    assert (user.balance, user.level) == (25, "Bronze")
    assert simulator_user_get(project_id=project.pk, operator=ann).pk == user.pk
    assert user.transactions.count() == 1


def test_bot_html_is_shown_as_telegram_would_and_nothing_else_runs():
    shown = telegram_html('<b>ok</b> <script>alert(1)</script> <a href="https://x.io">x</a>')
    assert "<b>ok</b>" in shown and "<script>" not in shown and "&lt;script&gt;" in shown
    assert '<a href="https://x.io" target="_blank"' in shown
    assert "javascript" not in telegram_html('<a href="javascript:alert(1)">x</a>').replace(
        "&lt;a href=&quot;javascript", ""
    )


def test_a_real_users_conversation_is_not_disturbed(operator_client, project, telegram):
    workflow = publish(project, FLOW)
    real = bot_user_create(project=project)
    waiting = execution_create(workflow=workflow, user=real, status="waiting", current_step="ask")
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    operator_client.post(_url(project), {"action": "reset"})
    waiting.refresh_from_db()
    assert waiting.status == "waiting"


def test_the_draft_can_be_tried_before_publishing(operator_client, project, telegram):
    from workflows.models import WorkflowVersion
    from workflows.publishing import workflow_publish

    workflow = publish(project, FLOW)
    workflow.draft = {
        "start": "new",
        "steps": {
            "new": {
                "type": "message",
                "text": "Draft says hi",
                "buttons": [[{"text": "On", "next": "end"}]],
            },
            "end": {"type": "message", "text": "Draft done"},
        },
    }
    workflow.save(update_fields=["draft"])
    for _ in range(2):  # the same draft twice: one preview
        operator_client.post(_url(project), {"action": "start", "workflow": f"draft:{workflow.pk}"})
    user = BotUser.objects.get(project=project, is_test=True)
    message = _bot_messages(user)[-1]
    assert message.text == "Draft says hi"
    operator_client.post(
        _url(project),
        {"action": "press", "data": message.buttons[0][0]["data"], "message_id": message.pk},
    )
    assert _bot_messages(user)[-1].text == "Draft done"
    assert WorkflowVersion.objects.filter(workflow=workflow, is_preview=True).count() == 1
    workflow.refresh_from_db()
    assert workflow.published_version.number == 1  # users still get version 1
    # /start still reaches the published version, as in Telegram.
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    assert _bot_messages(user)[-1].text.startswith("Hi <b>")
    # Previews are not versions: not listed, and numbering goes on from the real ones.
    page = operator_client.get(
        reverse("admin:workflows_workflow_versions", args=[workflow.pk])
    ).content.decode()
    assert 'id="version-0"' not in page and "draft preview" not in page
    assert workflow_publish(workflow=workflow).number == 2


def test_an_invalid_draft_is_explained_not_run(operator_client, project, telegram):
    workflow = publish(project, FLOW)
    workflow.draft = {"start": "a", "steps": {"a": {"type": "message", "text": "{{ nope }}"}}}
    workflow.save(update_fields=["draft"])
    operator_client.post(_url(project), {"action": "start", "workflow": f"draft:{workflow.pk}"})
    user = BotUser.objects.get(project=project, is_test=True)
    notice = SimulatorMessage.objects.filter(user=user, direction="notice").last()
    assert "cannot run yet" in notice.text and "unknown variable" in notice.text
    assert not _bot_messages(user)


def test_forged_simulator_posts_get_a_readable_answer(operator_client, project, telegram):
    for value in ("abc", "draft:", "draft:x", "999999", ""):
        response = operator_client.post(
            _url(project), {"action": "start", "workflow": value}, follow=True
        )
        assert response.status_code == 200
        assert "Choose a workflow of this project." in response.content.decode()
    response = operator_client.post(
        _url(project), {"action": "press", "data": "w:1:2:3", "message_id": "nope"}, follow=True
    )
    assert response.status_code == 200 and "This button is no longer active." in (
        response.content.decode()
    )


def test_the_fetch_fragment_carries_error_messages(operator_client, project, telegram):
    response = operator_client.post(
        _url(project), {"action": "start", "workflow": "abc"}, HTTP_X_REQUESTED_WITH="fetch"
    )
    assert 'class="messagelist"' in response.content.decode()
    assert "Choose a workflow of this project." in response.content.decode()


LOOKUP = {
    "start": "ask",
    "steps": {
        "ask": {"type": "input", "text": "Which city?", "variable": "city", "next": "call"},
        "call": {
            "type": "http_request",
            # Loopback: refused at once (the project does not allow private addresses).
            "url": "http://127.0.0.1:9/weather?city={{ vars.city }}",
            "on_success": "done",
            "on_failure": "done",
        },
        "done": {"type": "message", "text": "Done."},
    },
}


def test_the_step_log_reads_as_labelled_values_not_python_dicts(
    operator_client, project, telegram, django_capture_on_commit_callbacks
):
    publish(project, LOOKUP)
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    with django_capture_on_commit_callbacks(execute=True):  # the HTTP step's task
        operator_client.post(_url(project), {"action": "send", "text": "<b>Paris</b>"})
    page = operator_client.get(_url(project)).content.decode()
    log = page[page.index('id="sim-log"') :]
    log = log[: log.index("</table>")]
    assert "Done." in page  # the HTTP step ran and went on
    # No Python repr, raw or escaped, anywhere in the step log.
    assert "{'" not in log and "{&#x27;" not in log and "True" not in log
    # The input step: what the user sent (escaped) and what it stored.
    assert "<dt>event</dt><dd>text</dd>" in log
    assert "<dt>answer</dt><dd>&lt;b&gt;Paris&lt;/b&gt;</dd>" in log
    # The HTTP step: nested fields as dotted labels, booleans in words.
    assert "<dt>request.method</dt><dd>GET</dd>" in log
    # The user's answer travels percent-encoded in the URL.
    assert "<dt>request.url</dt><dd>http://127.0.0.1:9/weather?city=%3Cb%3EParis%3C%2Fb%3E<" in log
    assert "<dt>response.ok</dt><dd>no</dd>" in log
    assert "<dt>response.error</dt><dd>127.0.0.1 resolves to 127.0.0.1, a private" in log


def test_readable_fields_flattens_nested_values():
    from workflows.simulator import readable_fields, readable_value

    assert readable_fields({"a": {"b": 1, "c": [1, "x"]}, "d": None, "e": True}) == [
        ("a.b", "1"),
        ("a.c", '[1, "x"]'),
        ("d", "(empty)"),
        ("e", "yes"),
    ]
    assert readable_fields({}) == [] and readable_fields(None) == []
    assert readable_value({"nested": "ü"}) == '{"nested": "ü"}'
    assert readable_value("x" * 1000).endswith("…") and len(readable_value("x" * 1000)) == 300


def test_a_users_value_is_escaped_once_not_twice(operator_client, project, telegram):
    """Issue 17: the simulator showed ``Anna &lt;b&gt;`` for the answer ``Anna <b>``."""
    publish(project, FLOW)
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    [menu] = _bot_messages(user)
    operator_client.post(
        _url(project),
        {"action": "press", "data": menu.buttons[0][0]["data"], "message_id": menu.pk},
    )
    operator_client.post(_url(project), {"action": "send", "text": "Anna <b>&amp;"})
    page = operator_client.get(_url(project)).content.decode()
    # The bot's text is Telegram HTML ("Anna &lt;b&gt;&amp;amp; it is."): shown as the user
    # typed it, with nothing made bold and nothing escaped twice.
    assert '<div class="sim-text">Anna &lt;b&gt;&amp;amp; it is.</div>' in page
    transcript = page.split('id="sim-chat"', 1)[1].split('class="sim-side"', 1)[0]
    assert "&amp;lt;" not in transcript  # (the step log shows the raw Telegram HTML)
    shown = telegram_html("Hi &lt;b&gt;x&lt;/b&gt; &#169; &quot;q&quot; <i>y</i> &bogus;")
    assert shown == "Hi &lt;b&gt;x&lt;/b&gt; &#169; &quot;q&quot; <i>y</i> &amp;bogus;"


def test_the_customer_card_shows_as_a_photo_line_in_the_transcript(
    operator_client, project, telegram
):
    publish(
        project, {"start": "card", "steps": {"card": {"type": "show_card", "caption": "Yours"}}}
    )
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    [card] = _bot_messages(user)
    assert card.text.startswith("[photo] Yours\n<code>") and user.card_code[:4] in card.text
    assert telegram == []


def test_the_simulator_switches_the_test_users_language(operator_client, project, telegram):
    project.languages, project.default_language = "en, ru", "en"
    project.save(update_fields=["languages", "default_language"])
    publish(
        project,
        {
            "start": "hi",
            "steps": {"hi": {"type": "message", "text": {"en": "Hello", "ru": "Привет"}}},
        },
    )
    page = operator_client.get(_url(project)).content.decode()
    assert 'id="sim-language"' in page and ">Русский</option>" in page
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    user = BotUser.objects.get(project=project, is_test=True)
    assert [m.text for m in _bot_messages(user)] == ["Hello"]
    operator_client.post(_url(project), {"action": "language", "language": "ru"})
    operator_client.post(_url(project), {"action": "send", "text": "/start"})
    assert [m.text for m in _bot_messages(user)] == ["Hello", "Привет"]
    assert BotUser.objects.get(pk=user.pk).language == "ru"
    page = operator_client.get(_url(project)).content.decode()
    assert '<option value="ru" selected>' in page
    # A language the project does not speak is refused readably; nothing changes.
    response = operator_client.post(
        _url(project), {"action": "language", "language": "de\x00"}, follow=True
    )
    assert "This project does not speak that language." in response.content.decode()
    assert BotUser.objects.get(pk=user.pk).language == "ru"
