"""Languages through the Telegram path: a step's per-language texts reach a Russian user
in Russian, an unknown language falls back to the project's default, a
``choose_language`` step switches, and system texts (retry prompts) are translated."""

from __future__ import annotations

import pytest

from tests.workflows.conftest import publish
from tests.workflows.tgpath import Chat, chat, double, tg_bot  # noqa: F401 (fixtures)
from users.models import BotUser

GREETING = {
    "start": "hello",
    "steps": {
        "hello": {
            "type": "message",
            "text": {"en": "Hello, {{ user.first_name }}", "ru": "Привет, {{ user.first_name }}"},
            "buttons": [{"text": {"en": "Go on", "ru": "Дальше"}, "next": "bye"}],
        },
        "bye": {"type": "message", "text": {"ru": "Пока", "de": "Tschüss"}},
    },
}


@pytest.fixture
def bilingual(project):
    project.languages = "en, ru"
    project.default_language = "en"
    project.save(update_fields=["languages", "default_language"])
    return project


def _labels(chat: Chat) -> list[str]:  # noqa: F811
    message = chat.double.messages[(chat.chat_id, chat.double.last_message[chat.chat_id])]
    return [
        button["text"]
        for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])
        for button in row
    ]


def test_a_russian_user_gets_the_russian_texts(bilingual, chat: Chat):  # noqa: F811
    publish(bilingual, GREETING)
    chat.double.language_codes[chat.chat_id] = "ru"
    assert chat.say("/start") == ["Привет, User4242"]
    assert _labels(chat) == ["Дальше"]
    assert chat.press("Дальше") == ["Пока"]


def test_a_regional_code_uses_its_base_language(bilingual, chat: Chat):  # noqa: F811
    publish(bilingual, GREETING)
    chat.double.language_codes[chat.chat_id] = "ru-RU"
    assert chat.say("/start") == ["Привет, User4242"]


def test_an_unknown_language_falls_back_to_the_default(bilingual, chat: Chat):  # noqa: F811
    publish(bilingual, GREETING)
    chat.double.language_codes[chat.chat_id] = "de"  # has a "de" text, but the project: en, ru
    assert chat.say("/start") == ["Hello, User4242"]
    assert _labels(chat) == ["Go on"]
    # No "en" version: the project's next language (ru), not the user's "de".
    assert chat.press("Go on") == ["Пока"]


def test_choose_language_switches_and_is_stored(bilingual, chat: Chat):  # noqa: F811
    flow = {
        "start": "pick",
        "steps": {
            "pick": {
                "type": "choose_language",
                "text": {"en": "Your language?", "ru": "Ваш язык?"},
                "next": "hello",
            },
            **GREETING["steps"],
        },
    }
    publish(bilingual, flow)
    chat.double.language_codes[chat.chat_id] = "en"
    assert chat.say("/start") == ["Your language?"]
    assert _labels(chat) == ["English", "Русский"]
    assert chat.press("Русский") == ["Привет, User4242"]
    assert BotUser.objects.get(telegram_id=chat.chat_id).language == "ru"
    # Telegram still says "en"; the choice wins from now on.
    assert chat.say("/start") == ["Ваш язык?"]
    assert chat.press("English") == ["Hello, User4242"]
    assert BotUser.objects.get(telegram_id=chat.chat_id).language == "en"


def test_system_retry_text_is_translated(bilingual, chat: Chat):  # noqa: F811
    flow = {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "input",
                "text": {"en": "Send a photo", "ru": "Пришлите фото"},
                "variable": "pic",
                "validate": {"type": "photo"},
                "next": "done",
            },
            "done": {"type": "message", "text": "ok"},
        },
    }
    publish(bilingual, flow)
    chat.double.language_codes[chat.chat_id] = "ru"
    assert chat.say("/start") == ["Пришлите фото"]
    assert chat.say("hello") == ["Пожалуйста, пришлите фото."]
    chat.double.language_codes[chat.chat_id] = "en"
    assert chat.say("hello") == ["Please send a photo."]


def test_a_number_retry_explanation_is_translated(bilingual, chat: Chat):  # noqa: F811
    flow = {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "input",
                "text": "Age?",
                "variable": "age",
                "validate": {"type": "integer"},
            },
        },
    }
    publish(bilingual, flow)
    chat.double.language_codes[chat.chat_id] = "ru"
    assert chat.say("/start") == ["Age?"]
    [reply] = chat.say("abc")
    assert reply.startswith("Похоже, что-то не так: ")


def test_stale_button_and_rate_limit_notices_are_translated(bilingual, chat: Chat):  # noqa: F811
    publish(bilingual, GREETING)
    chat.double.language_codes[chat.chat_id] = "ru"
    chat.say("/start")
    message = chat.double.messages[(chat.chat_id, chat.double.last_message[chat.chat_id])]
    data = message["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert chat.press("Дальше") == ["Пока"]
    chat.double.callback(chat.bot.token, chat.chat_id, data, message_id=message["message_id"])
    chat.run()
    answers = [call.params.get("text") for call in chat.double.calls_of("answerCallbackQuery")]
    assert answers[-1] == "Эта кнопка больше не действует."

    bilingual.user_rate_limit_per_minute = 1
    bilingual.save(update_fields=["user_rate_limit_per_minute"])
    sent = [text for _ in range(3) for text in chat.say("/start")]
    assert "Слишком много сообщений. Пожалуйста, подождите минуту." in sent


def test_an_operators_own_wording_is_sent_as_written(bilingual, chat: Chat):  # noqa: F811
    bilingual.rate_limited_message = "Slow down, friend"
    bilingual.user_rate_limit_per_minute = 1
    bilingual.save(update_fields=["rate_limited_message", "user_rate_limit_per_minute"])
    publish(bilingual, GREETING)
    chat.double.language_codes[chat.chat_id] = "ru"
    sent = [text for _ in range(3) for text in chat.say("/start")]
    assert "Slow down, friend" in sent


def test_a_patterns_own_explanation_has_a_version_per_language(bilingual, chat: Chat):  # noqa: F811
    flow = {
        "start": "ask",
        "steps": {
            "ask": {
                "type": "input",
                "text": "Code?",
                "variable": "code",
                "validate": {
                    "type": "regex",
                    "pattern": "[A-Z]{3}",
                    "message": {"en": "Three capital letters", "ru": "Три заглавные буквы"},
                },
            },
        },
    }
    publish(bilingual, flow)
    chat.double.language_codes[chat.chat_id] = "ru"
    assert chat.say("/start") == ["Code?"]
    assert chat.say("abc") == ["Три заглавные буквы"]
