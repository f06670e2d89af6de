"""An operator of project A gets nothing of project B through any admin URL.

Every registered model's changelist, change, delete and history URL, every custom
URL (editor, versions, export, simulator, broadcast progress, balance adjustment),
searches, filters, autocomplete, add forms and actions are tried with B's ids.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from botplatform.models import DeferredSend, MediaFile, TelegramUpdate
from tests.admin.conftest import operator_create
from tests.factories import (
    bot_create,
    bot_user_create,
    execution_create,
    project_create,
    workflow_create,
)
from users.models import BonusTransaction, Payment, UserVariable
from workflows.models import Broadcast, ExecutionStepLog, Workflow, WorkflowExecution

pytestmark = pytest.mark.django_db

SECRET = "Zetasecret"  # every name of project B contains it


def _populate_pos(project, user, tag: str) -> dict:
    """The POS/CRM API's objects (issue 16) of one project."""
    from decimal import Decimal

    from users.apikeys import apikey_create
    from users.models_pos import (
        Cashier,
        EarnRule,
        Hold,
        Purchase,
        WebhookDelivery,
        WebhookEndpoint,
    )

    endpoint = WebhookEndpoint.objects.create(
        project=project, url=f"https://{tag.lower()}.example/hook", secret=f"{tag}-s", events=[]
    )
    return {
        "api_key": apikey_create(project=project, name=f"{tag} till", scopes="read").api_key,
        "earn_rule": EarnRule.objects.create(project=project, name=f"{tag} rule", percent=5),
        "cashier": Cashier.objects.create(
            project=project, telegram_id=user.telegram_id, store_name=f"{tag} store"
        ),
        "purchase": Purchase.objects.create(
            project=project, customer=user, order_id=f"{tag}-1", amount=Decimal(10)
        ),
        "hold": Hold.objects.create(
            project=project, customer=user, amount=1, expires_at=timezone.now(), store=tag
        ),
        "endpoint": endpoint,
        "webhook_delivery": WebhookDelivery.objects.create(
            endpoint=endpoint, event="bonus.accrued", payload={"tag": tag}
        ),
    }


def _populate(project, tag: str) -> dict:
    bot = bot_create(project=project, username=f"{tag}_bot")
    user = bot_user_create(project=project, first_name=f"{tag}User", username=f"{tag}_user")
    variable = UserVariable.objects.create(user=user, key=f"{tag}var", value=f"{tag}value")
    entry = BonusTransaction.objects.create(
        project=project,
        user=user,
        kind="earn",
        amount=5,
        balance_after=5,
        idempotency_key=f"{tag}-k",
        reason=f"{tag} reason",
    )
    workflow = workflow_create(project=project, name=f"{tag} flow", slug=f"{tag.lower()}-flow")
    execution = execution_create(
        workflow=workflow, user=user, status="waiting", current_step="hello"
    )
    log = ExecutionStepLog.objects.create(execution=execution, step=f"{tag}step", step_type="end")
    broadcast = Broadcast.objects.create(project=project, title=f"{tag} news", text=f"{tag} text")
    delivery = broadcast.deliveries.create(user=user)
    update = TelegramUpdate.objects.create(
        bot=bot,
        update_id=user.pk,
        chat_id=user.chat_id,
        payload={"update_id": user.pk, "message": {"text": f"{tag} says hi"}},
        note=f"{tag} note",
    )
    deferred = DeferredSend.objects.create(
        bot=bot,
        chat_id=user.chat_id,
        actions=[{"type": "SendMessage", "chat_id": user.chat_id, "text": f"{tag} later"}],
        due_at=timezone.now(),
    )
    pos = _populate_pos(project, user, tag)
    media = MediaFile.objects.create(
        project=project, kind="photo", title=f"{tag} photo", file=f"media/{tag}.png", size=10
    )
    payment = Payment.objects.create(
        project=project, user=user, bot=bot, charge_id=f"{tag}-charge", currency="XTR", amount=5
    )
    return {
        **pos,
        "payment": payment,
        "media": media,
        "deferred": deferred,
        "update": update,
        "project": project,
        "bot": bot,
        "user": user,
        "variable": variable,
        "entry": entry,
        "workflow": workflow,
        "version": workflow.published_version,
        "execution": execution,
        "log": log,
        "broadcast": broadcast,
        "delivery": delivery,
    }


