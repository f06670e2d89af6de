"""An ``input`` step that takes a photo, a document or a location, through the double:
the reference is stored (a file_id, "latitude,longitude"), a text gets the retry."""

from __future__ import annotations

import pytest

from botplatform.telegram.client import api
from botplatform.telegram.dispatch import update_run
from botplatform.telegram.journal import updates_record
from botplatform.telegram.updates import MalformedUpdate, update_parse
from tests.workflows.conftest import publish
from users.models import UserVariable

CHAT = 9501


@pytest.fixture
def engine_bot(tg_bot, settings):
    settings.TELEGRAM_EVENT_HANDLER = "workflows.handler.handler"
    return tg_bot


def _handle(bot, offset: dict) -> None:
    updates = api().get_updates(bot.token, offset=offset.get("next"), limit=100)
    offset["next"] = max(u["update_id"] for u in updates) + 1
    for row in updates_record(bot_id=bot.pk, updates=updates):
        assert update_run(update_pk=row.pk) == "done"


def _variable(key: str):
    return UserVariable.objects.get(key=key).value


@pytest.mark.django_db(transaction=True)  # the user's cached state is dropped on commit
def test_a_photo_answer_is_stored_as_its_file_id_and_can_be_sent_back(double, engine_bot):
    publish(
        engine_bot.project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "Send a photo of your receipt",
                    "variable": "receipt",
                    "validate": {"type": "photo"},
                    "next": "where",
                },
                "where": {
                    "type": "input",
                    "text": "Where are you?",
                    "variable": "where",
                    "validate": {"type": "location"},
                    "next": "thanks",
                },
                "thanks": {
                    "type": "message",
                    "text": "Got it at {{ vars.where }}",
                    "media": {"type": "photo", "file_id": "{{ vars.receipt }}"},
                },
            },
        },
    )
    offset: dict = {}
    double.command(engine_bot.token, CHAT, "/start")
    _handle(engine_bot, offset)
    double.message(engine_bot.token, CHAT, "here it is")  # text, not a photo
    _handle(engine_bot, offset)
    assert double.sent_texts(engine_bot.token, CHAT)[-1] == "Please send a photo."
    file_id = double.photo(engine_bot.token, CHAT)
    _handle(engine_bot, offset)
    assert _variable("receipt") == file_id
    double.location(engine_bot.token, CHAT, 55.7558, 37.6173)
    _handle(engine_bot, offset)
    assert _variable("where") == "55.755800,37.617300"
    sent = double.calls_of("sendPhoto", engine_bot.token)
    assert sent[-1].params["photo"] == file_id and not double.uploads
    assert sent[-1].params["caption"] == "Got it at 55.755800,37.617300"


def test_a_document_answer_keeps_its_file_id(double, engine_bot):
    publish(
        engine_bot.project,
        {
            "start": "ask",
            "steps": {
                "ask": {
                    "type": "input",
                    "text": "Your CV, please",
                    "variable": "cv",
                    "validate": {"type": "document"},
                }
            },
        },
    )
    offset: dict = {}
    double.command(engine_bot.token, CHAT, "/start")
    _handle(engine_bot, offset)
    file_id = double.document(engine_bot.token, CHAT, "cv.pdf")
    _handle(engine_bot, offset)
    assert _variable("cv") == file_id


@pytest.mark.parametrize(
    "message",
    [
        {"location": {"latitude": 91, "longitude": 0}},
        {"location": {"latitude": "NaN", "longitude": 0}},
        {"photo": []},
        {"document": {"file_id": "", "file_unique_id": "x"}},
    ],
)
def test_hostile_attachments_are_refused_with_a_reason(message):
    update = {
        "update_id": 5,
        "message": {
            "message_id": 1,
            "date": 1,
            "chat": {"id": 1, "type": "private"},
            "from": {"id": 1, "is_bot": False, "first_name": "A"},
            **message,
        },
    }
    with pytest.raises(MalformedUpdate) as raised:
        update_parse(bot_id=1, update=update)
    assert str(raised.value)
