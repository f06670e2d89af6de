"""Members are managed on the project's page; nobody widens their own access.

Owners add, re-role and remove Editors, Analysts and Support; only superusers create
projects, grant or take the Owner role, and switch off a guard such as
``allow_private_http``. Every role change leaves an admin log entry.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from botplatform.models import Membership, Project
from tests.admin.conftest import operator_create
from tests.admin.helpers import form_data
from tests.factories import bot_create, bot_user_create, project_create, workflow_create
from users.models import BonusTransaction
from workflows.models import Broadcast, Workflow
from workflows.publishing import draft_checksum

pytestmark = pytest.mark.django_db


def _page_url(project: Project) -> str:
    return reverse("admin:botplatform_project_change", args=[project.pk])


def _form(client, project: Project) -> dict:
    response = client.get(_page_url(project))
    assert response.status_code == 200
    return form_data(response.content.decode(), "project_form")


def _row(data: dict, username: str) -> str:
    """The inline prefix ("memberships-0") of ``username``'s row."""
    total = int(data["memberships-TOTAL_FORMS"])
    for index in range(total):
        if data.get(f"memberships-{index}-username") == username:
            return f"memberships-{index}"
    raise AssertionError(f"{username} is not listed: {data}")


def _add_row(data: dict, username: str, role: str) -> dict:
    index = int(data["memberships-TOTAL_FORMS"])
    data[f"memberships-{index}-username"] = username
    data[f"memberships-{index}-role"] = role
    data[f"memberships-{index}-project"] = ""
    data[f"memberships-{index}-id"] = ""
    data["memberships-TOTAL_FORMS"] = str(index + 1)
    return data


def _roles(project: Project) -> dict[str, str]:
    return dict(project.memberships.values_list("user__username", "role"))


@pytest.fixture
def shop(db):
    project = project_create(name="Coffee Club")
    owner = operator_create("olga", project, role="owner")
    operator_create("ed", project, role="editor")
    operator_create("otto", project, role="owner")
    User.objects.create_user("newbie", password="pw", is_staff=True)
    return project, owner


@pytest.fixture
def as_owner(client, shop):
    client.force_login(shop[1])
    return client


def test_an_owner_adds_a_member_and_the_change_is_logged(as_owner, shop):
    project, owner = shop
    data = _add_row(_form(as_owner, project), "newbie", "support")
    response = as_owner.post(_page_url(project), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert _roles(project)["newbie"] == "support"
    messages = set(
        LogEntry.objects.filter(user=owner, object_id=str(project.pk)).values_list(
            "change_message", flat=True
        )
    )
    assert "Role of newbie: no role → Support" in messages


def test_an_owner_changes_a_role_and_removes_a_member_with_log_entries(as_owner, shop):
    project, owner = shop
    data = _form(as_owner, project)
    data[f"{_row(data, 'ed')}-role"] = "analyst"
    assert as_owner.post(_page_url(project), data).status_code == 302
    assert _roles(project)["ed"] == "analyst"
    data = _form(as_owner, project)
    data[f"{_row(data, 'ed')}-DELETE"] = "on"
    assert as_owner.post(_page_url(project), data).status_code == 302
    assert "ed" not in _roles(project)
    log = list(
        LogEntry.objects.filter(user=owner, change_message__startswith="Role of ed")
        .order_by("pk")
        .values_list("change_message", flat=True)
    )
    assert log == ["Role of ed: Editor → Analyst", "Role of ed: Analyst → no role"]


def test_an_owner_cannot_grant_owner_or_touch_owners_or_themselves(as_owner, shop):
    project, _owner = shop
    before = _roles(project)
    # A forged new Owner.
    data = _add_row(_form(as_owner, project), "newbie", "owner")
    response = as_owner.post(_page_url(project), data)
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    # Their own role and another Owner's (disabled fields ignore what is posted).
    data = _form(as_owner, project)
    data[f"{_row(data, 'olga')}-role"] = "support"
    data[f"{_row(data, 'otto')}-role"] = "support"
    assert as_owner.post(_page_url(project), data).status_code == 302
    assert _roles(project) == before
    # Removing themselves or another Owner.
    for name in ("olga", "otto"):
        data = _form(as_owner, project)
        data[f"{_row(data, name)}-DELETE"] = "on"
        response = as_owner.post(_page_url(project), data)
        assert response.status_code == 200
        assert "only a superuser removes an Owner" in response.content.decode()
    assert _roles(project) == before


def test_an_unknown_or_duplicate_account_gets_a_clear_message(as_owner, shop):
    project, _ = shop
    data = _add_row(_form(as_owner, project), "ghost", "editor")
    page = as_owner.post(_page_url(project), data).content.decode()
    assert "There is no active staff account called “ghost”" in page
    data = _add_row(_form(as_owner, project), "ed", "support")
    page = as_owner.post(_page_url(project), data).content.decode()
    assert "“ed” is already a member" in page


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(max_size=300)
    | st.sampled_from(["\x00", "newbie\x00", "ne wbie", "NEWBIE", "olga", "a" * 10_000]),
    role=st.sampled_from(["owner", "editor", "", "root", "\x00", "support" * 50]),
)
def test_hostile_account_names_and_roles_get_a_clear_error(as_owner, shop, name, role):
    """Absurd input in the members section: a message on the page, nothing saved."""
    assume(not (name.strip() == "newbie" and role in {"editor", "support", "analyst"}))
    project, _ = shop
    before = _roles(project)
    response = as_owner.post(_page_url(project), _add_row(_form(as_owner, project), name, role))
    if response.status_code == 302:  # only a row left blank is ignored and saves
        assert not name and not role
    else:
        assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert _roles(project) == before