@pytest.fixture
def world(db):
    a = _populate(project_create(name="Alpha"), "Alpha")
    b = _populate(project_create(name=f"{SECRET} project"), SECRET)
    operator = operator_create("ann", a["project"])
    operator_create(f"{SECRET}_operator", b["project"])
    return a, b, operator


@pytest.fixture
def as_operator(client, world):
    client.force_login(world[2])
    return client


def _b_object(b: dict, model):
    for obj in b.values():
        if isinstance(obj, model):
            return obj
    raise AssertionError(f"no object of {model.__name__} in project B's fixture")


def _our_models():
    for model in admin.site._registry:
        if model._meta.app_label in {"botplatform", "users", "workflows"}:
            yield model


def _assert_nothing_of_b(response, what: str) -> None:
    assert response.status_code in {200, 302, 403, 404}, (what, response.status_code)
    body = response.content.decode(errors="replace")
    assert SECRET.lower() not in body.lower(), f"{what} leaks project B: {body[:500]}"
    if response.status_code == 302:
        assert SECRET.lower() not in response["Location"].lower()


def test_every_model_url_with_b_ids_gives_nothing(as_operator, world):
    _, b, _ = world
    tried = 0
    for model in _our_models():
        meta = model._meta
        prefix = f"admin:{meta.app_label}_{meta.model_name}"
        obj = _b_object(b, model)
        changelist = reverse(f"{prefix}_changelist")
        for url in (
            changelist,
            f"{changelist}?q={SECRET[1:-1]}",  # the echoed term is not the marker
            f"{changelist}?q={obj.pk}",
            reverse(f"{prefix}_change", args=[obj.pk]),
            reverse(f"{prefix}_delete", args=[obj.pk]),
            reverse(f"{prefix}_history", args=[obj.pk]),
        ):
            response = as_operator.get(url)
            _assert_nothing_of_b(response, url)
            tried += 1
        # Forged writes: a change POST and a delete POST with B's id.
        for url in (
            reverse(f"{prefix}_change", args=[obj.pk]),
            reverse(f"{prefix}_delete", args=[obj.pk]),
        ):
            response = as_operator.post(url, {"post": "yes", "name": "hijacked"})
            _assert_nothing_of_b(response, f"POST {url}")
            assert response.status_code != 200 or "errornote" not in response.content.decode()
        assert model._default_manager.filter(pk=obj.pk).exists(), f"{model.__name__} deleted"
    assert tried >= 6 * 11


def test_changelists_show_only_own_rows_and_filters(as_operator, world):
    _a, _, _ = world
    page = as_operator.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    assert "Alpha flow" in page  # the operator does see their own
    page = as_operator.get(reverse("admin:workflows_workflowexecution_changelist")).content.decode()
    assert "Alpha flow" in page and SECRET not in page  # sidebar filters included


def test_custom_urls_with_b_ids_give_404(as_operator, world):
    _, b, _ = world
    urls = [
        reverse("admin:workflows_workflow_editor", args=[b["workflow"].pk]),
        reverse("admin:workflows_workflow_versions", args=[b["workflow"].pk]),
        reverse("admin:workflows_workflow_export", args=[b["workflow"].pk]),
        reverse("admin:workflows_simulator", args=[b["project"].pk]),
        reverse("admin:workflows_broadcast_progress", args=[b["broadcast"].pk]),
        reverse("admin:users_botuser_adjust_balance", args=[b["user"].pk]),
    ]
    for url in urls:
        for method in ("get", "post"):
            response = getattr(as_operator, method)(
                url,
                {
                    "_action": "publish",
                    "version": b["version"].pk,
                    "text": "/start",
                    "amount": 100,
                    "reason": "x",
                    "request_token": "a" * 32,
                },
            )
            assert response.status_code == 404, (method, url, response.status_code)
            _assert_nothing_of_b(response, url)
    b["user"].refresh_from_db()
    assert b["user"].balance == 0
    assert not b["project"].users.filter(is_test=True).exists()  # no simulator user created


def test_simulator_index_and_import_offer_only_own_projects(as_operator, world):
    a, b, _ = world
    response = as_operator.get(reverse("admin:workflows_simulator_index"))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:workflows_simulator", args=[a["project"].pk])
    import_url = reverse("admin:workflows_workflow_import")
    _assert_nothing_of_b(as_operator.get(import_url), import_url)
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile(
        "w.json",
        b'{"slug": "stolen", "definition": {"start": "a", "steps": {"a": {"type": "end"}}}}',
    )
    response = as_operator.post(import_url, {"project": b["project"].pk, "file": upload})
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Workflow.objects.filter(slug="stolen").exists()


