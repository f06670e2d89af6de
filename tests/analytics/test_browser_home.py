"""In a real browser, after real Telegram traffic (the demo bot driven by ``runbot``
through the Bot API double): the operator's home, the programme dashboard, the
onboarding funnel and the broadcast results. Screenshots (with ADMIN_SCREENSHOTS=1):
docs/screenshots/home.png, programme.png, funnel.png, broadcast-results.png."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.rollups import rollup_run
from botplatform.models import Bot, Heartbeat, TelegramUpdate
from tests.admin.conftest import operator_create
from tests.admin.test_browser import ARGS, CHROMIUM, _shot
from tests.admin.test_browser import _shots_dir as _shots_dir  # autouse: where _shot writes
from tests.botplatform.telegram.test_runbot import runbots  # noqa: F401  (fixture)
from workflows import broadcasts
from workflows.models import Broadcast

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
    pytest.mark.django_db(transaction=True),
]

TOKEN = "777002:AAH" + "h" * 32
CHATS = (61001, 61002, 61003, 61004)


def _buttons(double, chat: int) -> tuple[int, dict[str, str]]:
    mine = [m for (c, _), m in double.messages.items() if c == chat]
    message = max(mine, key=lambda m: m["message_id"])
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return message["message_id"], {
        b["text"]: b.get("callback_data", "") for row in rows for b in row
    }


def _traffic(double, runbots) -> Bot:  # noqa: F811
    double.bot_add(TOKEN, "club_demo_bot")
    call_command("loaddemo", "--token", TOKEN)
    bot = Bot.objects.get(username="club_demo_bot")
    runner = runbots(["--all"], TELEGRAM_EVENT_HANDLER="workflows.handler.handler")

    def answered(count: int) -> bool:
        return TelegramUpdate.objects.filter(bot=bot, status="done").count() >= count

    done = 0
    for chat in CHATS:
        double.command(TOKEN, chat, "/start")
        done += 1
        assert double.wait_for(lambda n=done: answered(n), timeout=30), runner.output()
    for chat in CHATS[:2]:  # two of them spend their welcome bonus
        message_id, buttons = _buttons(double, chat)
        spend = next(data for text, data in buttons.items() if "Spend" in text)
        double.callback(TOKEN, chat, spend, message_id=message_id)
        done += 1
        assert double.wait_for(lambda n=done: answered(n), timeout=30), runner.output()
    # A real broadcast through the sender; two members press its button, and the
    # runner records the presses in the update journal like any update.
    broadcast = Broadcast.objects.create(
        project=bot.project,
        bot=bot,
        title="Tuesday double points",
        text="Double points today!",
        buttons=[[{"text": "Count me in", "data": "double-points"}]],
        segment="all",
    )
    broadcasts.broadcast_start(broadcast_id=broadcast.pk)
    broadcasts.broadcast_send_batch(broadcast_id=broadcast.pk, limit=10)
    for chat in CHATS[:2]:
        double.press(TOKEN, chat, "Count me in")
        done += 1
        assert double.wait_for(lambda n=done: answered(n), timeout=30), runner.output()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 0
    return bot


@pytest.fixture
def page(live_server, settings):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(15000)
        yield page
        browser.close()


@pytest.fixture
def world(double, runbots):  # noqa: F811  (before the browser: its event loop forbids the ORM)
    bot = _traffic(double, runbots)
    project = bot.project
    Heartbeat.objects.update_or_create(name="scheduler", defaults={"at": timezone.now()})
    rollup_run()
    operator_create("manager", project, role="owner").set_password("pw")
    manager = project.memberships.get().user
    manager.set_password("pw")
    manager.save()
    return project


def test_home_and_dashboards_after_real_telegram_traffic(world, page, live_server):

    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "manager")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_selector("#home-today")
    today = page.locator("#home-today").inner_text()
    assert "Members\t4" in today or "Members 4" in today.replace("\t", " ")
    assert "What the programme owes" in today
    assert "@club_demo_bot" in page.locator("#home-bots").inner_text()
    assert (
        "Main menu" in page.locator("#home-workflows").inner_text()
        or page.locator("#home-workflows").count()
    )
    assert "Telegram updates" not in page.content()  # Diagnostics: superusers only
    _shot(page, "home")

    page.click("text=Programme figures")
    page.wait_for_selector("table[data-table=summary]")
    summary = page.locator("table[data-table=summary]").inner_text()
    assert "Members (end of period)\t4" in summary
    assert "Bonuses spent\t200" in summary
    assert page.locator("svg.analytics-chart").count() == 5
    _shot(page, "programme")

    page.click("text=Workflow funnels")
    page.wait_for_selector("svg.workflow-diagram")
    funnel = page.locator("table[data-table=funnel]").inner_text()
    assert "(started)\t4\t" in funnel  # the busiest workflow (the main menu) first
    assert page.locator("#id_workflow option:checked").inner_text() == "Main menu"
    _shot(page, "funnel")

    page.click("text=Broadcast results")
    page.wait_for_selector("table[data-table=broadcasts]")
    results = page.locator("table[data-table=broadcasts]").inner_text()
    assert "Tuesday double points" in results
    header = page.locator("table[data-table=broadcasts] th").all_text_contents()
    row = page.locator("table[data-table=broadcasts] tbody tr").first
    cells = dict(zip(header, row.locator("td").all_text_contents(), strict=True))
    assert cells["Delivered"] == "4"
    assert (cells["Button presses"], cells["Members who pressed"]) == ("2", "2")
    assert cells["Pressed % of delivered"] == "50.0"
    _shot(page, "broadcast-results")
