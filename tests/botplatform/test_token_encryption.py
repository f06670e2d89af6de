"""Bot tokens are encrypted at rest and findable only by equality."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from botplatform.encryption import TokenKeyError
from botplatform.models import Bot, TelegramUpdate
from tests.factories import bot_create

pytestmark = pytest.mark.django_db

TOKEN = "123456789:AAHsecretsecretsecretsecretsecret01"


def _raw_row(pk: int) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT token, token_hash FROM botplatform_bot WHERE id = %s", [pk])
        return cursor.fetchone()


def test_the_column_holds_ciphertext_and_the_model_the_token():
    bot = bot_create(token=TOKEN)
    stored, digest = _raw_row(bot.pk)
    assert TOKEN not in stored and "AAHsecret" not in stored
    assert stored.startswith("gAAAAA")  # Fernet
    assert len(digest) == 64 and TOKEN not in digest
    assert Bot.objects.get(pk=bot.pk).token == TOKEN
    assert Bot.objects.values_list("token", flat=True).get(pk=bot.pk) == TOKEN


def test_equality_lookups_find_the_bot_through_the_hash():
    bot = bot_create(token=TOKEN)
    other = bot_create()
    assert Bot.objects.get(token=TOKEN) == bot
    assert set(Bot.objects.filter(token__in=[TOKEN, other.token])) == {bot, other}
    assert not Bot.objects.filter(token=TOKEN + "x").exists()
    assert TelegramUpdate.objects.filter(bot__token=TOKEN).count() == 0
    found, created = Bot.objects.get_or_create(token=TOKEN, defaults={"project": bot.project})
    assert (found, created) == (bot, False)


@pytest.mark.parametrize(
    "lookup", ["gte", "lt", "startswith", "istartswith", "contains", "regex", "iexact"]
)
def test_no_lookup_can_compare_a_prefix_or_range_of_the_token(lookup):
    bot_create(token=TOKEN)
    with pytest.raises(FieldError, match="Unsupported lookup"):
        list(Bot.objects.filter(**{f"token__{lookup}": "123"}))
    with pytest.raises(FieldError, match="Unsupported lookup"):
        list(Bot.objects.filter(**{f"token_hash__{lookup}": "0"}))


def test_the_same_token_twice_is_refused_by_the_database():
    bot = bot_create(token=TOKEN)
    with pytest.raises(IntegrityError), transaction.atomic():
        Bot.objects.create(project=bot.project, token=TOKEN)


def test_rotation_reencrypts_under_the_new_key_and_the_old_key_can_go(settings):
    bot = bot_create(token=TOKEN)
    old_key = settings.BOT_TOKEN_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.BOT_TOKEN_KEYS = [new_key, old_key]
    assert Bot.objects.get(pk=bot.pk).token == TOKEN  # readable during the rotation
    call_command("tokens_reencrypt", verbosity=0)
    settings.BOT_TOKEN_KEYS = [new_key]
    assert Bot.objects.get(pk=bot.pk).token == TOKEN
    assert Bot.objects.get(token=TOKEN) == bot  # the hash moved to the new key too
    settings.BOT_TOKEN_KEYS = [old_key]
    with pytest.raises(TokenKeyError, match="BOT_TOKEN_KEYS"):
        Bot.objects.get(pk=bot.pk)


@pytest.mark.django_db(transaction=True)
def test_the_migration_encrypts_existing_plain_tokens():
    from django.db.migrations.executor import MigrationExecutor

    bot = bot_create(token=TOKEN)
    executor = MigrationExecutor(connection)
    target = [("botplatform", "0006_project_memberships_with_roles")]
    executor.migrate(target)
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM botplatform_bot WHERE id = %s", [bot.pk])
        assert cursor.fetchone()[0] == TOKEN  # back to plain text, as before
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    stored, digest = _raw_row(bot.pk)
    assert stored.startswith("gAAAAA") and digest
    assert Bot.objects.get(token=TOKEN).pk == bot.pk


def test_a_token_compared_with_an_expression_is_refused_not_silently_unmatched():
    from django.db.models import F

    bot_create(token=TOKEN)
    with pytest.raises(TypeError, match="plain token"):
        list(Bot.objects.filter(token=F("username")))


NEW_TOKEN = "987654321:AAHnewnewnewnewnewnewnewnewnewnew02"


def test_saving_only_the_token_refreshes_its_hash():
    bot = bot_create(token=TOKEN)
    bot.token = NEW_TOKEN
    bot.save(update_fields=["token"])
    assert Bot.objects.get(token=NEW_TOKEN) == bot
    assert not Bot.objects.filter(token=TOKEN).exists()


def test_a_bulk_token_update_refreshes_its_hash():
    bot = bot_create(token=TOKEN)
    assert Bot.objects.filter(pk=bot.pk).update(token=NEW_TOKEN) == 1
    assert Bot.objects.get(token=NEW_TOKEN) == bot
    assert _raw_row(bot.pk)[1] != _raw_row(bot_create().pk)[1]
    assert not Bot.objects.filter(token=TOKEN).exists()
