"""In a real browser: a superuser sets up a project and its members; each member can
do their role's work and nothing more.

Accounts exist beforehand (a superuser creates them); everything else (the project,
the memberships) is done through the project's page. Screenshots go to a temporary
directory, or with ``ADMIN_SCREENSHOTS=1`` to docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from tests.admin.helpers import browser_log_in
from tests.admin.test_browser import ARGS, CHROMIUM, SHOTS

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def accounts(db):
    """Accounts only: no project, no membership, no Django permission."""
    from django.contrib.auth.models import User

    from tests.factories import project_create, workflow_create

    User.objects.create_superuser("root", "root@example.com", "pw")
    User.objects.create_user("eddie", password="pw", is_staff=True)
    User.objects.create_user("sue", password="pw", is_staff=True)
    workflow_create(project=project_create(name="Other Shop"), name="Secret plan")


@pytest.fixture
def browser(accounts, live_server, settings):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _shot(page, name: str, selector: str, tmp_path: Path) -> None:
    folder = SHOTS if os.environ.get("ADMIN_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.png"
    page.locator(selector).first.screenshot(path=str(target))
    assert target.stat().st_size > 1000


def _login(browser, base: str, username: str):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(15000)
    browser_log_in(page, base, username)
    return page


def _in_thread(func) -> None:
    """The ORM refuses to run inside Playwright's event loop: use a thread of its own."""
    from django.db import connection

    errors: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:  # re-raised below, in the test thread
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]


def _add_member(page, username: str, role: str) -> None:
    page.click("#memberships-group .add-row a")
    row = page.locator("#memberships-group tr.form-row.dynamic-memberships").last
    row.locator("select[name$='-username']").select_option(username)
    row.locator("select[name$='-role']").select_option(role)


def test_members_set_up_in_the_browser_do_their_roles_work(browser, live_server, tmp_path):
    base = live_server.url

    # The superuser creates the project and adds its members on the project's page.
    root = _login(browser, base, "root")
    root.goto(f"{base}/admin/botplatform/project/add/")
    root.fill("#id_name", "Tea House")
    _add_member(root, "eddie", "editor")
    _add_member(root, "sue", "support")
    root.click("input[name=_continue]")
    root.wait_for_selector("text=was added successfully")
    assert root.locator("#memberships-group tr.has_original").count() == 2
    _shot(root, "members", "#memberships-group", tmp_path)

    def data() -> None:
        from botplatform.models import Membership, Project
        from tests.factories import bot_create, bot_user_create, workflow_create

        project = Project.objects.get(name="Tea House")
        assert dict(project.memberships.values_list("user__username", "role")) == {
            "eddie": "editor",
            "sue": "support",
        }
        assert not Membership.objects.filter(user__username="eddie").exclude(project=project)
        bot_create(project=project, username="tea_bot")
        workflow_create(project=project, name="Tea menu")
        bot_user_create(project=project, first_name="Mia")

    _in_thread(data)

    # The Editor sees only this project, opens the step editor, sees no bot secrets.
    editor = _login(browser, base, "eddie")
    _shot(editor, "roles-editor-home", "#content-main", tmp_path)
    assert editor.locator("a.addlink[href$='/botplatform/project/add/']").count() == 0
    editor.goto(f"{base}/admin/botplatform/project/")
    listed = editor.locator("#result_list tbody tr").all_inner_texts()
    assert len(listed) == 1 and "Tea House" in listed[0]
    assert "Add project" not in editor.content()
    editor.goto(f"{base}/admin/workflows/workflow/")
    assert "Secret plan" not in editor.content()
    editor.click("#result_list a:has-text('Edit steps')")
    editor.wait_for_selector("#editor-form")
    assert "Tea menu" in editor.locator("#content").inner_text()
    editor.goto(f"{base}/admin/botplatform/bot/")
    editor.click("#result_list a:has-text('@tea_bot')")
    editor.wait_for_selector("#content-main")
    text = editor.locator("#content-main").inner_text().lower()
    assert "tea_bot" in text and "token" not in text and "webhook secret" not in text

    # Support opens the bot user and adjusts the balance with a reason.
    support = _login(browser, base, "sue")
    support.goto(f"{base}/admin/users/botuser/")
    support.click("#result_list a:has-text('Mia')")
    support.click("text=Adjust balance")
    support.fill("#id_amount", "50")
    support.fill("#id_reason", "Card stamps from the paper card")
    support.click("input[type=submit]")
    support.wait_for_selector("text=adjusted by +50")
    assert re.search(r"it is now 50", support.locator(".messagelist").inner_text())
    support.goto(f"{base}/admin/workflows/workflow/")
    assert "403" in support.title() or "permission" in support.content().lower()
