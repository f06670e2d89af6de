"""The simulator page in a real browser: a poll that answers late never puts back an
older panel (issue 17: stale buttons, and polling that stopped after a background step).
"""

from __future__ import annotations

import pytest

from tests.admin.helpers import browser_log_in
from tests.admin.test_browser import browser_page, coffee_club  # noqa: F401 (fixtures)
from tests.admin.test_browser import pytestmark as _browser_marks

pytestmark = _browser_marks

FLOW = {
    "start": "menu",
    "steps": {
        "menu": {
            "type": "message",
            "text": "Menu {{ vars.n }}",
            "buttons": [[{"text": "Wait", "next": "count"}]],
        },
        "count": {
            "type": "set_variable",
            "variable": "n",
            "operation": "increment",
            "next": "wait",
        },
        "wait": {"type": "delay", "seconds": 600, "next": "late"},
        "late": {"type": "message", "text": "Late"},
    },
}

# Poll answers (GET) are handed to the page 2.5 s late; posts are not delayed. The
# server renders the poll at once, so its late answer is an older state of the chat.
SLOW_POLLS = """
(() => {
  const original = window.fetch.bind(window);
  window.__polls = 0;
  window.fetch = (url, options) => {
    const poll = !options || !options.method || options.method === "GET";
    if (poll) window.__polls += 1;
    return original(url, options).then((response) => poll
      ? response.text().then((text) => new Promise((done) =>
          setTimeout(() => done(new Response(text, {status: response.status})), 2500)))
      : response);
  };
})();
"""


@pytest.fixture
def menu_flow(coffee_club):  # noqa: F811
    from tests.workflows.conftest import publish

    publish(coffee_club, FLOW)
    return coffee_club


def test_a_late_poll_never_replaces_a_newer_panel(menu_flow, live_server, browser_page):  # noqa: F811
    page = browser_page
    base = live_server.url
    page.add_init_script(SLOW_POLLS)
    browser_log_in(page, base)
    page.goto(f"{base}/admin/workflows/workflow/simulator/")
    page.fill("#sim-text", "/start")
    page.press("#sim-text", "Enter")
    page.wait_for_selector(".sim-msg.bot >> text=Menu")
    page.click("button.sim-button:has-text('Wait')")  # a delay runs: the page polls
    page.wait_for_function("window.__polls >= 1", timeout=5000)
    # While that poll's (older) answer is still on its way, the operator goes on.
    page.fill("#sim-text", "/start")
    page.press("#sim-text", "Enter")
    page.wait_for_selector(".sim-msg.bot >> text=Menu 1")
    page.wait_for_timeout(3500)  # the late poll answer has arrived by now
    texts = page.locator(".sim-msg.bot .sim-text").all_inner_texts()
    assert texts[-1] == "Menu 1", texts  # not the older panel
    assert page.locator("button.sim-button:has-text('Wait')").count() == 2
    # Still polling: the delay is still running.
    polls = page.evaluate("window.__polls")
    page.wait_for_function(f"window.__polls > {polls}", timeout=5000)