def test_add_forms_offer_only_own_choices_and_refuse_forged_ones(as_operator, world):
    a, b, _ = world
    for model in _our_models():
        meta = model._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
        _assert_nothing_of_b(as_operator.get(url), url)
    response = as_operator.post(
        reverse("admin:workflows_broadcast_add"),
        {
            "project": a["project"].pk,
            "bot": b["bot"].pk,
            "title": "forged",
            "text": "hi",
            "workflow": b["workflow"].pk,
            "segment": "all",
        },
    )
    assert response.status_code == 200
    assert response.content.decode().count("Select a valid choice") == 2
    assert not Broadcast.objects.filter(title="forged").exists()


def test_actions_with_b_ids_touch_nothing(as_operator, world):
    _a, b, _ = world
    Workflow.objects.filter(pk=b["workflow"].pk).update(published_version=None)
    cases = [
        ("workflows_workflow", "publish_drafts", b["workflow"]),
        ("workflows_workflowexecution", "cancel_executions", b["execution"]),
        ("workflows_workflowversion", "restore", b["version"]),
        ("workflows_broadcast", "delete_selected", b["broadcast"]),
        ("users_botuser", "delete_selected", b["user"]),
        ("workflows_workflow", "delete_selected", b["workflow"]),
    ]
    for prefix, action, obj in cases:
        response = as_operator.post(
            reverse(f"admin:{prefix}_changelist"),
            {"action": action, "_selected_action": [obj.pk], "post": "yes"},
        )
        _assert_nothing_of_b(response, f"{prefix} {action}")
    b["workflow"].refresh_from_db()
    assert b["workflow"].published_version is None
    assert WorkflowExecution.objects.get(pk=b["execution"].pk).status == "waiting"
    assert b["workflow"].versions.count() == 1
    assert Broadcast.objects.filter(pk=b["broadcast"].pk).exists()
    assert b["user"].__class__.objects.filter(pk=b["user"].pk).exists()


def test_autocomplete_returns_only_own_rows(as_operator, world):
    a, _b, _ = world
    response = as_operator.get(
        reverse("admin:autocomplete"),
        {"app_label": "users", "model_name": "uservariable", "field_name": "user", "term": ""},
    )
    assert response.status_code == 200
    ids = {int(row["id"]) for row in response.json()["results"]}
    assert ids == {a["user"].pk}
    response = as_operator.get(
        reverse("admin:autocomplete"),
        {"app_label": "users", "model_name": "uservariable", "field_name": "user", "term": SECRET},
    )
    assert response.json()["results"] == []


def test_a_superuser_sees_everything(client, world):
    _, b, _ = world
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    assert SECRET in client.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    response = client.get(reverse("admin:workflows_workflow_editor", args=[b["workflow"].pk]))
    assert response.status_code == 200


def test_an_operator_without_projects_sees_no_rows(client, world):
    client.force_login(operator_create("nobody"))
    for model in _our_models():
        meta = model._meta
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        page = client.get(url).content.decode()
        assert SECRET not in page and "Alpha" not in page, url


def test_the_project_page_lists_no_other_tenants_accounts(as_operator, world):
    a, _, _operator = world
    page = as_operator.get(
        reverse("admin:botplatform_project_change", args=[a["project"].pk])
    ).content.decode()
    assert "ann" in page and SECRET not in page and "Alpha" in page
    response = as_operator.post(
        reverse("admin:botplatform_project_add"),
        {
            "name": "Gamma",
            "slug": "gamma",
            "is_active": "on",
            "fallback_message": "Sorry",
            "rate_limited_message": "Wait",
            "stale_button_message": "Gone",
            "user_rate_limit_per_minute": 100,
            "bot_send_rate_per_second": 10,
            "welcome_bonus": 0,
            "referral_reward": 50,
            "max_bonus_share_percent": 100,
            "levels": "[]",
        },
    )
    # Only superusers create projects (an operator would widen its own access).
    assert response.status_code == 403
    from botplatform.models import Project

    assert not Project.objects.filter(slug="gamma").exists()
