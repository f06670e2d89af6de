# The messages a broadcast sent (their button presses are counted per broadcast), and
# two indexes the daily rollups read executions by. The executions table is big, so the
# indexes are built concurrently on PostgreSQL (no transaction: atomic = False).

import django.db.models.deletion
from django.db import migrations, models

from botplatform.migration_ops import AddIndexConcurrentlyOnPostgres


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('botplatform', '0011_project_languages'),
        ('users', '0005_level_change'),
        ('workflows', '0006_workflow_canvas_layout'),
    ]

    operations = [
        migrations.CreateModel(
            name='BroadcastMessage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('chat_id', models.BigIntegerField()),
                ('message_id', models.BigIntegerField()),
                ('sent_at', models.DateTimeField()),
                ('bot', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='botplatform.bot')),
                ('broadcast', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='messages', to='workflows.broadcast')),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='users.botuser')),
            ],
            options={
                'ordering': ['broadcast', 'id'],
                'constraints': [models.UniqueConstraint(fields=('bot', 'chat_id', 'message_id'), name='broadcastmessage_unique_message')],
            },
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='workflowexecution',
            index=models.Index(fields=['started_at'], name='execution_started_idx'),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name='workflowexecution',
            index=models.Index(fields=['finished_at'], name='execution_finished_idx'),
        ),
    ]
