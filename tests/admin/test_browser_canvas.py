"""In a real browser, mouse and keyboard only: the visual editor (canvas).

1. Build the stamp card from an empty workflow: drag steps from the palette, connect
   them, build the "at least 10" condition with the builder, publish, and run it in
   the docked simulator until the reward arrives — no ``{{``, ``vars.`` or JSON typed.
2. A drag-connect, then undo and redo.
3. Two sessions edit the same draft: the second save is told who changed it and when.

With ``ADMIN_SCREENSHOTS=1`` the screenshots replace those in docs/screenshots/.
"""

from __future__ import annotations

import pytest

from tests.admin import test_browser as shared
from tests.admin.helpers import browser_log_in

# The browser and the Coffee Club project of test_browser (fixtures, used by name).
from tests.admin.test_browser import (  # noqa: F401
    ARGS,
    CHROMIUM,
    _shot,
    _shots_dir,
    coffee_club,
)

pytestmark = shared.pytestmark

TYPED = []  # every text the tests type, checked for code at the end of test 1


@pytest.fixture
def empty_workflow(coffee_club):  # noqa: F811
    """Data first: while Playwright's event loop runs the ORM refuses to (see _draft)."""
    from tests.admin.conftest import operator_create
    from workflows.models import Workflow

    operator_create("bea", coffee_club, role="editor")
    operator_create("ada", coffee_club, role="analyst")
    return Workflow.objects.create(project=coffee_club, name="Stamp card", slug="stamp-card")


def _draft(workflow_id: int) -> dict:
    """The saved draft, read in a thread of its own (not inside Playwright's loop)."""
    import threading

    from django.db import connection

    from workflows.models import Workflow

    found = {}

    def read() -> None:
        try:
            found["draft"] = Workflow.objects.get(pk=workflow_id).draft
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(30)
    return found["draft"]


@pytest.fixture
def playwright_browser(empty_workflow, live_server, settings):
    playwright_api = pytest.importorskip("playwright.sync_api")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _page(browser, base: str, username: str = "ann"):
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.set_default_timeout(15000)
    browser_log_in(page, base, username)
    return page


def _center(locator) -> tuple[float, float]:
    box = None
    for _ in range(10):  # a live check may be redrawing the node's text right now
        box = locator.bounding_box()
        if box:
            break
        locator.page.wait_for_timeout(100)
    assert box, "the element is not on screen"
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _drag(page, source, target, *, to: tuple[float, float] | None = None) -> None:
    """Press on ``source``, move in steps, release on ``target`` (or at ``to``)."""
    x, y = _center(source)
    page.mouse.move(x, y)
    page.mouse.down()
    tx, ty = to if to else _center(target)
    page.mouse.move((x + tx) / 2, (y + ty) / 2, steps=5)
    page.mouse.move(tx, ty, steps=5)
    page.mouse.up()


def _drop_step(page, step_type: str, x: float, y: float) -> str:
    """Drag a step type from the palette onto the canvas; returns the new step's id."""
    _close_panel(page, fit=False)
    before = set(page.eval_on_selector_all("[data-step-id]", "ns => ns.map(n => n.dataset.stepId)"))
    stage = page.locator("#cv-drawflow").bounding_box()
    _drag(
        page,
        page.locator(f"[data-step-type={step_type}]"),
        None,
        to=(stage["x"] + x, stage["y"] + y),
    )
    page.wait_for_function(
        "n => document.querySelectorAll('[data-step-id]').length > n", arg=len(before)
    )
    after = set(page.eval_on_selector_all("[data-step-id]", "ns => ns.map(n => n.dataset.stepId)"))
    (new,) = after - before
    return new


def _connect(page, source: str, port: str, target: str) -> None:
    _close_panel(page)
    _drag(
        page,
        page.locator(f'[data-step-id="{source}"] .output[data-port="{port}"]'),
        page.locator(f'[data-step-id="{target}"] .cv-node-head'),
    )
    page.wait_for_selector(
        f'[data-edge-from="{source}"][data-edge-to="{target}"]', state="attached"
    )


