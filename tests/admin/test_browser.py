"""In a real browser: log in, build a workflow in the editor, publish, talk to it.

Playwright drives Debian's Chromium (``apt-get install chromium``; Playwright's own
browser download is not used). Screenshots are always taken; with
``ADMIN_SCREENSHOTS=1`` they replace the README's in docs/screenshots/.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.admin.conftest import operator_create
from tests.admin.helpers import browser_log_in
from tests.factories import project_create

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def coffee_club(db):
    """Data first: while Playwright's event loop runs, the ORM would open a second
    connection (an "async context") that nobody closes."""
    from tests.factories import bot_create, bot_user_create

    project = project_create(name="Coffee Club")
    operator_create("ann", project)
    bot_create(project=project)
    for name in ("Ann", "Bob", "Cid"):
        bot_user_create(project=project, first_name=name)
    return project


@pytest.fixture
def browser_page(coffee_club, live_server, settings):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15000)
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def _shots_dir(tmp_path):
    global _SHOTS_DIR
    _SHOTS_DIR = SHOTS if os.environ.get("ADMIN_SCREENSHOTS") == "1" else tmp_path


_SHOTS_DIR = SHOTS


def _shot(page, name: str, selector: str | None = None) -> None:
    _SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    target = _SHOTS_DIR / f"{name}.png"
    if selector:
        page.locator(selector).first.screenshot(path=str(target))
    else:
        page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 1000


def _telegram_traffic(project, settings, *, chats) -> None:
    """Updates through the real path, in a thread of its own: the ORM refuses to run
    inside Playwright's event loop."""
    from django.db import connection

    from botplatform.models import Bot
    from botplatform.telegram.dispatch import update_run
    from botplatform.telegram.journal import updates_record
    from devtools.telegram_double import TelegramDouble

    outcomes: list[str] = []

    def run() -> None:
        double = TelegramDouble().start()
        settings.TELEGRAM_API_URL = double.url
        try:
            bot = Bot.objects.get(project=project)
            double.bot_add(bot.token, bot.username)
            for chat in chats:
                update = double.command(bot.token, chat, "/start")
                (row,) = updates_record(bot_id=bot.pk, updates=[update])
                outcomes.append(update_run(update_pk=row.pk))
        finally:
            double.stop()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert outcomes == ["done"] * len(chats)


def test_build_publish_and_talk_in_the_browser(browser_page, live_server, coffee_club, settings):
    page = browser_page
    base = live_server.url

    browser_log_in(page, base)

    # A new workflow: name it, save, then open the step editor.
    page.goto(f"{base}/admin/workflows/workflow/add/")
    page.select_option("#id_project", label="Coffee Club")
    page.fill("#id_name", "Greeter")
    page.fill("#id_slug", "greeter")
    page.click("input[name=_continue]")
    page.click("text=Edit steps")
    page.wait_for_selector("#editor-form")

    for name in ("hello", "info"):
        page.select_option("#id_new_type", "message")
        page.fill("#id_new_id", name)
        page.click("button[value=add_step]")
        page.wait_for_selector(f"#step-{name}")

    hello = page.locator("#step-hello")
    hello.locator("textarea[name$='-text']").fill("Hi {{ user.first_name }}! What next?")
    hello.locator("input[name$='-btn0-text']").fill("My bonuses")
    hello.locator("select[name$='-btn0-next']").select_option("info")
    hello.locator("input[name$='-btn1-text']").fill("Our site")
    hello.locator("select[name$='-btn1-kind']").select_option("url")
    hello.locator("input[name$='-btn1-value']").fill("https://example.com")
    page.locator("#step-info textarea[name$='-text']").fill(
        "You have <b>{{ user.balance }}</b> bonuses."
    )
    page.locator("#step-start input[name$='-_delete']").check()
    page.select_option("#id_start", "hello")
    page.select_option("select[name=t0-type]", "command")
    page.fill("input[name=t0-value]", "start")
    page.click("#publish")
    page.wait_for_selector("#publish-form")  # review the changes, write a note, confirm
    page.fill("#id_note", "First greeting")
    page.click("#confirm-publish")
    page.wait_for_selector("text=is live as version 1")
    assert page.locator(".step-errors").count() == 0
    _shot(page, "editor")

    page.click("text=Settings and JSON")
    page.wait_for_selector(".diagram-box svg")
    assert page.locator(".diagram-box svg g.step").count() == 2
    _shot(page, "diagram", ".diagram-box")

    # Talk to it in the simulator: type /start, press a button.
    page.goto(f"{base}/admin/workflows/workflow/simulator/")
    page.fill("#sim-text", "/start")
    page.press("#sim-text", "Enter")
    page.wait_for_selector(".sim-msg.bot >> text=What next?")
    assert "Hi ann! What next?" in page.locator(".sim-msg.bot").first.inner_text()
    page.click("button.sim-button:has-text('My bonuses')")
    page.wait_for_selector(".sim-msg.bot >> text=bonuses.")
    assert page.locator(".sim-msg.bot").last.inner_text().startswith("You have 0 bonuses.")
    assert page.locator(".sim-step").inner_text() == "info"
    _shot(page, "simulator")

    page.click("#sim-reset")
    page.wait_for_selector("text=Say /start")
    assert page.locator(".sim-msg.bot").count() == 0

    # Some Telegram traffic for the dashboard: three users send /start to the bot.
    _telegram_traffic(coffee_club, settings, chats=(7001, 7002, 7003))

    # The project's dashboard: the last hour as charts drawn on the server.
    page.goto(f"{base}/admin/botplatform/project/")
    page.click("#result_list a:has-text('Live')")
    page.wait_for_selector("#content svg")
    assert "Coffee Club" in page.locator("#content").inner_text()
    _shot(page, "dashboard")


def test_compose_and_send_a_broadcast_in_the_browser(browser_page, live_server, telegram):
    page = browser_page
    base = live_server.url
    browser_log_in(page, base)
    page.goto(f"{base}/admin/workflows/broadcast/add/")
    page.select_option("#id_project", label="Coffee Club")
    page.fill("#id_title", "Spring sale")
    page.fill("#id_text", "Sale today, {{ user.first_name }}!")
    page.fill("#id_buttons_text", "Shop | https://shop.example")
    page.select_option("#id_segment", "not_blocked")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=user(s) right now")
    assert "3 user(s) right now" in page.locator(".field-recipients").inner_text()
    page.click("#send-now")
    page.wait_for_selector("#recipient-count")  # saved; whom it reaches, then confirm
    assert "It goes to 3 users right now" in page.locator("#recipient-count").inner_text()
    assert telegram == []
    _shot(page, "broadcast_confirm")
    page.click("#confirm-send")
    page.wait_for_selector("text=Sending started.")
    page.wait_for_selector("progress.broadcast-progress")
    assert "sent 3" in page.locator(".field-progress").inner_text()
    _shot(page, "broadcast")
    assert sorted(call["actions"][0].text for call in telegram) == [
        "Sale today, Ann!",
        "Sale today, Bob!",
        "Sale today, Cid!",
    ]
    assert page.locator(".field-status").inner_text().endswith("Sent")
