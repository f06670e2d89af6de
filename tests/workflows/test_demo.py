"""The demo loyalty bot (workflows/fixtures), end to end through event_process."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from botplatform.conversation import AnswerCallback, EditMessage, SendMessage
from botplatform.models import Bot, Project
from tests.factories import bot_user_create
from tests.workflows.conftest import buttons, command, press, text, texts
from users.models import BonusTransaction, UserVariable
from workflows import tasks
from workflows.models import Workflow, WorkflowExecution, WorkflowVersion

TOKEN = "123456789:AAH" + "d" * 32


@pytest.fixture
def demo(db, double):
    double.bot_add(TOKEN, "demo_loyalty_bot")
    call_command("loaddemo", token=TOKEN, stdout=io.StringIO())
    project = Project.objects.get(slug="demo")
    bot = Bot.objects.get(token=TOKEN)
    return project, bot


def test_loaddemo_fills_the_username_from_telegram_so_referral_links_work(demo):
    _project, bot = demo
    assert bot.username == "demo_loyalty_bot"


def test_loaddemo_refuses_a_token_telegram_does_not_know(db, double):
    with pytest.raises(CommandError, match="Telegram refused this token: Unauthorized"):
        call_command("loaddemo", token="987654321:AAH" + "z" * 32, stdout=io.StringIO())
    assert not Bot.objects.exists()


def test_loaddemo_is_idempotent_and_masks_the_token(demo):
    out = io.StringIO()
    call_command("loaddemo", token=TOKEN, stdout=out)
    call_command("loaddemo", stdout=io.StringIO())
    assert TOKEN not in out.getvalue() and "…" in out.getvalue()
    assert Project.objects.filter(slug="demo").count() == 1
    assert Bot.objects.count() == 1
    assert Workflow.objects.filter(project__slug="demo").count() == 2
    assert WorkflowVersion.objects.filter(workflow__project__slug="demo").count() == 2
    with pytest.raises(CommandError, match="does not look like a bot token"):
        call_command("loaddemo", token="nonsense")


def _edited_or_sent(result) -> list[str]:
    return [a.text for a in result.actions if isinstance(a, SendMessage | EditMessage)]


def test_demo_conversation(demo, delivered, django_capture_on_commit_callbacks):
    project, bot = demo
    user = bot_user_create(project=project, first_name="Ann", balance=0)
    for n, amount in enumerate([100, 20, 30, 40, 50, 60], start=1):
        BonusTransaction.objects.create(
            project=project,
            user=user,
            amount=amount,
            kind="earn",
            reason=f"Purchase {n}",
            idempotency_key=f"seed-{n}",
            balance_after=0,
        )
    user.balance = 300
    user.save(update_fields=["balance"])

    welcome = command(user, "start", bot=bot)
    [message] = welcome.actions
    assert "Welcome, <b>Ann</b>!" in message.text and "<b>300</b> bonuses" in message.text
    menu = buttons(welcome)
    assert list(menu) == [
        "💰 Balance",
        "📜 History",
        "🛍 Spend 100 bonuses",
        "🤝 Invite a friend",
        "🎂 Tell us your birthday",
        "⏰ Remind me in a minute",
    ]

    balance = press(user, menu["💰 Balance"], bot=bot, message_id=10)
    assert isinstance(balance.actions[0], AnswerCallback)
    assert isinstance(balance.actions[1], EditMessage) and "<b>300</b>" in balance.actions[1].text
    back = buttons(balance)["« Back to the menu"]

    menu = buttons(press(user, back, bot=bot))
    history = _edited_or_sent(press(user, menu["📜 History"], bot=bot))[0]
    assert "Purchase 6" in history and "Purchase 2" in history and "Purchase 1" not in history
    assert history.count("\n") == 5  # title + five entries

    menu = buttons(command(user, "start", bot=bot))
    with django_capture_on_commit_callbacks(execute=True):
        spent = press(user, menu["🛍 Spend 100 bonuses"], bot=bot, event_id="bot:1:update:500")
    assert "100 bonuses spent. Balance: <b>200</b>" in _edited_or_sent(spent)[0]
    assert BonusTransaction.objects.get(kind="spend").amount == -100
    menu = buttons(command(user, "start", bot=bot))
    assert "<b>200</b> bonuses" in command(user, "start", bot=bot).actions[0].text
    history = _edited_or_sent(
        press(user, buttons(command(user, "start", bot=bot))["📜 History"], bot=bot)
    )[0]
    assert "-100 Spent in the bot" in history.splitlines()[1]
    for _ in range(2):
        menu = buttons(command(user, "start", bot=bot))
        with django_capture_on_commit_callbacks(execute=True):
            press(user, menu["🛍 Spend 100 bonuses"], bot=bot)
    menu = buttons(command(user, "start", bot=bot))
    poor = press(user, menu["🛍 Spend 100 bonuses"], bot=bot)
    assert "Not enough bonuses: you have 0, you need 100." in _edited_or_sent(poor)[0]

    menu = buttons(command(user, "start", bot=bot))
    invite = _edited_or_sent(press(user, menu["🤝 Invite a friend"], bot=bot))[0]
    assert f"https://t.me/demo_loyalty_bot?start=ref_{user.referral_code}" in invite

    menu = buttons(command(user, "start", bot=bot))
    assert (
        "When is your birthday" in texts(press(user, menu["🎂 Tell us your birthday"], bot=bot))[0]
    )
    assert "not a date" in texts(text(user, "yesterday", bot=bot))[0]
    assert texts(text(user, "31.12.1990", bot=bot)) == [
        "Thank you! We will congratulate you on 1990-12-31 🎉"
    ]
    assert UserVariable.objects.get(user=user, key="birthday").value == "1990-12-31"

    menu = buttons(command(user, "start", bot=bot))
    with django_capture_on_commit_callbacks(execute=True):
        reminder = press(user, menu["⏰ Remind me in a minute"], bot=bot)
    assert "remind you in a minute" in _edited_or_sent(reminder)[0]
    execution = WorkflowExecution.objects.get(context__pending__kind="delay")
    WorkflowExecution.objects.filter(pk=execution.pk).update(
        wait_until=timezone.now() - timedelta(seconds=1)
    )
    tasks.executions_sweep()
    [sent] = delivered
    assert sent["bot_id"] == bot.pk and "Reminder: you have <b>0</b>" in sent["actions"][0].text

    # Nothing failed along the way.
    assert not WorkflowExecution.objects.filter(status="failed").exists()


def test_the_demo_project_earns_on_purchases_by_level(demo):
    """A first API purchase in the demo earns something: 5 % for Bronze, more above."""
    from users.models_pos import EarnRule
    from users.purchases import purchase_record

    project, _bot = demo
    assert EarnRule.objects.filter(project=project).count() == 4
    call_command("loaddemo", stdout=io.StringIO())  # again: no duplicates
    assert EarnRule.objects.filter(project=project).count() == 4
    bronze = bot_user_create(project=project, level="Bronze")
    gold = bot_user_create(project=project, level="Gold")
    earned = [
        purchase_record(
            project_id=project.pk, customer_id=user.pk, order_id=f"demo-{user.pk}", amount="100"
        ).purchase.accrued
        for user in (bronze, gold)
    ]
    assert earned == [5, 10]