def _close_panel(page, *, fit: bool = True) -> None:
    """The side panel narrows the canvas: close it (and fit the flow to the screen)."""
    if page.locator("#cv-panel:not([hidden])").count():
        page.click("#cv-panel .cv-close")
    if fit:
        page.click("#cv-fit")


def _type(locator, text: str) -> None:
    """Type like a person (and remember it: the test checks nothing typed is code)."""
    TYPED.append(text)
    locator.click()
    locator.press("Control+a")
    locator.type(text)
    locator.press("Tab")


def _saved(page) -> None:
    page.wait_for_selector("#cv-status:has-text('All changes saved')")


def _select_node(page, step_id: str) -> None:
    page.locator(f'[data-step-id="{step_id}"] .cv-node-head').click()
    page.wait_for_selector("#cv-panel:not([hidden])")


def test_build_the_stamp_card_on_the_canvas_publish_and_earn_the_reward(
    playwright_browser, live_server, empty_workflow
):
    base = live_server.url
    page = _page(playwright_browser, base)
    page.goto(f"{base}/admin/workflows/workflow/")
    page.click("#result_list a:has-text('Edit on the canvas')")
    page.wait_for_selector('[data-step-id="@start"]')

    # The empty workflow's placeholder step goes: select it, press Delete.
    _select_node(page, "start")
    page.keyboard.press("Delete")
    page.wait_for_selector('[data-step-id="start"]', state="detached")

    # What starts it: the command /stamp.
    _select_node(page, "@start")
    page.click("text=+ Add a trigger")
    _type(page.get_by_label("Command"), "stamp")

    ask = _drop_step(page, "message", 280, 60)
    count = _drop_step(page, "set_variable", 580, 60)
    check = _drop_step(page, "condition", 880, 60)
    reward = _drop_step(page, "message", 580, 330)
    progress = _drop_step(page, "message", 880, 330)

    # The customer shows the phone; a staff member presses the button.
    _select_node(page, ask)
    _type(page.locator(".cv-compose-text"), "Show this to the barista.")
    page.click("text=+ Add a button")
    _type(page.get_by_label("Button 1 text"), "Staff: confirm stamp")

    _connect(page, "@start", "start", ask)
    _connect(page, ask, "button:0", count)
    _connect(page, count, "next", check)
    _connect(page, check, "branch:0", reward)
    _connect(page, check, "default", progress)

    # The counter: stamps increase by 1.
    _select_node(page, count)
    _type(page.locator("#cv-panel").get_by_label("Variable"), "stamps")
    page.get_by_label("Operation").select_option(label="Increase by")
    _type(page.get_by_label("Value"), "1")

    # The condition, with the builder: stamps — is at least — 10.
    _select_node(page, check)
    page.click("text=+ add a condition")
    page.locator(".cb-var").select_option(label="stamps (variable)")
    page.locator(".cb-op").select_option(label="is at least")
    _type(page.locator(".cb-value"), "10")
    # The live check follows: the panel's "expression is empty" goes away by itself.
    page.wait_for_selector("#cv-panel-problems li:has-text('empty')", state="detached")
    _shot(page, "canvas-builder", "#cv-panel")

    # The two messages; the progress one inserts the counter from the picker.
    _select_node(page, reward)
    _type(page.locator(".cv-compose-text"), "Free coffee! Enjoy.")
    _select_node(page, progress)
    _type(page.locator(".cv-compose-text"), "Stamps so far: ")
    page.locator(".cv-insert-var").select_option(label="stamps")
    page.wait_for_selector(".cv-bubble:has-text('Stamps so far: 7')")  # the sample value
    _shot(page, "canvas-panel", "#cv-panel")
    page.keyboard.press("Escape")
    page.click("#cv-fit")
    _saved(page)
    page.wait_for_selector("#cv-problems-toggle:has-text('Ready to publish')")
    _shot(page, "canvas")

    page.click("#cv-publish")
    page.wait_for_selector("#publish-form")
    page.fill("#id_note", "Stamp card")
    page.click("#confirm-publish")
    page.wait_for_selector("text=is live as version 1")

    # Back on the canvas (publishing returns there), the simulator docked beside it.
    assert page.url.endswith(f"/{empty_workflow.pk}/canvas/")
    page.click("#cv-sim-toggle")
    page.wait_for_selector("#sim-text")
    for number in range(1, 11):
        page.fill("#sim-text", "/stamp")
        page.press("#sim-text", "Enter")
        page.wait_for_function(
            "n => document.querySelectorAll('#sim-chat .sim-button').length === n", arg=number
        )
        page.locator("#sim-chat .sim-button").last.click()  # the staff confirms
        expected = "Free coffee" if number == 10 else f"Stamps so far: {number}"
        page.wait_for_selector(f"#sim-chat .sim-msg.bot:has-text('{expected}')")
    assert page.locator(f'[data-step-id="{reward}"].cv-current').count() == 1
    _shot(page, "canvas-simulator")
    typed = "".join(TYPED)
    assert "{{" not in typed and "vars." not in typed and "{" not in typed