def test_owners_do_not_see_the_list_of_all_accounts(as_owner, shop):
    project_create(name="Elsewhere")
    operator_create("stranger", project_create(name="Other shop"))
    page = as_owner.get(_page_url(shop[0])).content.decode()
    assert "stranger" not in page and "Other shop" not in page


def test_only_superusers_create_projects_or_switch_off_the_http_guard(client, as_owner, shop):
    project, _ = shop
    assert as_owner.get(reverse("admin:botplatform_project_add")).status_code == 403
    assert "Add project" not in as_owner.get(reverse("admin:index")).content.decode()
    data = _form(as_owner, project)
    assert "allow_private_http" not in data  # shown read-only
    data["allow_private_http"] = "on"  # forged
    assert as_owner.post(_page_url(project), data).status_code == 302
    project.refresh_from_db()
    assert project.allow_private_http is False
    # Raising the shared flood guard is refused; lowering it is fine.
    data = _form(as_owner, project)
    data["user_rate_limit_per_minute"] = "1000"
    page = as_owner.post(_page_url(project), data).content.decode()
    assert "Only an administrator can raise this limit above 100" in page
    data["user_rate_limit_per_minute"] = "60"
    assert as_owner.post(_page_url(project), data).status_code == 302
    project.refresh_from_db()
    assert project.user_rate_limit_per_minute == 60

    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    data = _form(client, project)
    data["allow_private_http"] = "on"
    data["user_rate_limit_per_minute"] = "1000"
    assert client.post(_page_url(project), data).status_code == 302
    project.refresh_from_db()
    assert project.allow_private_http is True and project.user_rate_limit_per_minute == 1000


def test_a_superuser_grants_the_owner_role(client, shop):
    project, _ = shop
    client.force_login(User.objects.create_superuser("root", "r@example.com", "pw"))
    data = _add_row(_form(client, project), "newbie", "owner")
    assert client.post(_page_url(project), data).status_code == 302
    assert _roles(project)["newbie"] == "owner"


def test_nobody_makes_themselves_superuser_through_the_accounts_admin(as_owner, shop):
    _, owner = shop
    # Even with every permission given by hand, the accounts admin is superusers' only.
    owner.user_permissions.set(Permission.objects.all())
    url = reverse("admin:auth_user_change", args=[owner.pk])
    assert as_owner.get(url).status_code == 403
    response = as_owner.post(url, {"username": "olga", "is_superuser": "on", "is_staff": "on"})
    assert response.status_code == 403
    owner.refresh_from_db()
    assert not owner.is_superuser
    assert as_owner.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_permissions_given_by_hand_grant_nothing(client, db):
    project = project_create()
    workflow = workflow_create(project=project)
    hand_picked = User.objects.create_user("picked", password="pw", is_staff=True)
    hand_picked.user_permissions.set(Permission.objects.all())
    client.force_login(hand_picked)
    assert client.get(reverse("admin:workflows_workflow_changelist")).status_code == 403
    url = reverse("admin:workflows_workflow_change", args=[workflow.pk])
    assert client.get(url).status_code in {302, 403, 404}
    # With an Analyst membership the same account may only read.
    Membership.objects.create(project=project, user=hand_picked, role="analyst")
    response = client.get(url)
    assert response.status_code == 200 and not response.context_data["has_change_permission"]


