from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from botplatform.models import Bot, TelegramUpdate
from botplatform.telegram.views import MAX_BODY_BYTES
from users.models import BotUser

pytestmark = pytest.mark.usefixtures("echo_handler")

HEADER = "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN"


def _post(client, bot, update, secret=None, **extra):
    headers = {} if secret is False else {HEADER: bot.webhook_secret if secret is None else secret}
    return client.post(
        reverse("telegram_webhook", kwargs={"bot_id": bot.pk}),
        data=json.dumps(update) if not isinstance(update, str) else update,
        content_type="application/json",
        **headers,
        **extra,
    )


def test_wrong_or_missing_secret_is_rejected_and_nothing_recorded(client, double, tg_bot, caplog):
    update = double.message(tg_bot.token, 801, "hi")
    assert _post(client, tg_bot, update, secret="nope").status_code == 403
    assert _post(client, tg_bot, update, secret=False).status_code == 403
    assert not TelegramUpdate.objects.exists()
    assert double.calls_of("sendMessage") == []
    assert tg_bot.webhook_secret not in caplog.text


def test_unknown_bot_is_rejected(client, db):
    response = client.post(
        reverse("telegram_webhook", kwargs={"bot_id": 999999}),
        data="{}",
        content_type="application/json",
        **{HEADER: "x"},
    )
    assert response.status_code == 403


@pytest.mark.parametrize("bot_id", [0, 2**63, 10**40])
def test_an_id_beyond_any_bot_is_rejected_with_403_not_a_database_error(client, db, bot_id):
    response = client.post(
        f"/telegram/webhook/{bot_id}/", data="{}", content_type="application/json", **{HEADER: "x"}
    )
    assert response.status_code == 403


def test_a_deactivated_bot_and_a_rotated_secret_take_effect_on_the_next_request(
    client, double, tg_bot
):
    old = tg_bot.webhook_secret
    assert _post(client, tg_bot, double.message(tg_bot.token, 830, "a")).status_code == 200
    Bot.objects.filter(pk=tg_bot.pk).update(webhook_secret="n" * 32)
    assert _post(client, tg_bot, double.message(tg_bot.token, 830, "b")).status_code == 403
    tg_bot.webhook_secret = "n" * 32
    assert _post(client, tg_bot, double.message(tg_bot.token, 830, "c")).status_code == 200
    Bot.objects.filter(pk=tg_bot.pk).update(is_active=False)
    assert _post(client, tg_bot, double.message(tg_bot.token, 830, "d")).status_code == 403
    assert double.sent_texts(tg_bot.token) == ["echo:a", "echo:c"]
    assert old != tg_bot.webhook_secret


def test_update_is_handled_and_a_duplicate_delivery_only_once(client, double, tg_bot):
    update = double.message(tg_bot.token, 802, "hook")
    assert _post(client, tg_bot, update).status_code == 200
    assert _post(client, tg_bot, update).status_code == 200
    assert double.sent_texts(tg_bot.token) == ["echo:hook"]
    assert TelegramUpdate.objects.get().status == TelegramUpdate.Status.DONE


def test_malformed_body_is_acknowledged_and_logged(client, double, tg_bot, caplog):
    caplog.set_level(logging.WARNING)
    assert _post(client, tg_bot, "not json{").status_code == 200
    assert _post(client, tg_bot, [1, 2]).status_code == 200
    assert _post(client, tg_bot, {"no": "update_id"}).status_code == 200
    assert "body is not JSON" in caplog.text
    assert "not an object" in caplog.text
    assert "no update_id" in caplog.text
    assert not TelegramUpdate.objects.exists()


def test_webhook_only_accepts_post(client, tg_bot):
    url = reverse("telegram_webhook", kwargs={"bot_id": tg_bot.pk})
    assert client.get(url).status_code == 405


def test_webhook_is_rate_limited_per_bot(client, double, tg_bot, settings):
    settings.TELEGRAM_WEBHOOK_RATE = "2/m"
    codes = [
        _post(client, tg_bot, double.message(tg_bot.token, 803, str(i))).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]