def test_drag_connect_then_undo_and_redo(playwright_browser, live_server, empty_workflow):
    base = live_server.url
    page = _page(playwright_browser, base)
    page.goto(f"{base}/admin/workflows/workflow/{empty_workflow.pk}/canvas/")
    page.wait_for_selector('[data-step-id="start"]')
    hello = _drop_step(page, "message", 300, 250)
    edge = f'[data-edge-from="{hello}"][data-edge-to="start"]'
    assert page.locator(edge).count() == 0
    _connect(page, hello, "next", "start")
    assert page.locator(edge).count() == 1

    page.locator("#cv-drawflow").click(position={"x": 5, "y": 5})  # focus the canvas
    page.keyboard.press("Control+z")
    page.wait_for_selector(edge, state="detached")
    assert page.locator(f'[data-step-id="{hello}"]').count() == 1  # only the link went
    page.keyboard.press("Control+Shift+z")
    page.wait_for_selector(edge, state="attached")
    _saved(page)
    draft = _draft(empty_workflow.pk)
    assert draft["steps"][hello]["next"] == "start"

    # Undo is at least 50 deep: 60 keyboard moves, 60 undos, back where it was.
    node = page.locator(f'[data-step-id="{hello}"]')
    _select_node(page, hello)
    page.click("#cv-panel .cv-close")
    _select_node(page, hello)  # closed, then opened again with a click
    before = node.bounding_box()
    for _ in range(60):
        page.keyboard.press("ArrowRight")
    moved = node.bounding_box()
    assert moved["x"] > before["x"] + 100
    for _ in range(60):
        page.keyboard.press("Control+z")
    back = node.bounding_box()
    assert abs(back["x"] - before["x"]) < 1 and abs(back["y"] - before["y"]) < 1
    assert page.locator(edge).count() == 1  # the link made before the moves is still there


def test_two_sessions_editing_one_draft_see_who_changed_it(
    playwright_browser, live_server, empty_workflow
):
    base = live_server.url
    url = f"{base}/admin/workflows/workflow/{empty_workflow.pk}/canvas/"
    ann, bea = _page(playwright_browser, base), _page(playwright_browser, base, "bea")
    ann.goto(url)
    bea.goto(url)
    ann.wait_for_selector('[data-step-id="start"]')
    bea.wait_for_selector('[data-step-id="start"]')

    _drop_step(ann, "message", 300, 250)
    _saved(ann)
    _drop_step(bea, "delay", 300, 400)
    bea.wait_for_selector("#cv-conflict:not([hidden])")
    text = bea.locator("#cv-conflict-text").inner_text()
    assert "changed by ann at " in text
    _shot(bea, "canvas-conflict", "#cv-conflict")

    bea.click("#cv-overwrite")
    _saved(bea)
    steps = _draft(empty_workflow.pk)["steps"]
    assert "delay_1" in steps and "message_1" not in steps  # Bea chose to overwrite

    ann.locator("#cv-drawflow").click(position={"x": 5, "y": 5})
    _drop_step(ann, "end", 500, 300)
    ann.wait_for_selector("#cv-conflict:not([hidden])")
    assert "changed by bea at " in ann.locator("#cv-conflict-text").inner_text()
    ann.click("#cv-reload")
    ann.wait_for_selector('[data-step-id="delay_1"]')
    assert ann.locator('[data-step-id="message_1"]').count() == 0
    ann.keyboard.press("Control+z")  # her own version is one undo away: nothing lost
    ann.wait_for_selector('[data-step-id="message_1"]')


