"""What an operator types or pastes into a form never reaches a recursion limit or a 500.

Old code: a 400-deep condition raised RecursionError (500), 100,000-deep JSON too,
and a 30,000-character broadcast text was accepted (and took seconds to check).
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from botplatform.jsoncheck import MAX_JSON_DEPTH, json_text_problem
from botplatform.models import Project
from tests.admin.helpers import form_data
from workflows.models import Broadcast

pytestmark = pytest.mark.django_db


def _post_broadcast(client, project, **fields):
    data = {"project": project.pk, "title": "Hostile", "text": "Hi", "segment": "all"}
    return client.post(reverse("admin:workflows_broadcast_add"), {**data, **fields})


def test_a_deeply_nested_broadcast_condition_is_a_form_error(admin_client, project):
    condition = "(" * 400 + "user.balance > 5" + ")" * 400
    response = _post_broadcast(admin_client, project, segment="condition", condition=condition)
    page = response.content.decode()
    assert response.status_code == 200 and "Traceback" not in page
    assert "This condition cannot be used: the expression is nested more than 20 levels" in page
    assert not Broadcast.objects.filter(title="Hostile").exists()


def test_a_broadcast_text_longer_than_telegram_allows_is_a_form_error(admin_client, project):
    response = _post_broadcast(admin_client, project, text="{{" * 15_000)
    page = response.content.decode()
    assert response.status_code == 200
    assert "The message is 30000 characters long; Telegram accepts at most 4096." in page
    assert not Broadcast.objects.filter(title="Hostile").exists()


def test_deeply_nested_json_in_an_admin_field_is_a_form_error(admin_client, project):
    url = reverse("admin:botplatform_project_change", args=[project.pk])
    data = form_data(admin_client.get(url).content.decode(), "project_form")
    before = Project.objects.get(pk=project.pk).levels
    response = admin_client.post(url, {**data, "levels": "[" * 100_000 + "]" * 100_000})
    page = response.content.decode()
    assert response.status_code == 200
    assert f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep" in page
    assert Project.objects.get(pk=project.pk).levels == before


def test_brackets_inside_json_strings_do_not_count_as_nesting():
    inside_a_string = '{"text": "' + "[{" * 200 + ' \\" still text [[["}'
    assert json.loads(inside_a_string)["text"].startswith("[{[{")
    assert json_text_problem(inside_a_string) is None
    assert json_text_problem("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is None
    assert "nested" in json_text_problem("[" * (MAX_JSON_DEPTH + 1))


def test_the_step_editor_refuses_absurd_numbers_and_deep_json_readably():
    """Old code: "1e400" became an infinity in the draft (jsonb refuses it: a 500 on
    save) and 100,000 nested brackets in a JSON body raised RecursionError."""
    from workflows.editor_form import editor_parse

    post = {
        "s0-_type": "http_request",
        "s0-_id": "call",
        "s0-_orig": "",
        "s0-url": "https://example.com",
        "s0-timeout": "1e400",
        "s0-retries": "9" * 40,
        "s0-body": "[" * 100_000 + "]" * 100_000,
    }
    parsed = editor_parse(post, draft={}, triggers=[])
    assert parsed.errors["s0-timeout"].startswith("The number is too large")
    assert parsed.errors["s0-retries"].startswith("The number is too large")
    assert parsed.errors["s0-body"].startswith(f"The JSON is nested more than {MAX_JSON_DEPTH}")
    assert "timeout" not in parsed.definition["steps"]["call"]


def test_project_languages_are_set_in_the_admin_and_bad_codes_explained(admin_client, project):
    url = reverse("admin:botplatform_project_change", args=[project.pk])
    data = form_data(admin_client.get(url).content.decode(), "project_form")
    response = admin_client.post(url, {**data, "languages": "en, ru", "default_language": "ru"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.language_list == ["ru", "en"]
    for languages, default, message in (
        ("en, Русский", "en", "Not language codes: Русский"),
        ("en, ru\x00", "en", "Null characters are not allowed"),
        ("x" * 150, "en", "Not language codes: xxxx"),
        ("en", "english", "is not a language code"),
    ):
        response = admin_client.post(
            url, {**data, "languages": languages, "default_language": default}
        )
        assert response.status_code == 200 and message in response.content.decode()
    project.refresh_from_db()
    assert project.language_list == ["ru", "en"]


def test_the_step_editor_keeps_per_language_texts():
    from workflows.editor_form import editor_parse

    post = {
        "s0-_type": "message",
        "s0-_id": "hi",
        "s0-_orig": "",
        "s0-text": '{"en": "Hello", "ru": "Привет"}',
        "s0-btn0-text": '{"en": "Go", "ru": "Вперёд"}',
        "s0-btn0-kind": "url",
        "s0-btn0-value": "https://example.com",
        "s0-request_contact": '{"en": "Share", "ru": "Поделиться"}',
        "s1-_type": "message",
        "s1-_id": "plain",
        "s1-_orig": "",
        "s1-text": "{{ user.first_name }}, {not json",
    }
    parsed = editor_parse(post, draft={}, triggers=[])
    steps = parsed.definition["steps"]
    assert steps["hi"]["text"] == {"en": "Hello", "ru": "Привет"}
    assert steps["hi"]["buttons"] == [
        [{"text": {"en": "Go", "ru": "Вперёд"}, "url": "https://example.com"}]
    ]
    assert steps["plain"]["text"] == "{{ user.first_name }}, {not json"
    assert steps["hi"]["request_contact"] == {"en": "Share", "ru": "Поделиться"}