def test_admin_login_is_rate_limited(client, db, settings):
    settings.ADMIN_LOGIN_RATE = "3/m"  # per username and address
    url = reverse("admin_login")
    codes = [
        client.post(url, {"username": "x", "password": f"guess{i}"}).status_code for i in range(4)
    ]
    assert codes == [200, 200, 200, 429]  # 200: the form again, with its error
    assert client.get(url).status_code == 200  # the page itself stays reachable


def test_admin_login_still_signs_in(client, db):
    get_user_model().objects.create_superuser("boss", "b@example.com", "pw-123456")
    response = client.post(reverse("admin_login"), {"username": "boss", "password": "pw-123456"})
    assert response.status_code == 302


def test_setwebhook_and_deletewebhook_commands(double, tg_bot, capsys):
    call_command("setwebhook", str(tg_bot.pk), "--base-url", "https://bots.example.com")
    state = double.bots[tg_bot.token]
    assert state.webhook["url"] == f"https://bots.example.com/telegram/webhook/{tg_bot.pk}/"
    assert state.webhook["secret_token"] == tg_bot.webhook_secret
    tg_bot.refresh_from_db()
    assert tg_bot.mode == Bot.Mode.WEBHOOK
    assert tg_bot.token not in capsys.readouterr().out

    call_command("deletewebhook", f"@{tg_bot.username}")
    assert double.bots[tg_bot.token].webhook == {}
    tg_bot.refresh_from_db()
    assert tg_bot.mode == Bot.Mode.POLLING


def test_setwebhook_reports_a_revoked_token_clearly(double, tg_bot):
    from django.core.management.base import CommandError

    double.revoke(tg_bot.token)
    with pytest.raises(CommandError) as info:
        call_command("setwebhook", str(tg_bot.pk), "--base-url", "https://bots.example.com")
    assert "401" in str(info.value)
    assert tg_bot.token not in str(info.value)


def test_admin_actions_set_and_delete_the_webhook(client, double, tg_bot):
    admin = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(admin)
    url = reverse("admin:botplatform_bot_changelist")
    response = client.post(
        url, {"action": "webhook_set_action", "_selected_action": [tg_bot.pk]}, follow=True
    )
    assert response.status_code == 200
    assert double.bots[tg_bot.token].webhook["url"].endswith(f"/telegram/webhook/{tg_bot.pk}/")
    assert "webhook set to" in response.content.decode()
    client.post(url, {"action": "webhook_delete_action", "_selected_action": [tg_bot.pk]})
    assert double.bots[tg_bot.token].webhook == {}
    page = client.get(url).content.decode()
    assert tg_bot.token not in page
    assert tg_bot.token_masked in page


def test_webhook_can_hand_updates_to_celery_after_commit(
    client, double, tg_bot, settings, django_capture_on_commit_callbacks
):
    from botplatform.celery import app

    settings.TELEGRAM_WEBHOOK_ASYNC = True
    update = double.message(tg_bot.token, 805, "queued")
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert _post(client, tg_bot, update).status_code == 200
        assert double.calls_of("sendMessage") == []  # nothing done inline
        assert TelegramUpdate.objects.get().status == TelegramUpdate.Status.PENDING
        for callback in callbacks:
            callback()  # the commit: the task runs (eagerly here)
    finally:
        app.conf.task_always_eager = saved
    assert double.sent_texts(tg_bot.token) == ["echo:queued"]
    assert TelegramUpdate.objects.get().status == TelegramUpdate.Status.DONE


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_deliveries_are_handled_once(double, tg_bot):
    """Telegram retrying while the first delivery is still being handled."""
    import threading

    from django.db import connection
    from django.test import Client

    update = double.message(tg_bot.token, 806, "slow twin")
    codes = []
    barrier = threading.Barrier(3)

    def deliver() -> None:
        try:
            barrier.wait()
            codes.append(_post(Client(), tg_bot, update).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200, 200, 200]
    assert double.sent_texts(tg_bot.token) == ["echo:slow twin"]
    assert TelegramUpdate.objects.get().status == TelegramUpdate.Status.DONE


# --- Hostile updates: 200 for what is skipped, 4xx for what is refused, never 5xx ----


