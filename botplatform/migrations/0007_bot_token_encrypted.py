"""Bot tokens encrypted at rest: ciphertext in ``token``, a keyed hash in ``token_hash``.

The data step works on the raw column (the historical model would try to decrypt the
plain tokens) and skips values that are already ciphertext, so it is safe to re-run.
"""

import django.core.validators
import django.db.models.functions.text
import django.db.models.lookups
from django.db import migrations, models

import botplatform.encryption

FERNET_PREFIX = "gAAAAA"  # every Fernet token starts with version byte 0x80 + timestamp


def tokens_encrypt(apps, schema_editor):
    from botplatform.encryption import token_decrypt, token_digest, token_encrypt

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, token FROM botplatform_bot")
        for pk, stored in cursor.fetchall():
            plain = token_decrypt(stored) if stored.startswith(FERNET_PREFIX) else stored
            cursor.execute(
                "UPDATE botplatform_bot SET token = %s, token_hash = %s WHERE id = %s",
                [token_encrypt(plain), token_digest(plain), pk],
            )


def tokens_decrypt(apps, schema_editor):
    from botplatform.encryption import token_decrypt

    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, token FROM botplatform_bot")
        for pk, stored in cursor.fetchall():
            if stored.startswith(FERNET_PREFIX):
                cursor.execute(
                    "UPDATE botplatform_bot SET token = %s WHERE id = %s",
                    [token_decrypt(stored), pk],
                )


class Migration(migrations.Migration):
    dependencies = [
        ("botplatform", "0006_project_memberships_with_roles"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="bot", name="bot_token_not_empty"),
        migrations.AlterField(
            model_name="bot",
            name="token",
            field=botplatform.encryption.EncryptedTokenField(
                digest_field="token_hash",
                validators=[
                    django.core.validators.RegexValidator(
                        "^\\d{3,}:[A-Za-z0-9_-]{20,}$",
                        "This does not look like a bot token. Copy it from @BotFather: "
                        "digits, a colon, then about 35 letters, digits, dashes or "
                        "underscores.",
                    )
                ],
            ),
        ),
        migrations.AddField(
            model_name="bot",
            name="token_hash",
            field=botplatform.encryption.TokenDigestField(default="", source="token"),
            preserve_default=False,
        ),
        migrations.RunPython(tokens_encrypt, tokens_decrypt, elidable=False),
        migrations.AlterField(
            model_name="bot",
            name="token_hash",
            field=botplatform.encryption.TokenDigestField(source="token", unique=True),
        ),
        migrations.AddConstraint(
            model_name="bot",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.GreaterThan(
                    django.db.models.functions.text.Length("token"), 0
                ),
                name="bot_token_not_empty",
            ),
        ),
    ]
