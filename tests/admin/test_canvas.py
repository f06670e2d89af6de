"""The visual editor's endpoints: the page, save with conflicts, live checks, the
registry, the preview, the templates gallery, roles, and hostile drafts."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.admin.conftest import operator_create
from workflows.canvas import (
    CanvasConflict,
    CanvasPayloadError,
    canvas_payload_parse,
    canvas_save,
    canvas_state,
)
from workflows.canvas_gallery import gallery_add, gallery_templates
from workflows.engine.steps import STEP_TYPES
from workflows.models import Workflow
from workflows.publishing import workflow_publish

pytestmark = pytest.mark.django_db

DRAFT = {
    "start": "hello",
    "steps": {
        "hello": {"type": "message", "text": "Hi {{ user.first_name }}", "next": "bye"},
        "bye": {"type": "end"},
    },
}


@pytest.fixture
def workflow(project):
    return Workflow.objects.create(project=project, name="Greeter", slug="greeter")


def _url(name: str, workflow: Workflow) -> str:
    return reverse(f"admin:workflows_workflow_{name}", args=[workflow.pk])


def _post(client, url: str, body) -> object:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json")


def _body(workflow: Workflow, **changes) -> dict:
    state = canvas_state(workflow)
    return {
        "definition": DRAFT,
        "triggers": [{"type": "command", "command": "hi"}],
        "layout": {"hello": {"x": 10, "y": 20}, "bye": {"x": 300, "y": 20}},
        "revision": state["revision"],
        **changes,
    }


def test_the_page_carries_the_draft_the_registry_and_the_known_variables(
    operator_client, workflow, project
):
    Workflow.objects.create(
        project=project,
        name="Cards",
        slug="cards",
        draft={
            "start": "a",
            "steps": {
                "a": {"type": "set_variable", "variable": "stamps", "value": 1},
                "b": {"type": "message", "text": "{{ vars.city }}"},
            },
        },
    )
    response = operator_client.get(_url("canvas", workflow))
    assert response.status_code == 200
    config = response.context_data["config"]
    assert set(config["registry"]) == set(STEP_TYPES)
    message = config["registry"]["message"]
    assert message["label"] == STEP_TYPES["message"].label
    assert [f["name"] for f in message["fields"]] == [s.name for s in STEP_TYPES["message"].fields]
    assert message["links"] == ["next", "on_timeout"]
    assert {"stamps", "city"} <= set(config["vocabulary"]["vars"])
    assert "first_name" in config["vocabulary"]["user_fields"]
    assert config["state"]["definition"] == workflow.draft
    assert config["can_change"] is True


def test_a_save_stores_definition_triggers_and_layout_and_names_the_operator(
    operator_client, workflow
):
    response = _post(operator_client, _url("canvas_draft", workflow), _body(workflow))
    assert response.status_code == 200, response.content
    workflow.refresh_from_db()
    assert workflow.draft == DRAFT
    assert workflow.triggers == [{"type": "command", "command": "hi"}]
    assert workflow.layout == {"hello": {"x": 10.0, "y": 20.0}, "bye": {"x": 300.0, "y": 20.0}}
    assert workflow.draft_saved_by.username == "ann"
    assert response.json()["revision"] == canvas_state(workflow)["revision"]


def test_layout_is_not_behaviour_moving_a_node_does_not_change_the_checksum(
    operator_client, workflow
):
    from workflows.publishing import draft_checksum

    _post(operator_client, _url("canvas_draft", workflow), _body(workflow))
    workflow.refresh_from_db()
    before = draft_checksum(workflow)
    moved = _body(workflow, layout={"hello": {"x": 999, "y": -5}})
    assert _post(operator_client, _url("canvas_draft", workflow), moved).status_code == 200
    workflow.refresh_from_db()
    assert draft_checksum(workflow) == before
    assert workflow.layout == {"hello": {"x": 999.0, "y": -5.0}}


def test_a_stale_save_gets_409_with_who_and_when_and_writes_nothing(client, workflow, project):
    bea = operator_create("bea", project, role="editor")
    bea.first_name, bea.last_name = "Bea", "Stone"
    bea.save()
    ann = operator_create("ann", project)
    stale = _body(workflow, definition={"start": "x", "steps": {"x": {"type": "end"}}})
    client.force_login(bea)
    assert _post(client, _url("canvas_draft", workflow), _body(workflow)).status_code == 200
    client.force_login(ann)
    response = _post(client, _url("canvas_draft", workflow), stale)
    assert response.status_code == 409
    data = response.json()
    assert "changed by Bea Stone at " in data["error"]
    workflow.refresh_from_db()
    assert workflow.draft == DRAFT  # Bea's version stands
    # "Overwrite with mine" sends the revision the conflict named: now it goes through.
    overwrite = {**stale, "revision": data["conflict"]["revision"]}
    assert _post(client, _url("canvas_draft", workflow), overwrite).status_code == 200
    workflow.refresh_from_db()
    assert workflow.draft == stale["definition"]


@pytest.mark.django_db(transaction=True)
def test_two_saves_racing_on_one_revision_one_wins_the_other_conflicts(project):
    """Real threads and connections: the row lock serialises them."""
    workflow = Workflow.objects.create(project=project, name="Race", slug="race")
    ann = operator_create("ann", project)
    revision = canvas_state(workflow)["revision"]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def save(name: str) -> None:
        body = {
            "definition": {"start": name, "steps": {name: {"type": "end"}}},
            "revision": revision,
        }
        payload = canvas_payload_parse(json.dumps(body).encode())
        try:
            barrier.wait(5)
            canvas_save(workflow_id=workflow.pk, payload=payload, saved_by=ann)
            outcomes.append(name)
        except CanvasConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(outcomes)[0] == "conflict" and len(outcomes) == 2
    workflow.refresh_from_db()
    winner = next(o for o in outcomes if o != "conflict")
    assert workflow.draft["start"] == winner


def test_invalid_triggers_are_refused_with_the_reason(operator_client, workflow):
    body = _body(workflow, triggers=[{"type": "command", "command": "no spaces allowed"}])
    response = _post(operator_client, _url("canvas_draft", workflow), body)
    assert response.status_code == 400
    assert "trigger 1" in response.json()["error"]
    workflow.refresh_from_db()
    assert workflow.triggers == []


def test_the_live_check_returns_problems_per_step(operator_client, workflow):
    broken = {
        "start": "ask",
        "steps": {
            "ask": {"type": "message", "text": "Hi {{ user.nope }}", "next": "missing"},
            "lonely": {"type": "end"},
        },
    }
    response = _post(
        operator_client, _url("canvas_check", workflow), _body(workflow, definition=broken)
    )
    assert response.status_code == 200
    data = response.json()
    assert data["valid"] is False
    assert set(data["problems"]) >= {"ask", "lonely"}
    assert any("missing" in message for message in data["problems"]["ask"])
    fine = _post(operator_client, _url("canvas_check", workflow), _body(workflow))
    assert fine.json() == {"valid": True, "problems": {}}


def test_the_preview_renders_with_a_sample_user_and_escapes_html(operator_client, workflow):
    url = _url("canvas_preview", workflow)
    body = {
        "text": "<b>Hi {{ user.first_name }}</b> <script>x</script> {{ vars.stamps }}",
        "buttons": [[{"text": "Go {{ user.first_name }}", "next": "a"}]],
        "vars": ["stamps", "bad name!"],
    }
    data = _post(operator_client, url, body).json()
    assert data["html"].startswith("<b>Hi Anna</b>")
    assert "<script>" not in data["html"] and "&lt;script&gt;" in data["html"]
    assert data["html"].endswith(" 7")
    assert data["buttons"] == [["Go Anna"]]
    bad = _post(operator_client, url, {"text": "{{ user.first_name | nope }}"}).json()
    assert "nope" in bad["problem"]
    assert _post(operator_client, url, b"\xff").status_code == 400


def test_the_preview_shows_a_per_language_text_in_the_default_language(
    operator_client, workflow, project
):
    project.languages, project.default_language = "en, ru", "ru"
    project.save(update_fields=["languages", "default_language"])
    body = {
        "text": {"en": "Hi {{ user.first_name }}", "ru": "Привет, {{ user.first_name }}"},
        "buttons": [[{"text": {"en": "Go", "ru": "Вперёд"}, "next": "a"}]],
    }
    data = _post(operator_client, _url("canvas_preview", workflow), body).json()
    assert data["html"] == "Привет, Anna" and data["buttons"] == [["Вперёд"]]


def test_an_analyst_reads_the_canvas_but_cannot_save(client, workflow, project):
    client.force_login(operator_create("ada", project, role="analyst"))
    page = client.get(_url("canvas", workflow))
    assert page.status_code == 200
    assert page.context_data["config"]["can_change"] is False
    assert client.get(_url("canvas_draft", workflow)).status_code == 200
    assert _post(client, _url("canvas_draft", workflow), _body(workflow)).status_code == 403
    workflow.refresh_from_db()
    assert workflow.draft != DRAFT


def test_another_projects_workflow_is_not_found(client, workflow, other_project):
    client.force_login(operator_create("oz", other_project))
    for name in ("canvas", "canvas_draft", "canvas_check", "canvas_preview"):
        assert client.get(_url(name, workflow)).status_code in {302, 404}
    assert _post(client, _url("canvas_draft", workflow), _body(workflow)).status_code in {302, 404}


# --- Templates gallery -------------------------------------------------------------------


def test_the_gallery_offers_at_least_six_templates_each_publishes_cleanly(project):
    templates = gallery_templates()
    assert len(templates) >= 6
    assert {"stamp_card", "birthday_bonus", "referral_rewards", "feedback_rating"} <= set(templates)
    assert {"order_status", "win_back"} <= set(templates)
    for key in templates:
        workflow = gallery_add(project_id=project.pk, key=key)
        version = workflow_publish(workflow=workflow, note="from the gallery")
        assert version.number == 1, key


def test_adding_a_template_twice_gets_a_fresh_slug_and_opens_the_canvas(operator_client, project):
    url = reverse("admin:workflows_workflow_gallery")
    assert "Stamp card" in operator_client.get(url).content.decode()
    first = operator_client.post(url, {"key": "stamp_card", "project": project.pk})
    second = operator_client.post(url, {"key": "stamp_card", "project": project.pk})
    slugs = sorted(Workflow.objects.filter(project=project).values_list("slug", flat=True))
    assert slugs == ["stamp-card", "stamp-card-2"]
    assert first.status_code == second.status_code == 302
    assert first["Location"].endswith("/canvas/")
    assert operator_client.post(url, {"key": "nope", "project": project.pk}).status_code == 200
    assert Workflow.objects.filter(project=project).count() == 2


def test_the_gallery_refuses_a_project_that_is_not_yours(client, project, other_project):
    client.force_login(operator_create("ann", project))
    url = reverse("admin:workflows_workflow_gallery")
    client.post(url, {"key": "stamp_card", "project": other_project.pk})
    assert not Workflow.objects.filter(project=other_project).exists()


# --- Hostile drafts ----------------------------------------------------------------------


def _nested(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"x" * (600 * 1024), "larger than"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[]", "must be an object"),
        (b'{"definition": ' + b"1" * 5000 + b"}", "too long"),
        (b'{"definition": {"steps": {"a": {"type": "end", "t": "\\u0000"}}}}', "NUL"),
        (b'{"definition": {"steps": {"a": {"type": "end", "t": "\\ud800"}}}}', "surrogate"),
        (
            json.dumps(
                {"definition": {"steps": {"a": {"type": "end", "x": _nested(40)}}}}
            ).encode(),
            "deep",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "deep"),
        (b'{"definition": {"steps": {"bad id!": {"type": "end"}}}}', "step name"),
        (
            b'{"definition": {"steps": {"a": {"type": "end"}}}, "layout": {"a": {"x": 1e308, "y": 0}}}',
            "out of range",
        ),
        (
            b'{"definition": {"steps": {"a": {"type": "end"}}}, "layout": {"a": {"x": NaN, "y": 0}}}',
            "not finite",
        ),
        (
            b'{"definition": {"steps": {"a": {"type": "end"}}}, "layout": {"a": {"x": "1", "y": 0}}}',
            "number",
        ),
        (b'{"definition": {"steps": {"a": {"type": "end"}}}, "triggers": {}}', "'triggers'"),
    ],
)
def test_hostile_drafts_get_a_clear_400_and_nothing_is_written(
    operator_client, workflow, body, says
):
    before = (workflow.draft, workflow.layout, workflow.updated_at)
    response = _post(operator_client, _url("canvas_draft", workflow), body)
    assert response.status_code == 400
    assert says in response.json()["error"]
    workflow.refresh_from_db()
    assert (workflow.draft, workflow.layout, workflow.updated_at) == before


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=120, deadline=None)
@given(
    steps=st.dictionaries(st.text(max_size=70), JSON_VALUE, max_size=5),
    layout=JSON_VALUE,
    triggers=JSON_VALUE,
    revision=JSON_VALUE,
)
def test_any_json_either_parses_into_a_clean_payload_or_is_refused_clearly(
    steps, layout, triggers, revision
):
    body = json.dumps(
        {
            "definition": {"start": "a", "steps": steps},
            "layout": layout,
            "triggers": triggers,
            "revision": revision,
        }
    ).encode()
    try:
        payload = canvas_payload_parse(body)
    except CanvasPayloadError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    assert all(
        isinstance(step, dict) and isinstance(step.get("type"), str)
        for step in payload.definition["steps"].values()
    )
    for key, point in payload.layout.items():
        assert key in payload.definition["steps"] or key == "@start"
        assert set(point) == {"x", "y"}
    json.dumps(payload.definition).encode("utf-8")  # storable: no lone surrogates


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.binary(max_size=2000)
    | st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_arbitrary_bytes_never_break_the_save_endpoint(operator_client, workflow, junk):
    before = Workflow.objects.values_list("draft", "layout", "updated_at").get(pk=workflow.pk)
    response = _post(operator_client, _url("canvas_draft", workflow), junk)
    assert response.status_code in {200, 400, 409}
    if response.status_code != 200:
        assert (
            Workflow.objects.values_list("draft", "layout", "updated_at").get(pk=workflow.pk)
            == before
        )
