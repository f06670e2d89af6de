"""In a real browser: a draft's trigger starts nothing until it is published with a note,
and restoring an old version changes the draft only.

Users are real Telegram users here: their messages go through the update dispatch
and the Telegram test double. With ``ADMIN_SCREENSHOTS=1`` the screenshots of the
publish page and the restore warning replace those in docs/screenshots/.
"""

from __future__ import annotations

import threading

import pytest

from tests.admin import test_browser as shared
from tests.admin.helpers import browser_log_in

# The browser and the Coffee Club project of test_browser (fixtures, used by name).
from tests.admin.test_browser import _shot, _shots_dir, browser_page, coffee_club  # noqa: F401

pytestmark = shared.pytestmark

MENU = {"start": "menu", "steps": {"menu": {"type": "message", "text": "Our menu: tea, cake."}}}


@pytest.fixture
def menu_workflow(coffee_club):  # noqa: F811
    """Version 1 is live (started by /menu), and one customer is mid-conversation on it."""
    from tests.factories import bot_user_create, execution_create
    from tests.workflows.conftest import publish

    workflow = publish(
        coffee_club, MENU, slug="menu", triggers=[{"type": "command", "command": "menu"}]
    )
    workflow.name = "Menu"
    workflow.save(update_fields=["name"])
    execution_create(
        workflow=workflow,
        user=bot_user_create(project=coffee_club, first_name="Dee"),
        status="waiting",
    )
    return workflow


def _customer_says(project, settings, text: str, chat: int) -> list[str]:
    """What the bot answers a Telegram user (the real update path, in its own thread:
    the ORM refuses to run inside Playwright's event loop)."""
    from django.db import connection

    from botplatform.models import Bot
    from botplatform.telegram.dispatch import update_run
    from botplatform.telegram.journal import updates_record
    from devtools.telegram_double import TelegramDouble

    replies: list[str] = []
    outcome: list[str] = []

    def run() -> None:
        double = TelegramDouble().start()
        settings.TELEGRAM_API_URL = double.url
        try:
            bot = Bot.objects.get(project=project)
            double.bot_add(bot.token, bot.username)
            update = double.message(bot.token, chat, text)
            update["update_id"] = chat  # a fresh double counts from 1 again
            (row,) = updates_record(bot_id=bot.pk, updates=[update])
            outcome.append(update_run(update_pk=row.pk))
            replies.extend(double.sent_texts(bot.token, chat))
        finally:
            double.stop()
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert outcome == ["done"], "the update was not handled"  # an empty reply must mean silence
    return replies


def test_a_draft_trigger_starts_nothing_until_published_and_restore_only_fills_the_draft(
    menu_workflow,
    coffee_club,  # noqa: F811
    live_server,
    settings,
    browser_page,  # noqa: F811
):
    page = browser_page
    base = live_server.url
    workflow = menu_workflow
    browser_log_in(page, base)

    # 1. A trigger saved in the draft: "Exact text: coffee", and a new text.
    page.goto(f"{base}/admin/workflows/workflow/{workflow.pk}/editor/")
    page.select_option("select[name=t1-type]", "text")
    page.fill("input[name=t1-value]", "coffee")
    page.locator("#step-menu textarea[name$='-text']").fill("Coffee time!\nEspresso or latte?")
    page.click(".submit-row button[value=save]")
    page.wait_for_selector("text=Draft saved.")

    # Customers get nothing from the draft's trigger, and the live text for /menu.
    assert _customer_says(coffee_club, settings, "coffee", chat=8001) == []
    assert _customer_says(coffee_club, settings, "/menu", chat=8002) == ["Our menu: tea, cake."]
    assert "changes that are not live yet" in page.locator(".draft-unpublished").inner_text()

    # 2. Publish: the page shows the changes in words, the conversations in flight,
    #    and refuses to go on without a note.
    page.click("#publish")
    page.wait_for_selector("#publish-form")
    triggers = page.locator(".vdiff-triggers").inner_text()
    assert "Exact text: coffee" in triggers
    step = page.locator(".vdiff-step[data-step=menu]")
    assert step.locator(".vdiff-old").inner_text() == "Our menu: tea, cake."
    assert step.locator(".vdiff-new").inner_text() == "Coffee time!\nEspresso or latte?"
    in_flight = page.locator("#in-flight").inner_text()
    assert "1 conversation on version 1 (1 waiting for the user" in in_flight
    _shot(page, "publish")
    page.click("#confirm-publish")
    page.wait_for_selector("text=Write a short note")
    assert _customer_says(coffee_club, settings, "coffee", chat=8003) == []
    page.fill("#id_note", "Coffee in the menu")
    page.click("#confirm-publish")
    page.wait_for_selector("text=is live as version 2")
    assert _customer_says(coffee_club, settings, "coffee", chat=8004) == [
        "Coffee time!\nEspresso or latte?"
    ]

    # 3. Unpublished work in the draft, then "Copy into the draft" of version 1: a
    #    warning first; after confirming, the draft is version 1, users keep version 2.
    page.locator("#step-menu textarea[name$='-text']").fill("Half-finished idea")
    page.click(".submit-row button[value=save]")
    page.wait_for_selector("text=Draft saved.")
    page.goto(f"{base}/admin/workflows/workflow/{workflow.pk}/versions/")
    assert page.locator("#version-2 .version-note").inner_text() == "Coffee in the menu"
    _shot(page, "versions")
    page.locator("#version-1 .restore-button").click()
    page.wait_for_selector(".restore-warning")
    assert "unpublished changes" in page.locator(".restore-warning").inner_text()
    assert "Half-finished idea" in page.locator(".vdiff-step[data-step=menu]").inner_text()
    _shot(page, "restore")
    page.click("#confirm-restore")
    page.wait_for_selector("text=Version 1 is now in the draft. Users still get version 2")
    assert _customer_says(coffee_club, settings, "coffee", chat=8005) == [
        "Coffee time!\nEspresso or latte?"
    ]

    # 4. Going live is the separate, confirmed publish.
    page.click("#publish")
    page.wait_for_selector("#publish-form")
    assert "Exact text: coffee" in page.locator(".vdiff-triggers").inner_text()  # removed
    page.fill("#id_note", "Back to the old menu")
    page.click("#confirm-publish")
    page.wait_for_selector("text=is live as version 3")
    assert _customer_says(coffee_club, settings, "coffee", chat=8006) == []
    assert _customer_says(coffee_club, settings, "/menu", chat=8007) == ["Our menu: tea, cake."]