def test_nul_text_and_a_lone_surrogate_name_are_cleaned_and_answered(client, double, tg_bot):
    nul = double.message(tg_bot.token, 811, "hi\x00there")
    assert _post(client, tg_bot, nul).status_code == 200
    odd = double.message(tg_bot.token, 812, "hello")
    odd["message"]["from"]["first_name"] = "Eve\ud800"
    assert _post(client, tg_bot, odd).status_code == 200
    assert double.sent_texts(tg_bot.token) == ["echo:hi\ufffdthere", "echo:hello"]
    assert set(TelegramUpdate.objects.values_list("status", flat=True)) == {"done"}
    assert BotUser.objects.get(telegram_id=812).first_name == "Eve\ufffd"


def test_a_giant_chat_id_is_recorded_as_skipped_and_acknowledged(client, double, tg_bot):
    update = double.message(tg_bot.token, 813, "big")
    update["message"]["chat"]["id"] = 2**70
    assert _post(client, tg_bot, update).status_code == 200
    row = TelegramUpdate.objects.get()
    assert row.status == TelegramUpdate.Status.SKIPPED
    assert row.chat_id is None
    assert row.note == "MalformedUpdate: the sender or chat has no numeric id that fits in 64 bits"
    assert double.calls_of("sendMessage") == []


def test_a_giant_update_id_or_a_5000_digit_number_is_acknowledged_and_logged(
    client, double, tg_bot, caplog
):
    caplog.set_level(logging.WARNING)
    update = double.message(tg_bot.token, 814, "x")
    update["update_id"] = 2**64
    assert _post(client, tg_bot, update).status_code == 200
    assert "beyond 64 bits" in caplog.text
    body = '{"update_id": 5, "message": {"message_id": 1' + "0" * 5000 + "}}"
    assert _post(client, tg_bot, body).status_code == 200  # Python's json refuses it
    assert "body is not JSON" in caplog.text
    assert not TelegramUpdate.objects.exists()


def test_deeply_nested_json_is_refused_with_400_not_500(client, double, tg_bot, caplog):
    caplog.set_level(logging.WARNING)
    deep = '{"update_id": 6, "message": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert _post(client, tg_bot, deep).status_code == 400  # json.loads: RecursionError
    parsed_but_too_deep = '{"update_id": 7, "message": ' + "[" * 70 + "]" * 70 + "}"
    assert _post(client, tg_bot, parsed_but_too_deep).status_code == 400  # over MAX_DEPTH
    assert "nested too deep; refused" in caplog.text
    assert "refused: nested deeper than 64 levels" in caplog.text
    assert not TelegramUpdate.objects.exists()


def test_a_body_too_large_is_refused_with_413(client, double, tg_bot, settings):
    update = double.message(tg_bot.token, 815, "x" * (MAX_BODY_BYTES + 1))
    assert _post(client, tg_bot, update).status_code == 413
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000  # Django's own limit gives 413 too, not 400
    assert _post(client, tg_bot, double.message(tg_bot.token, 815, "y" * 2000)).status_code == 413
    assert not TelegramUpdate.objects.exists()


def test_nan_is_stored_as_null_and_the_update_answered(client, double, tg_bot):
    update = double.message(tg_bot.token, 816, "nan")
    body = json.dumps(update).replace('"date": ', '"date": NaN, "was": ')
    assert _post(client, tg_bot, body).status_code == 200
    assert double.sent_texts(tg_bot.token) == ["echo:nan"]
    assert TelegramUpdate.objects.get().payload["message"]["date"] is None


def _refusing_trigger(condition: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse() RETURNS trigger AS $$ BEGIN "
            f"IF {condition} THEN RAISE EXCEPTION 'test trigger refuses'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql; "
            "CREATE TRIGGER test_refuse BEFORE INSERT ON botplatform_telegramupdate "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse();"
        )


def test_an_update_the_database_refuses_is_skipped_with_200(client, double, tg_bot):
    _refusing_trigger("NEW.payload ? 'message'")  # the stub carries no message
    assert _post(client, tg_bot, double.message(tg_bot.token, 817, "x")).status_code == 200
    row = TelegramUpdate.objects.get()
    assert row.status == TelegramUpdate.Status.SKIPPED
    assert "the database refused it" in row.note


def test_only_a_failing_database_answers_503(client, double, tg_bot):
    _refusing_trigger("true")  # every insert fails: the database, not this update
    assert _post(client, tg_bot, double.message(tg_bot.token, 818, "x")).status_code == 503
    assert double.calls_of("sendMessage") == []
