"""In a real browser: the customer card on the bot user page (its QR code shown as a
picture), rotating its code, and adding a cashier. The screenshot of the card is
docs/screenshots/customer-card.png."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from tests.admin.test_browser import ARGS, CHROMIUM, _shot
from tests.admin.test_browser import _shots_dir as _shots_dir  # autouse: where _shot writes
from tests.factories import bot_create, bot_user_create, project_create
from users.customers import card_code_ensure

pytestmark = [
    pytest.mark.skipif(
        not __import__("pathlib").Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def customer(db):
    project = project_create(name="Coffee Club")
    bot_create(project=project, username="coffee_club_bot")
    get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    user = bot_user_create(project=project, first_name="Ann", last_name="Lee", username="ann")
    card_code_ensure(user)
    return user


@pytest.fixture
def page(customer, live_server, settings):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(15000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", "pw")
        page.click("input[type=submit]")
        yield page
        browser.close()


def test_the_card_is_shown_and_its_code_rotated(page, live_server, customer):
    page.goto(f"{live_server.url}/admin/users/botuser/{customer.pk}/change/")
    card = page.locator(".field-loyalty_card")
    card.scroll_into_view_if_needed()
    image = card.locator("img")
    assert image.evaluate("img => img.complete && img.naturalWidth") > 100  # a real picture
    grouped = " ".join(customer.card_code[i : i + 4] for i in range(0, 12, 4))
    assert grouped in card.inner_text()
    _shot(page, "customer-card")

    card.get_by_role("link", name="Rotate the code").click()
    assert "stop working" in page.content()
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    told = page.locator(".messagelist").inner_text()
    assert "New card code for @ann (Ann Lee)" in told and grouped not in told
    assert grouped not in page.locator(".field-loyalty_card").inner_text()


def test_an_owner_adds_a_cashier(page, live_server, customer):
    page.goto(f"{live_server.url}/admin/users/cashier/add/")
    page.select_option("#id_project", label="Coffee Club")
    page.fill("#id_telegram_id", "0")
    page.fill("#id_store_name", "Store 5")
    page.click("input[name=_save]")
    assert (
        "A Telegram user id is a positive number." in page.locator(".errorlist").first.inner_text()
    )
    page.fill("#id_telegram_id", "123456789")
    page.fill("#id_name", "Bob")
    page.fill("#id_daily_limit", "500")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert "Bob (Store 5)" in page.locator("#result_list").inner_text()