def test_a_broadcast_segment_is_built_with_the_same_builder(playwright_browser, live_server):
    base = live_server.url
    page = _page(playwright_browser, base)
    page.goto(f"{base}/admin/workflows/broadcast/add/")
    page.select_option("#id_project", label="Coffee Club")
    page.fill("#id_title", "Big spenders")
    page.fill("#id_text", "Thank you!")
    page.select_option("#id_segment", "condition")
    assert page.locator("#id_condition").is_hidden()  # the builder writes it
    page.click(".cb-segment >> text=+ add a condition")
    page.locator(".cb-segment .cb-var").select_option(label="user: balance")
    page.locator(".cb-segment .cb-op").select_option(label="is at least")
    _type(page.locator(".cb-segment .cb-value"), "100")
    _shot(page, "broadcast-segment-builder", ".field-condition")
    page.click("input[name=_continue]")
    page.wait_for_selector("text=user(s) right now")

    import threading

    from django.db import connection

    from workflows.models import Broadcast

    found = []

    def read() -> None:
        try:
            found.append(Broadcast.objects.get(title="Big spenders").condition)
        finally:
            connection.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(30)
    assert found == ["user.balance >= 100"]
    # Reopened, the saved condition shows in the builder again.
    assert page.locator(".cb-segment .cb-value").input_value() == "100"


def test_a_template_from_the_gallery_opens_laid_out_on_the_canvas(playwright_browser, live_server):
    base = live_server.url
    page = _page(playwright_browser, base)
    page.goto(f"{base}/admin/workflows/workflow/")
    page.click("text=Start from a template")
    page.wait_for_selector(".cv-gallery")
    _shot(page, "canvas-gallery")
    page.click("[aria-label='Add “Order status (HTTP call)”']")
    page.wait_for_selector('[data-step-id="lookup"]')
    assert "added as a draft" in page.locator(".messagelist").inner_text()
    steps = ["ask", "lookup", "status", "failed"]
    boxes = [page.locator(f'[data-step-id="{step}"]').bounding_box() for step in steps]
    for index, one in enumerate(boxes):  # auto-layout: no node on top of another
        for other in boxes[index + 1 :]:
            apart = (
                one["x"] + one["width"] <= other["x"]
                or other["x"] + other["width"] <= one["x"]
                or one["y"] + one["height"] <= other["y"]
                or other["y"] + other["height"] <= one["y"]
            )
            assert apart, (one, other)
    edges = page.eval_on_selector_all(
        "svg.connection",
        "es => es.map(e => [e.dataset.edgeFrom, e.dataset.edgePort, e.dataset.edgeTo])",
    )
    assert sorted(edges) == [
        ["@start", "start", "ask"],
        ["ask", "next", "lookup"],
        ["lookup", "on_failure", "failed"],
        ["lookup", "on_success", "status"],
    ]
    page.wait_for_selector("#cv-problems-toggle:has-text('Ready to publish')")


def test_an_analyst_sees_the_canvas_read_only(playwright_browser, live_server, empty_workflow):
    base = live_server.url
    page = _page(playwright_browser, base, "ada")
    page.goto(f"{base}/admin/workflows/workflow/{empty_workflow.pk}/canvas/")
    page.wait_for_selector('[data-step-id="start"]')
    assert page.locator(".cv-palette").count() == 0
    assert page.locator("#cv-publish").count() == 0
    assert "Read only" in page.locator("#cv-status").inner_text()
    page.locator('[data-step-id="start"] .cv-node-head').click()
    page.wait_for_selector("#cv-panel:not([hidden])")
    assert page.locator("#cv-panel input:enabled, #cv-panel select:enabled").count() == 0
    page.keyboard.press("Delete")
    assert page.locator('[data-step-id="start"]').count() == 1
