"""In a real browser: an operator filters the Telegram journal for quarantined updates."""

from __future__ import annotations

import pytest

from tests.admin.helpers import browser_log_in
from tests.admin.test_browser import (  # noqa: F401 (fixtures)
    _shot,
    _shots_dir,
    browser_page,
    coffee_club,
    pytestmark,
)


@pytest.fixture
def journal(coffee_club):  # noqa: F811 (the imported fixture)
    from botplatform.models import Bot, TelegramUpdate

    bot = Bot.objects.get(project=coffee_club)
    rows = [
        (1001, 501, "done", ""),
        (1002, 502, "quarantined", "quarantined: took longer than 10 s (the update budget)"),
        (1003, 503, "done", ""),
        (1004, 504, "quarantined", "quarantined: the runner stopped while handling it 2 times"),
    ]
    for update_id, chat_id, status, note in rows:
        TelegramUpdate.objects.create(
            bot=bot,
            update_id=update_id,
            chat_id=chat_id,
            payload={"update_id": update_id, "message": {"text": "hi"}},
            status=status,
            note=note,
            stalls=2 if "2 times" in note else 0,
        )
    return bot


def test_an_operator_finds_quarantined_updates_and_why(
    journal,
    browser_page,  # noqa: F811 (the imported fixture; after the data, see coffee_club)
    live_server,
):
    page = browser_page
    base = live_server.url
    browser_log_in(page, base)

    page.goto(f"{base}/admin/botplatform/telegramupdate/")
    page.click("#changelist-filter >> text=Quarantined (never retried)")
    page.wait_for_selector("#result_list")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    text = page.locator("#result_list").inner_text()
    assert "took longer than 10 s (the update budget)" in text
    assert "the runner stopped while handling it 2 times" in text
    assert "Traceback" not in page.content()
    _shot(page, "quarantined-updates")
