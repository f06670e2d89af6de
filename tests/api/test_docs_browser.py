"""The interactive API docs (/api/v1/docs) in a real browser, offline: Swagger UI's
assets come from this server (drf-spectacular-sidecar), no request leaves it, and the
operations are listed. With ``ADMIN_SCREENSHOTS=1`` the screenshot replaces
docs/screenshots/api_docs.png."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.admin.test_browser import ARGS, CHROMIUM, SHOTS

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
    pytest.mark.django_db(transaction=True),
]


def test_the_docs_work_offline_in_a_browser(live_server, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    hosts = set()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.set_default_timeout(15000)
        page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
        page.goto(f"{live_server.url}/api/v1/docs")
        page.get_by_text("/api/v1/purchases", exact=True).first.wait_for()
        page.get_by_text("Record a purchase and accrue bonuses").first.wait_for()
        target = (
            SHOTS if os.environ.get("ADMIN_SCREENSHOTS") == "1" else tmp_path
        ) / "api_docs.png"
        page.screenshot(path=str(target))
        browser.close()
    assert hosts == {urlsplit(live_server.url).netloc}, hosts
    assert target.stat().st_size > 1000
