"""API tokens move from DRF's authtoken (one key per user, stored in clear, never expiring) to
django-rest-knox (keys stored as SHA-512 digests, with an expiry): the old table is dropped with
its keys, so no key stays in clear in the database or in later backups. Tokens issued before
this release stop working; each user asks for a new one (POST /api/v1/auth/token/, or their API
tokens page). The header stays `Authorization: Token <key>`.

Nothing to undo: the old keys are gone on purpose (reversing leaves knox's tokens as they are).
"""

from django.db import migrations
from django.db.migrations.recorder import MigrationRecorder

OLD_TABLE = "authtoken_token"


def drop_clear_text_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE in connection.introspection.table_names():
        schema_editor.execute(f"DROP TABLE {schema_editor.quote_name(OLD_TABLE)}")
    # The app is no longer installed: forget its migrations, so installing it again would start afresh.
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("diagnosis", "0005_classification_screening_and_activation_map"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(drop_clear_text_tokens, migrations.RunPython.noop)]