def test_a_role_with_no_django_permission_does_its_work(client, db):
    """An Editor creates a workflow and a Support member adjusts a balance."""
    project = project_create()
    editor = operator_create("ed", project, role="editor")
    assert not editor.user_permissions.exists() and not editor.groups.exists()
    client.force_login(editor)
    response = client.post(
        reverse("admin:workflows_workflow_add"),
        {
            "project": project.pk,
            "name": "Menu",
            "slug": "menu",
            "description": "",
            "triggers": "[]",
            "draft": '{"start": "a", "steps": {"a": {"type": "end"}}}',
            "is_active": "on",
            "priority": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Workflow.objects.filter(project=project, slug="menu").exists()

    user = bot_user_create(project=project)
    client.force_login(operator_create("sue", project, role="support"))
    response = client.post(
        reverse("admin:users_botuser_adjust_balance", args=[user.pk]),
        {"amount": "25", "reason": "Lost card", "request_token": "b" * 32},
    )
    assert response.status_code == 302
    assert BonusTransaction.objects.get(user=user).reason == "Lost card"


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("owner", True), ("editor", True), ("analyst", False), ("support", False)],
)
def test_writes_behind_custom_pages_follow_the_role(client, db, role, allowed):
    """Publishing, restoring, sending and simulating need the role, not just a view."""
    project = project_create()
    bot_create(project=project)
    workflow = workflow_create(project=project)
    broadcast = Broadcast.objects.create(project=project, title="News", text="Hi")
    bot_user_create(project=project)  # one recipient, so the send can be confirmed
    client.force_login(operator_create("member", project, role=role))
    denied = {403, 404}
    first_version = workflow.published_version_id
    posts = [
        (
            reverse("admin:workflows_workflow_publish", args=[workflow.pk]),
            {"note": "Autumn menu", "checksum": draft_checksum(workflow)},
        ),
        (
            reverse("admin:workflows_workflow_restore", args=[workflow.pk, first_version]),
            {"confirm": "1"},
        ),
        (reverse("admin:workflows_simulator", args=[project.pk]), {"text": "/start"}),
        (reverse("admin:workflows_broadcast_send", args=[broadcast.pk]), {"confirm": "1"}),
    ]
    for url, data in posts:
        status = client.post(url, data).status_code
        assert (status not in denied) is allowed, (role, url, status)
    broadcast.refresh_from_db()
    assert (broadcast.status != Broadcast.Status.DRAFT) is allowed
    assert workflow.versions.filter(note="Autumn menu").exists() is allowed
    history = LogEntry.objects.filter(object_id=str(workflow.pk)).values_list(
        "change_message", flat=True
    )
    assert any("Copied version 1" in message for message in history) is allowed


def _broadcast_fields(project) -> dict:
    return {
        "project": project.pk,
        "bot": project.bots.first().pk,
        "title": "News",
        "text": "Hi",
        "segment": "all",
        "buttons_text": "",
    }


def test_an_action_runs_only_in_projects_where_the_role_allows_it(client, db):
    """Editor in A, Analyst in B: both workflows are listed, only A's goes to review."""
    a, b = project_create(name="A"), project_create(name="B")
    mine = workflow_create(project=a, name="Mine")
    read_only = workflow_create(project=b, name="Read only")
    user = operator_create("mixed", a, role="editor")
    Membership.objects.create(project=b, user=user, role="analyst")
    client.force_login(user)
    page = client.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    assert "Mine" in page and "Read only" in page
    changelist = reverse("admin:workflows_workflow_changelist")
    response = client.post(
        changelist, {"action": "publish_drafts", "_selected_action": [mine.pk, read_only.pk]}
    )
    # Only A's workflow is taken: the action opens its review page (one at a time).
    assert response.status_code == 302
    assert response.url == reverse("admin:workflows_workflow_publish", args=[mine.pk])
    response = client.post(
        changelist, {"action": "publish_drafts", "_selected_action": [read_only.pk]}
    )
    assert response.url != reverse("admin:workflows_workflow_publish", args=[read_only.pk])
    assert client.get(
        reverse("admin:workflows_workflow_publish", args=[read_only.pk])
    ).status_code in {403, 404}
    assert mine.versions.count() == 1 and read_only.versions.count() == 1
    # The add form offers only the project where the role may add workflows.
    page = client.get(reverse("admin:workflows_workflow_add")).content.decode()
    assert f'<option value="{a.pk}"' in page and f'<option value="{b.pk}"' not in page


def test_only_owners_see_bot_secrets(client, db):
    project = project_create()
    bot = bot_create(project=project)
    tail = bot.token[-4:]
    for role, visible in (("owner", True), ("editor", False), ("analyst", False)):
        client.force_login(operator_create(f"{role}_x", project, role=role))
        for url in (
            reverse("admin:botplatform_bot_changelist"),
            reverse("admin:botplatform_bot_change", args=[bot.pk]),
        ):
            page = client.get(url).content.decode()
            assert bot.username in page
            assert (tail in page) is visible, (role, url)
            assert ("webhook secret" in page.lower()) is (visible and "change" in url), (role, url)
