"""Who may do what in a project: the one place that decides it.

A non-superuser staff account gets access only through a membership (project, role).
``GRANTS`` says, per role, which model actions (view, add, change, delete) and which
named actions (publish, adjust balance, ...) it allows in that project; everything
else is refused. Django's own permissions are not consulted for non-superusers:
:class:`RoleBackend` answers ``has_perm`` from the memberships, so nobody picks raw
permissions by hand, and a permission given by hand widens nothing. Superusers may do
everything. The admin (``botplatform.admin_scoping``) asks :func:`may` and
:func:`project_ids` for every list, page, action and custom view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.auth.backends import ModelBackend
from django.db import models

from botplatform.models import Membership, Project

Role = Membership.Role

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"
MODEL_ACTIONS = (VIEW, ADD, CHANGE, DELETE)

# Named actions: things a page or button does beyond the four model actions.
MANAGE_MEMBERS = "manage_members"  # add, remove and re-role members (never Owner)
SEE_SECRETS = "see_secrets"  # bot tokens and webhook secrets, even masked
PUBLISH = "publish"  # make a workflow's draft live
RESTORE = "restore"  # bring an old version back
SEND_BROADCAST = "send_broadcast"  # send, schedule or cancel a broadcast
SIMULATE = "simulate"  # talk to the project's workflows as a test user
ADJUST_BALANCE = "adjust_balance"  # add or take bonuses, with a reason
ROTATE_CARD = "rotate_card"  # give a customer a new card code (a lost or copied card)
IMPORT = "import"  # import a workflow file
EXPORT = "export"  # download a workflow as a file
DASHBOARD = "dashboard"  # the project's charts
REPLAY_WEBHOOK = "replay_webhook"  # send an outgoing webhook delivery again

# The project-scoped models of the admin, by label.
PROJECT = "botplatform.project"
BOT = "botplatform.bot"
TELEGRAM_UPDATE = "botplatform.telegramupdate"
DEFERRED_SEND = "botplatform.deferredsend"
BOT_USER = "users.botuser"
USER_VARIABLE = "users.uservariable"
LEDGER = "users.bonustransaction"
LEVEL_CHANGE = "users.levelchange"  # the level history (read-only for everyone)
WORKFLOW = "workflows.workflow"
VERSION = "workflows.workflowversion"
EXECUTION = "workflows.workflowexecution"
STEP_LOG = "workflows.executionsteplog"
BROADCAST = "workflows.broadcast"
DELIVERY = "workflows.broadcastdelivery"
# The POS/CRM API (issue 16).
API_KEY = "users.apikey"  # owners only: keys are credentials
EARN_RULE = "users.earnrule"
CASHIER = "users.cashier"
PURCHASE = "users.purchase"
HOLD = "users.hold"
WEBHOOK_ENDPOINT = "users.webhookendpoint"  # owners only: carries the signing secret
WEBHOOK_DELIVERY = "users.webhookdelivery"
MEDIA_FILE = "botplatform.mediafile"
PAYMENT = "users.payment"

# Apps whose models are project data: only the roles grant anything in them.
PROJECT_APPS = ("botplatform", "users", "workflows")

R = frozenset({VIEW})
RC = frozenset({VIEW, CHANGE})
RACD = frozenset(MODEL_ACTIONS)


@dataclass(frozen=True)
class Grants:
    """What one role may do inside a project of which it is a member."""

    models: dict[str, frozenset[str]]
    named: frozenset[str] = field(default_factory=frozenset)
    # Owner: models nobody listed yet (a new admin page) are theirs in full.
    unlisted_models: frozenset[str] = frozenset()


_READ_ALL = {
    label: R
    for label in (
        PROJECT,
        BOT,
        TELEGRAM_UPDATE,
        DEFERRED_SEND,
        BOT_USER,
        USER_VARIABLE,
        LEDGER,
        LEVEL_CHANGE,
        WORKFLOW,
        VERSION,
        EXECUTION,
        STEP_LOG,
        BROADCAST,
        DELIVERY,
        EARN_RULE,
        CASHIER,
        PURCHASE,
        HOLD,
        WEBHOOK_DELIVERY,
        MEDIA_FILE,
        PAYMENT,
    )
}

GRANTS: dict[str, Grants] = {
    Role.OWNER: Grants(
        models={
            **_READ_ALL,
            PROJECT: RC,  # only superusers create or delete projects
            BOT: RACD,
            TELEGRAM_UPDATE: RACD,
            DEFERRED_SEND: RACD,
            BOT_USER: RACD,
            USER_VARIABLE: RACD,
            WORKFLOW: RACD,
            EXECUTION: RC,  # cancel and retry conversations
            BROADCAST: RACD,
            API_KEY: RACD,
            EARN_RULE: RACD,
            CASHIER: RACD,
            WEBHOOK_ENDPOINT: RACD,
            MEDIA_FILE: RACD,
            PAYMENT: RC,  # change = refund (payments themselves are read-only)
        },
        named=frozenset(
            {
                REPLAY_WEBHOOK,
                MANAGE_MEMBERS,
                ROTATE_CARD,
                SEE_SECRETS,
                PUBLISH,
                RESTORE,
                SEND_BROADCAST,
                SIMULATE,
                ADJUST_BALANCE,
                IMPORT,
                EXPORT,
                DASHBOARD,
            }
        ),
        unlisted_models=frozenset(MODEL_ACTIONS),
    ),
    Role.EDITOR: Grants(
        models={
            **_READ_ALL,
            WORKFLOW: RACD,
            EXECUTION: RC,
            BROADCAST: RACD,
            MEDIA_FILE: RACD,  # the photos and files their workflows send
        },
        named=frozenset({PUBLISH, RESTORE, SEND_BROADCAST, SIMULATE, IMPORT, EXPORT, DASHBOARD}),
    ),
    Role.ANALYST: Grants(models=_READ_ALL, named=frozenset({EXPORT, DASHBOARD})),
    Role.SUPPORT: Grants(
        models={
            PROJECT: R,
            BOT_USER: RC,
            USER_VARIABLE: RACD,
            LEDGER: R,
            LEVEL_CHANGE: R,
            EXECUTION: R,
            STEP_LOG: R,
            PURCHASE: R,
            HOLD: R,
            PAYMENT: R,  # "did my payment go through?"
        },
        named=frozenset({ADJUST_BALANCE, ROTATE_CARD}),
    ),
}


def label_of(model: type[models.Model] | str) -> str:
    return model if isinstance(model, str) else model._meta.label_lower


def role_allows(role: str, action: str, model: type[models.Model] | str | None = None) -> bool:
    """Whether ``role`` may do ``action`` (a model action on ``model``, or a named one)."""
    grants = GRANTS.get(role)
    if grants is None:
        return False
    if model is None:
        return action in grants.named
    label = label_of(model)
    if label in grants.models:
        return action in grants.models[label]
    return action in grants.unlisted_models and label != "botplatform.membership"


def _active_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def user_roles(user) -> dict[int, str]:
    """{project id: role} of a staff account, read once per request (cached on ``user``)."""
    if not _active_staff(user):
        return {}
    cached = getattr(user, "_project_roles", None)
    if cached is None:
        cached = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
        user._project_roles = cached
    return cached


def project_ids(user, action: str, model: type[models.Model] | str | None = None) -> list[int]:
    """The projects of ``user`` where ``action`` is allowed (superusers: call ``may``)."""
    return [pk for pk, role in user_roles(user).items() if role_allows(role, action, model)]


def may(
    user,
    action: str,
    model: type[models.Model] | str | None = None,
    *,
    project_id: int | None = None,
    any_project: bool = False,
) -> bool:
    """Whether ``user`` may do ``action`` in project ``project_id``.

    ``any_project=True`` asks "in at least one of their projects" (to decide whether a
    list, a menu entry or an add button is shown at all).
    """
    if user is None or not user.is_active:
        return False
    if user.is_superuser:
        return True
    if any_project:
        return bool(project_ids(user, action, model))
    role = user_roles(user).get(project_id) if project_id is not None else None
    return role is not None and role_allows(role, action, model)


def projects_for(user, action: str | None = None, model=None) -> models.QuerySet[Project]:
    """Projects where ``user`` may do ``action`` (any membership when ``action`` is None)."""
    if user.is_superuser and user.is_active:
        return Project.objects.all()
    if action is None:
        return Project.objects.filter(pk__in=list(user_roles(user)))
    return Project.objects.filter(pk__in=project_ids(user, action, model))


class RoleBackend(ModelBackend):
    """Django permissions derived from the roles: ``user.has_perm("workflows.add_workflow")``
    is true when some membership's role allows adding workflows.

    Stock admin code (the index, inlines, related-object checks, autocomplete) asks
    ``has_perm`` without an object; the scoped admin narrows to the object's project.
    Permissions and groups given by hand are ignored for non-superusers.
    """

    def get_user_permissions(self, user_obj, obj=None) -> set[str]:
        if user_obj.is_superuser:
            return super().get_user_permissions(user_obj, obj)
        if obj is not None or not _active_staff(user_obj):
            return set()
        roles = set(user_roles(user_obj).values())
        granted = set()
        for model in apps.get_models():
            meta = model._meta
            if meta.app_label not in PROJECT_APPS:
                continue
            for action in MODEL_ACTIONS:
                if any(role_allows(role, action, model) for role in roles):
                    granted.add(f"{meta.app_label}.{action}_{meta.model_name}")
        return granted

    def get_group_permissions(self, user_obj, obj=None) -> set[str]:
        if user_obj.is_superuser:
            return super().get_group_permissions(user_obj, obj)
        return set()
