"""Project operators become members with a role.

Every existing operator becomes an Owner: before roles, an operator with the
permissions it needed could already change everything in its projects (bots,
tokens, settings), so Owner is the role that keeps each of them able to do their
work. Superusers can narrow them to Editor, Analyst or Support afterwards.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def operators_to_owners(apps, schema_editor):
    Project = apps.get_model("botplatform", "Project")
    Membership = apps.get_model("botplatform", "Membership")
    through = Project.operators.through
    Membership.objects.bulk_create(
        [
            Membership(project_id=row.project_id, user_id=row.user_id, role="owner")
            for row in through.objects.all()
        ],
        ignore_conflicts=True,
    )


def owners_to_operators(apps, schema_editor):
    Project = apps.get_model("botplatform", "Project")
    Membership = apps.get_model("botplatform", "Membership")
    through = Project.operators.through
    through.objects.bulk_create(
        [
            through(project_id=row.project_id, user_id=row.user_id)
            for row in Membership.objects.all()
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("botplatform", "0005_telegram_update_quarantine"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Membership",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "role",
                    models.CharField(
                        choices=[
                            (
                                "owner",
                                "Owner: everything, including members, bots and their tokens",
                            ),
                            ("editor", "Editor: workflows, versions, broadcasts, the simulator"),
                            ("analyst", "Analyst: reads everything, dashboards, exports"),
                            ("support", "Support: bot users and balance adjustments"),
                        ],
                        max_length=16,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to="botplatform.project",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "member",
                "ordering": ["project", "user__username"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("project", "user"), name="membership_unique_user"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(role__in=["owner", "editor", "analyst", "support"]),
                        name="membership_role_known",
                    ),
                ],
            },
        ),
        migrations.RunPython(operators_to_owners, owners_to_operators),
        migrations.RemoveField(model_name="project", name="operators"),
        migrations.AddField(
            model_name="project",
            name="members",
            field=models.ManyToManyField(
                blank=True,
                help_text="Staff accounts that work on this project in the admin, each with a role.",
                related_name="projects",
                through="botplatform.Membership",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
