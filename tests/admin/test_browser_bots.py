"""In a real browser: connect a bot by pasting its token, see its live state, rotate
its webhook secret. The screenshot of the bot's page is docs/screenshots/bot.png."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.admin.test_browser import ARGS, CHROMIUM, _shot
from tests.admin.test_browser import _shots_dir as _shots_dir  # autouse: where _shot writes
from tests.factories import project_create

pytestmark = [
    pytest.mark.skipif(
        not __import__("pathlib").Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"
    ),
    pytest.mark.django_db(transaction=True),
]

GOOD = "7007007:AAHbrowserbrowserbrowserbrowser0001"
WRONG = "7007008:AAHbrowserbrowserbrowserbrowser0002"


@pytest.fixture
def shop(db, double):
    project = project_create(name="Coffee Club")
    get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    double.bot_add(GOOD, "coffee_club_bot")
    return project


@pytest.fixture
def page(shop, live_server, settings):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        yield page
        browser.close()


def test_connecting_a_bot_by_pasting_its_token(page, live_server, double):
    page.goto(f"{live_server.url}/admin/botplatform/bot/add/")
    page.select_option("#id_project", label="Coffee Club")
    page.fill("#id_new_token", WRONG)
    page.click("input[name=_continue]")
    error = page.locator(".errorlist").first.inner_text()
    assert "Telegram refused this token: Unauthorized (401)" in error

    page.fill("#id_new_token", GOOD)
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist")
    assert page.locator("#id_username").input_value() == "coffee_club_bot"
    live = page.locator("fieldset", has_text="Live state").inner_text()
    assert "no runner is polling it now" in live
    assert "None yet" in live
    assert GOOD.split(":")[1] not in page.content()
    _shot(page, "bot")

    before = page.locator(".field-webhook_secret_masked .readonly").inner_text()
    page.click("button[name=_rotate_webhook_secret]")
    page.wait_for_selector(".messagelist .success")
    assert "new webhook secret set" in page.locator(".messagelist").inner_text()
    after = page.locator(".field-webhook_secret_masked .readonly").inner_text()
    assert after != before
    page.click("text=History")
    assert "Webhook secret rotated." in page.content()
