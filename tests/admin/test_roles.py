"""The role matrix: every admin URL and action, for every role, in an own and a
foreign project, gives exactly what the table below says.

The URLs are found by introspecting the admin site (every registered ModelAdmin's
URL patterns, custom views included) and the actions by asking each ModelAdmin as a
superuser, so a new page or action that nobody put in the table fails this test.
The table is written out here, not taken from botplatform.roles, so a wrong rule
there fails too. The accounts have a membership and no Django permission at all.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.forms.models import model_to_dict
from django.test import RequestFactory
from django.urls import reverse

from tests.admin.conftest import operator_create
from tests.admin.test_tenant_isolation import SECRET, _populate
from tests.factories import project_create

pytestmark = pytest.mark.django_db

ROLES = ("owner", "editor", "analyst", "support")

# What each role may do with each model in its own project: v(iew) a(dd) c(hange) d(elete).
# The admin's own limits are included (the ledger and versions are read-only for all,
# executions cannot be added, Telegram updates cannot be added or edited).
#                                   owner   editor  analyst support
MODELS = {
    "botplatform.project": ("vc", "v", "v", "v"),
    "botplatform.bot": ("vacd", "v", "v", ""),
    "botplatform.telegramupdate": ("vd", "v", "v", ""),
    "botplatform.deferredsend": ("vd", "v", "v", ""),
    "users.botuser": ("vacd", "v", "v", "vc"),
    "users.uservariable": ("vacd", "v", "v", "vacd"),
    "users.bonustransaction": ("v", "v", "v", "v"),
    "workflows.workflow": ("vacd", "vacd", "v", ""),
    "workflows.workflowversion": ("v", "v", "v", ""),
    "workflows.workflowexecution": ("vc", "vc", "v", "v"),
    "workflows.executionsteplog": ("v", "v", "v", "v"),
    "workflows.broadcast": ("vacd", "vacd", "v", ""),
    "workflows.broadcastdelivery": ("v", "v", "v", ""),
    "users.apikey": ("vacd", "", "", ""),  # credentials: owners only
    "users.earnrule": ("vacd", "v", "v", ""),
    "users.cashier": ("vacd", "v", "v", ""),
    "users.purchase": ("v", "v", "v", "v"),  # written by the API only
    "users.hold": ("v", "v", "v", "v"),
    "users.webhookendpoint": ("vacd", "", "", ""),  # carries the signing secret
    "users.webhookdelivery": ("v", "v", "v", ""),
    "botplatform.mediafile": ("vacd", "vacd", "v", ""),
    "users.payment": ("vc", "v", "v", "v"),
    "auth.user": ("", "", "", ""),  # accounts: superusers only
    "auth.group": ("", "", "", ""),
}

# Custom pages (GET) in the own project: the roles that may open them.
CUSTOM = {
    "botplatform_project_dashboard": {"owner", "editor", "analyst"},
    "botplatform_project_programme": {"owner", "editor", "analyst"},
    "botplatform_project_funnel": {"owner", "editor", "analyst"},
    "botplatform_project_broadcast_results": {"owner", "editor", "analyst"},
    # Without ?table= the export gives the summary as CSV.
    "botplatform_project_programme_export": {"owner", "editor", "analyst"},
    "botplatform_bot_rotate_webhook_secret": {"owner"},  # GET only goes back to the bot
    "workflows_workflow_import": {"owner", "editor"},
    "workflows_simulator_index": {"owner", "editor"},
    "workflows_simulator": {"owner", "editor"},
    "workflows_workflow_editor": {"owner", "editor", "analyst"},  # analysts read it
    "workflows_workflow_canvas": {"owner", "editor", "analyst"},  # analysts read it
    "workflows_workflow_canvas_draft": {"owner", "editor", "analyst"},  # GET reads
    "workflows_workflow_canvas_check": {"owner", "editor", "analyst"},
    "workflows_workflow_canvas_preview": {"owner", "editor", "analyst"},
    "workflows_workflow_gallery": {"owner", "editor"},
    "workflows_workflow_versions": {"owner", "editor", "analyst"},
    "workflows_workflow_export": {"owner", "editor", "analyst"},
    "workflows_workflow_publish": {"owner", "editor"},
    "workflows_workflow_restore": {"owner", "editor"},
    "workflows_broadcast_progress": {"owner", "editor", "analyst"},
    "workflows_broadcast_send": {"owner", "editor"},
    "users_botuser_adjust_balance": {"owner", "support"},
    "users_botuser_rotate_card": {"owner", "support"},  # GET asks to confirm
    "auth_user_deactivate": set(),
    "auth_user_password_change": set(),
}

# Actions offered on each changelist.
ACTIONS = {
    ("botplatform.project", "delete_selected"): set(),
    ("botplatform.bot", "delete_selected"): {"owner"},
    ("botplatform.bot", "webhook_set_action"): {"owner"},
    ("botplatform.bot", "webhook_delete_action"): {"owner"},
    ("botplatform.bot", "webhook_secret_rotate_action"): {"owner"},
    ("botplatform.telegramupdate", "delete_selected"): {"owner"},
    ("botplatform.deferredsend", "delete_selected"): {"owner"},
    ("users.botuser", "delete_selected"): {"owner"},
    ("users.uservariable", "delete_selected"): {"owner", "support"},
    ("workflows.workflow", "delete_selected"): {"owner", "editor"},
    ("workflows.workflow", "publish_drafts"): {"owner", "editor"},
    ("workflows.workflowversion", "restore"): {"owner", "editor"},
    ("workflows.workflowexecution", "cancel_executions"): {"owner", "editor"},
    ("workflows.workflowexecution", "retry_executions"): {"owner", "editor"},
    ("workflows.workflowexecution", "delete_selected"): set(),  # history stays
    ("workflows.broadcast", "delete_selected"): {"owner", "editor"},
    ("users.apikey", "delete_selected"): {"owner"},
    ("users.apikey", "revoke_keys"): {"owner"},
    ("users.earnrule", "delete_selected"): {"owner"},
    ("users.cashier", "delete_selected"): {"owner"},
    ("users.webhookendpoint", "delete_selected"): {"owner"},
    ("users.webhookdelivery", "replay"): {"owner"},
    ("botplatform.mediafile", "delete_selected"): {"owner", "editor"},
    ("users.payment", "refund_payments"): {"owner"},
    ("auth.user", "delete_selected"): set(),
    ("auth.user", "deactivate_accounts"): set(),
    ("auth.group", "delete_selected"): set(),
}

DEFAULT_VIEWS = {"changelist", "add", "change", "delete", "history"}


def _expected_default(letters: str, view: str) -> str:
    if view == "change":
        return "edit" if "c" in letters else "view" if "v" in letters else "denied"
    needs = {"changelist": "vc", "history": "vc", "add": "a", "delete": "d"}[view]
    return "ok" if set(letters) & set(needs) else "denied"


@pytest.fixture
def world(db):
    own = _populate(project_create(name="Alpha"), "Alpha")
    foreign = _populate(project_create(name=f"{SECRET} project"), SECRET)
    extra = {
        User: User.objects.create_user("someone", password="pw", is_staff=True),
        Group: Group.objects.create(name="somegroup"),
    }
    return own, foreign, extra


def _argument(name: str, side: dict, obj):
    if name == "project_id":
        return side["project"].pk
    if name == "version_id":  # restore: an old version of the workflow in the URL
        return obj.published_version_id
    return obj.pk


def _object_of(model, side: dict, extra: dict):
    if model in extra:
        return extra[model]
    for obj in side.values():
        if type(obj) is model:
            return obj
    raise AssertionError(f"add an object of {model.__name__} to the fixture")


def _patterns():
    """(model, url name, argument names) of every named admin URL of every ModelAdmin."""
    for model, model_admin in admin.site._registry.items():
        for pattern in model_admin.get_urls():
            if pattern.name:
                yield model, pattern.name, list(pattern.pattern.converters)


def _outcome(response, *, view: str | None) -> str:
    if response.status_code in {403, 404}:
        return "denied"
    if response.status_code == 302:
        # The admin answers an object outside the queryset with a redirect home.
        return "denied" if response["Location"] == reverse("admin:index") else "ok"
    assert response.status_code == 200, response.status_code
    if view == "change":
        return "edit" if response.context_data["has_change_permission"] else "view"
    return "ok"


def _observe(client, world) -> dict:
    own, foreign, extra = world
    seen = {}
    for model, name, args in _patterns():
        label = model._meta.label_lower
        suffix = name.removeprefix(f"{model._meta.app_label}_{model._meta.model_name}_")
        view = suffix if suffix in DEFAULT_VIEWS else None
        sides = {"own": own, "foreign": foreign} if args else {"-": own}
        for side_name, side in sides.items():
            obj = _object_of(model, side, extra)
            values = {arg: _argument(arg, side, obj) for arg in args}
            response = client.get(reverse(f"admin:{name}", kwargs=values))
            body = response.content.decode(errors="replace")
            assert SECRET.lower() not in body.lower(), (
                f"{name} ({side_name}) leaks the other project"
            )
            key = (label, suffix) if view else ("custom", name)
            seen[(*key, side_name)] = _outcome(response, view=view)
    return seen


def _expect(role: str) -> dict:
    column = ROLES.index(role)
    expected = {}
    for model, name, args in _patterns():
        label = model._meta.label_lower
        suffix = name.removeprefix(f"{model._meta.app_label}_{model._meta.model_name}_")
        if suffix in DEFAULT_VIEWS:
            assert label in MODELS, f"{label} is missing from MODELS: which roles may use it?"
            outcome = _expected_default(MODELS[label][column], suffix)
            key = (label, suffix)
        else:
            assert name in CUSTOM, f"custom admin URL {name} is missing from CUSTOM"
            outcome = "ok" if role in CUSTOM[name] else "denied"
            key = ("custom", name)
        if args:
            expected[(*key, "own")] = outcome
            expected[(*key, "foreign")] = "denied"
        else:
            expected[(*key, "-")] = outcome
    return expected


@pytest.mark.parametrize("role", ROLES)
def test_every_admin_url_gives_exactly_what_the_role_allows(client, world, role):
    own, _foreign, _ = world
    client.force_login(operator_create(f"{role}_account", own["project"], role=role))
    observed, expected = _observe(client, world), _expect(role)
    wrong = [
        f"{key}: expected {expected[key]}, got {observed.get(key)}"
        for key in sorted(expected)
        if observed.get(key) != expected[key]
    ]
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


def _offered_actions(client, model) -> set[str]:
    meta = model._meta
    response = client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
    if response.status_code != 200:
        return set()
    select = re.search(r'<select name="action".*?</select>', response.content.decode(), re.S)
    return set(re.findall(r'<option value="(\w+)"', select.group(0))) - {""} if select else set()


def _superuser_actions(model_admin) -> set[str]:
    request = RequestFactory().get("/")
    request.user = User(is_superuser=True, is_staff=True, is_active=True)
    return set(model_admin.get_actions(request))


@pytest.mark.parametrize("role", ROLES)
def test_every_action_is_offered_exactly_to_its_roles(client, world, role):
    own, _foreign, _ = world
    client.force_login(operator_create(f"{role}_account", own["project"], role=role))
    wrong = []
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        offered = _offered_actions(client, model)
        for action in _superuser_actions(model_admin):
            assert (label, action) in ACTIONS, f"({label!r}, {action!r}) is missing from ACTIONS"
            if (action in offered) != (role in ACTIONS[(label, action)]):
                wrong.append(f"{label} {action}: offered={action in offered}")
    assert not wrong, f"{role}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_no_action_touches_a_foreign_project_or_runs_where_the_role_forbids_it(client, world, role):
    """Every action, posted with a foreign object and (where not allowed) an own one."""
    own, foreign, extra = world
    client.force_login(operator_create(f"{role}_account", own["project"], role=role))
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        meta = model._meta
        for action in _superuser_actions(model_admin):
            targets = [_object_of(model, foreign, extra)]
            if role not in ACTIONS[(label, action)]:
                targets.append(_object_of(model, own, extra))
            for obj in targets:
                before = model_to_dict(model._default_manager.get(pk=obj.pk))
                client.post(
                    reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"),
                    {"action": action, "_selected_action": [obj.pk], "post": "yes"},
                )
                after = model._default_manager.filter(pk=obj.pk).first()
                assert after is not None, f"{role}: {action} deleted {obj!r}"
                assert model_to_dict(after) == before, f"{role}: {action} changed {obj!r}"
