"""A message step with a photo, an album and a location, through the Telegram path:
getUpdates from the double, the journal, the engine, the sender, the double."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from botplatform.media import media_file_create
from botplatform.telegram.client import api
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from tests.workflows.conftest import publish
from workflows.engine.validation import WorkflowValidationError
from workflows.models import Workflow
from workflows.publishing import workflow_publish

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 100
CHAT = 9401


@pytest.fixture
def engine_bot(tg_bot, settings, tmp_path):
    settings.TELEGRAM_EVENT_HANDLER = "workflows.handler.handler"
    settings.MEDIA_ROOT = str(tmp_path)
    return tg_bot


def _handle(bot, offset: dict) -> None:
    updates = api().get_updates(bot.token, offset=offset.get("next"), limit=100)
    offset["next"] = max(u["update_id"] for u in updates) + 1
    for row in updates_record(bot_id=bot.pk, updates=updates):
        assert update_run(update_pk=row.pk) == "done"


def test_a_photo_step_uploads_once_then_sends_by_file_id_and_its_button_works(double, engine_bot):
    photo = media_file_create(
        project=engine_bot.project,
        kind="photo",
        title="Menu",
        upload=SimpleUploadedFile("menu.png", PNG, content_type="image/png"),
    )
    publish(
        engine_bot.project,
        {
            "start": "card",
            "steps": {
                "card": {
                    "type": "message",
                    "text": "Today's menu, {{ user.first_name }}",
                    "media": {"type": "photo", "file": photo.pk},
                    "buttons": [{"text": "Where are you?", "next": "where"}],
                },
                "where": {
                    "type": "message",
                    "text": "Come by",
                    "location": {
                        "latitude": 55.75,
                        "longitude": 37.62,
                        "title": "Café",
                        "address": "Tverskaya 1",
                    },
                },
            },
        },
    )
    offset: dict = {}
    double.command(engine_bot.token, CHAT, "/start")
    _handle(engine_bot, offset)
    double.command(engine_bot.token, CHAT, "/start")
    _handle(engine_bot, offset)
    sends = double.calls_of("sendPhoto", engine_bot.token)
    assert len(sends) == 2 and len(double.uploads) == 1
    assert sends[0].params["caption"].startswith("Today's menu, ")
    assert sends[1].params["photo"] in double.bot_file_ids[engine_bot.token]
    assert "__files__" not in sends[1].params
    # The button on the photo continues the conversation.
    keyboard = json.loads(sends[1].params["reply_markup"])["inline_keyboard"]
    double.callback(engine_bot.token, CHAT, keyboard[0][0]["callback_data"])
    _handle(engine_bot, offset)
    venue = double.calls_of("sendVenue", engine_bot.token)
    assert len(venue) == 1 and venue[0].params["title"] == "Café"
    assert double.sent_texts(engine_bot.token, CHAT)[-1] == "Come by"


def test_an_album_step_sends_a_media_group(double, engine_bot):
    publish(
        engine_bot.project,
        {
            "start": "album",
            "steps": {
                "album": {
                    "type": "message",
                    "text": "Two views",
                    "album": [
                        {"type": "photo", "url": "https://example.com/a.jpg"},
                        {"type": "photo", "url": "https://example.com/b.jpg"},
                    ],
                }
            },
        },
    )
    double.command(engine_bot.token, CHAT, "/start")
    _handle(engine_bot, {})
    group = double.calls_of("sendMediaGroup", engine_bot.token)
    media = json.loads(group[0].params["media"])
    assert [m["media"] for m in media] == ["https://example.com/a.jpg", "https://example.com/b.jpg"]
    assert media[0]["caption"] == "Two views" and "caption" not in media[1]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"type": "message"}, "'text' is missing"),
        (
            {
                "type": "message",
                "text": "x",
                "media": {"type": "photo", "file": 1},
                "location": {"latitude": 1, "longitude": 2},
            },
            "not media and location",
        ),
        ({"type": "message", "media": {"type": "photo"}}, "exactly one of"),
        ({"type": "message", "media": {"type": "photo", "url": "http://x"}}, "https://"),
        (
            {"type": "message", "text": "x" * 1025, "media": {"type": "photo", "file": 1}},
            "at most 1024",
        ),
        (
            {"type": "message", "album": [{"type": "sticker", "file": 1}] * 2},
            "an album takes only",
        ),
        ({"type": "message", "location": {"latitude": 91, "longitude": 0}}, "latitude"),
        (
            {"type": "message", "media": {"type": "photo", "file": 1}, "edit": True},
            "cannot go with media",
        ),
    ],
)
def test_publishing_explains_what_is_wrong_with_media(db, project, step, expected):
    workflow = Workflow.objects.create(
        project=project, name="m", slug="m", draft={"start": "a", "steps": {"a": step}}
    )
    with pytest.raises(WorkflowValidationError) as raised:
        workflow_publish(workflow=workflow)
    assert expected in str(raised.value)
