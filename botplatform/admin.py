from __future__ import annotations

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.forms.fields import InvalidJSONInput
from django.urls import reverse
from django.utils import timezone

from botplatform import roles
from botplatform.accounts import membership_changes_log, membership_roles_get
from botplatform.admin_members import MembershipInline
from botplatform.admin_scoping import ProjectScopedAdmin, project_or_404
from botplatform.jsoncheck import json_text_problem
from botplatform.models import (
    BOT_TOKEN_VALIDATOR,
    Bot,
    DeferredSend,
    Membership,
    Project,
    TelegramUpdate,
)

admin.site.site_header = "Bot platform"
admin.site.site_title = "Bot platform"
admin.site.index_title = "Your projects, bots and workflows"


class BoundedJSONField(forms.JSONField):
    """A JSON field that refuses oversized or absurdly nested input with a form error.

    Both doors are guarded: cleaning (``to_python``) and redisplaying the typed text
    after an error (``bound_data``), which decodes it again.
    """

    def to_python(self, value):
        if isinstance(value, str) and (problem := json_text_problem(value)):
            raise forms.ValidationError(problem, code="invalid")
        return super().to_python(value)

    def bound_data(self, data, initial):
        if isinstance(data, str) and json_text_problem(data):
            return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class JSONWhereField(BoundedJSONField):
    """Says where the JSON breaks: "Enter a valid JSON." alone leaves the operator searching."""

    def to_python(self, value):
        try:
            return super().to_python(value)
        except forms.ValidationError:
            if not isinstance(value, str) or json_text_problem(value):
                raise  # the size or depth message already says what is wrong
            try:
                json.loads(value, cls=self.decoder)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(
                    "This is not valid JSON: %(problem)s at line %(line)s, column %(column)s. "
                    "Check the brackets, quotes and commas there.",
                    code="invalid",
                    params={"problem": exc.msg, "line": exc.lineno, "column": exc.colno},
                ) from None
            raise


class ProjectForm(forms.ModelForm):
    """Levels are checked here: the loyalty code silently skips malformed entries.

    ``actor`` (set per request by the admin) is who saves: only a superuser weakens a
    guard (see ``SUPERUSER_ONLY_FIELDS`` and the rate-limit check below).
    """

    actor = None

    class Meta:
        model = Project
        fields = (
            "name",
            "slug",
            "is_active",
            "languages",
            "default_language",
            "fallback_message",
            "rate_limited_message",
            "stale_button_message",
            "user_rate_limit_per_minute",
            "bot_send_rate_per_second",
            "welcome_bonus",
            "referral_reward",
            "bonus_expiry_days",
            "max_bonus_share_percent",
            "levels",
            "hold_approval_required",
            "hold_minutes",
            "allow_private_http",
        )
        field_classes = {"levels": JSONWhereField}

    def clean_user_rate_limit_per_minute(self) -> int:
        """The flood guard shares the workers of every project: only a superuser raises it."""
        value = self.cleaned_data["user_rate_limit_per_minute"]
        ceiling = self.instance.user_rate_limit_per_minute  # the model default when new
        if self.actor is not None and not self.actor.is_superuser and value > ceiling:
            raise forms.ValidationError(
                f"Only an administrator can raise this limit above {ceiling}; you can lower it."
            )
        return value

    def clean_levels(self):
        levels = self.cleaned_data.get("levels")
        if levels in (None, ""):
            return []
        example = (
            'e.g. [{"name": "Silver", "threshold": 1000}, {"name": "Gold", "threshold": 5000}]'
        )
        if not isinstance(levels, list):
            raise forms.ValidationError(
                f"Write the levels as a list in square brackets, {example}."
            )
        names = set()
        for number, level in enumerate(levels, start=1):
            if not isinstance(level, dict):
                raise forms.ValidationError(
                    f'Level {number} must be {{"name": …, "threshold": …}}, {example}.'
                )
            name, threshold = level.get("name"), level.get("threshold")
            if not isinstance(name, str) or not name.strip():
                raise forms.ValidationError(f'Level {number} needs a "name", {example}.')
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise forms.ValidationError(
                    f'Level “{name}” needs a "threshold": the lifetime bonuses at which it '
                    "starts, a number such as 1000."
                )
            if threshold < 0:
                raise forms.ValidationError(f"The threshold of level “{name}” cannot be negative.")
            if name in names:
                raise forms.ValidationError(f"Two levels are called “{name}”; rename one.")
            names.add(name)
        return levels


# Fields that switch a safety guard off: shown read-only to everyone but superusers.
SUPERUSER_ONLY_FIELDS = ("allow_private_http",)


@admin.register(Project)
class ProjectAdmin(ProjectScopedAdmin):
    """Only superusers create or delete projects; owners manage settings and members."""

    project_path = "pk"
    form = ProjectForm
    inlines = (MembershipInline,)
    list_display = (
        "name",
        "slug",
        "bot_count",
        "user_count",
        "is_active",
        "created_at",
        "dashboard_link",
    )
    list_filter = ("is_active",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "slug", "is_active")}),
        (
            "Languages",
            {
                "fields": ("languages", "default_language"),
                "description": (
                    "Step texts may have a version per language; users get theirs, "
                    "else the default."
                ),
            },
        ),
        (
            "Texts the bot sends on its own",
            {
                "fields": ("fallback_message", "rate_limited_message", "stale_button_message"),
                "description": "What users see when something goes wrong or they are too fast.",
            },
        ),
        ("Rate limits", {"fields": ("user_rate_limit_per_minute", "bot_send_rate_per_second")}),
        (
            "Bonuses and referrals",
            {
                "fields": (
                    "welcome_bonus",
                    "referral_reward",
                    "bonus_expiry_days",
                    "max_bonus_share_percent",
                    "levels",
                )
            },
        ),
        (
            "Redemptions at a till (the POS/CRM API)",
            {
                "fields": ("hold_approval_required", "hold_minutes"),
                "description": "Bonuses a till wants to spend are held first, then confirmed.",
            },
        ),
        ("HTTP requests", {"fields": ("allow_private_http",)}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_bots=Count("bots", distinct=True), _users=Count("users", distinct=True))
        )

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def get_readonly_fields(self, request, obj=None):
        """Guard switches are read-only for non-superusers: a forged POST cannot change them
        either, since read-only fields are not part of the form."""
        fields = super().get_readonly_fields(request, obj)
        return fields if request.user.is_superuser else (*fields, *SUPERUSER_ONLY_FIELDS)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"actor": request.user})

    def save_formset(self, request, form, formset, change) -> None:
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        before = membership_roles_get(project=form.instance)
        super().save_formset(request, form, formset, change)
        membership_changes_log(
            actor=request.user,
            project=form.instance,
            before=before,
            after=membership_roles_get(project=form.instance),
        )

    # --- Performance: the project dashboard ---
    def get_urls(self):
        from django.urls import path

        from botplatform.dashboard import project_dashboard_view

        def view(request, project_id: int):
            project = project_or_404(request, project_id)
            if not roles.may(request.user, roles.DASHBOARD, project_id=project.pk):
                raise PermissionDenied
            return project_dashboard_view(request, project_id, self.admin_site)

        from analytics.views import project_urls

        return [
            path(
                "<int:project_id>/dashboard/",
                self.admin_site.admin_view(view),
                name="botplatform_project_dashboard",
            ),
            *project_urls(self),  # the programme dashboard, funnels, broadcast results
            *super().get_urls(),
        ]

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Project) -> str:
        from django.urls import reverse
        from django.utils.html import format_html

        url = reverse("admin:botplatform_project_dashboard", args=[obj.pk])
        programme = reverse("admin:botplatform_project_programme", args=[obj.pk])
        return format_html('<a href="{}">Programme</a> · <a href="{}">Live</a>', programme, url)

    @admin.display(description="bots", ordering="_bots")
    def bot_count(self, obj: Project) -> int:
        return obj._bots

    @admin.display(description="users", ordering="_users")
    def user_count(self, obj: Project) -> int:
        return obj._users


class BotForm(forms.ModelForm):
    """The token is write-only: typed once, checked with Telegram, never rendered back."""

    new_token = forms.CharField(
        label="Bot token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        validators=[BOT_TOKEN_VALIDATOR],
        help_text="Paste the token from @BotFather. Leave empty to keep the current token.",
    )

    class Meta:
        model = Bot
        fields = ("project", "username", "mode", "is_active")
        help_texts = {
            "username": "Filled in from Telegram when the bot is connected (without the @).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_replaced = False
        self.telegram_username = ""  # what getMe answered for a new token
        if not self.instance.token:
            # A new bot has no current token to keep.
            self.fields["new_token"].help_text = (
                "Paste the token from @BotFather, e.g. 123456789:AAH... (digits, a colon, "
                "then about 35 characters). Telegram is asked who the bot is."
            )

    def clean_username(self) -> str:
        """Operators paste "@shop_bot" as Telegram shows it; store it without the @."""
        return self.cleaned_data.get("username", "").strip().lstrip("@")

    def clean(self):
        from botplatform.bots import TokenRefused, bot_identity_fetch

        cleaned = super().clean()
        token = cleaned.get("new_token")
        if "new_token" in self.errors:
            pass  # the field already says what is wrong with the typed token
        elif not token and not self.instance.token:
            self.add_error("new_token", "A new bot needs its token.")
        elif token and Bot.objects.exclude(pk=self.instance.pk).filter(token=token).exists():
            self.add_error("new_token", "This bot is already connected to a project.")
        elif token and token != self.instance.token:
            try:
                identity = bot_identity_fetch(token=token)
            except TokenRefused as exc:
                self.add_error("new_token", str(exc))
            else:
                cleaned["username"] = self.telegram_username = identity.username
        return cleaned

    def save(self, commit: bool = True) -> Bot:
        token = self.cleaned_data.get("new_token")
        if token and token != self.instance.token:
            self.token_replaced = self.instance.pk is not None
            self.instance.token = token
            self.instance.username = self.telegram_username or self.instance.username
            # A new token gets a fresh chance: the runner picks the bot up again.
            self.instance.status = Bot.Status.NEW
            self.instance.status_message = ""
            self.instance.status_changed_at = timezone.now()
        return super().save(commit=commit)


def _telegram_failure(bot: Bot, refused: str, exc) -> str:
    """A network failure is not a refusal: say which one it was and what to check."""
    if exc.error.kind == "network":
        return (
            f"{bot}: could not reach Telegram, so nothing changed. Check this server's "
            f"internet access (or TELEGRAM_API_URL) and try again. ({exc.error.description})"
        )
    return f"{bot}: Telegram {refused} ({exc})."


# Write-only: no admin URL may filter on these (a range or prefix lookup answers "is
# the secret below X?", which recovers it in a few hundred requests). They are not in
# search_fields or list_display either, so nothing searches or orders by them.
BOT_SECRET_FIELDS = frozenset({"token", "token_hash", "webhook_secret"})


@admin.register(Bot)
class BotAdmin(ProjectScopedAdmin):
    form = BotForm
    list_display = ("__str__", "project", "token_masked", "mode", "status", "is_active")
    list_filter = ("mode", "status", "is_active", "project")
    search_fields = ("username",)
    readonly_fields = (
        "token_masked",
        "webhook_secret_masked",
        "delivery_now",
        "last_update_at",
        "last_error",
        "status",
        "status_message",
        "status_changed_at",
        "created_at",
    )
    fieldsets = (
        (None, {"fields": ("project", "username", "new_token", "token_masked", "is_active")}),
        ("Delivery", {"fields": ("mode", "webhook_secret_masked")}),
        (
            "Live state",
            {"fields": ("delivery_now", "last_update_at", "last_error", "status")},
        ),
        ("Status history", {"fields": ("status_message", "status_changed_at", "created_at")}),
    )

    actions = ("webhook_set_action", "webhook_delete_action", "webhook_secret_rotate_action")
    secret_fields = ("new_token", "token_masked", "webhook_secret_masked")

    def get_fieldsets(self, request, obj=None):
        """A bot being added has no current token, secret or status to show yet."""
        if obj is not None:
            return super().get_fieldsets(request, obj)  # without secrets for non-owners
        return (
            (None, {"fields": ("project", "new_token", "is_active")}),
            ("Delivery", {"fields": ("mode",)}),
        )

    # --- Secrets are write-only ---
    def lookup_allowed(self, lookup, value, request=None) -> bool:
        """No filter on a secret, not even through a relation (answers 400)."""
        if BOT_SECRET_FIELDS & set(lookup.split("__")):
            return False
        return super().lookup_allowed(lookup, value, request)

    def save_model(self, request, obj, form, change) -> None:
        from botplatform.bots import bot_token_replaced_log

        super().save_model(request, obj, form, change)
        if change and getattr(form, "token_replaced", False):
            bot_token_replaced_log(user=request.user, bot=obj)

    @admin.display(description="current token")
    def token_masked(self, obj: Bot) -> str:
        return obj.token_masked

    # --- Live state ---
    @staticmethod
    def _live(obj: Bot):
        from botplatform.bots import bot_live_state

        if not hasattr(obj, "_live_state"):
            obj._live_state = bot_live_state(bot=obj)  # once per page, not per field
        return obj._live_state

    @admin.display(description="receiving updates")
    def delivery_now(self, obj: Bot) -> str:
        return self._live(obj).delivery

    @admin.display(description="last update received")
    def last_update_at(self, obj: Bot):
        return self._live(obj).last_update_at or "None yet"

    @admin.display(description="last error")
    def last_error(self, obj: Bot) -> str:
        return self._live(obj).last_error or "—"

    # --- Webhook ---
    def _webhook_base_url(self, request) -> str:
        return settings.TELEGRAM_WEBHOOK_BASE_URL or request.build_absolute_uri("/")

    @admin.action(description="Set the webhook (Telegram calls this server)")
    def webhook_set_action(self, request, queryset) -> None:
        from botplatform.telegram.sender import TelegramCallError
        from botplatform.telegram.webhooks import webhook_set

        base_url = self._webhook_base_url(request)
        for bot in queryset:
            try:
                url = webhook_set(bot=bot, base_url=base_url)
            except TelegramCallError as exc:
                self.message_user(
                    request, _telegram_failure(bot, "refused the webhook", exc), messages.ERROR
                )
            else:
                self.message_user(request, f"{bot}: webhook set to {url}.", messages.SUCCESS)

    @admin.action(description="Delete the webhook (back to long polling)")
    def webhook_delete_action(self, request, queryset) -> None:
        from botplatform.telegram.sender import TelegramCallError
        from botplatform.telegram.webhooks import webhook_delete

        for bot in queryset:
            try:
                webhook_delete(bot=bot)
            except TelegramCallError as exc:
                self.message_user(
                    request,
                    _telegram_failure(bot, "refused to delete the webhook", exc),
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    f"{bot}: webhook deleted; run manage.py runbot to poll it.",
                    messages.SUCCESS,
                )

    def has_see_secrets_permission(self, request) -> bool:
        """For the rotation action: only a role that may see secrets (Owner) rotates them."""
        return self.role_permits(request, roles.SEE_SECRETS, named=True)

    # Worded without "webhook secret": the list page names no secret to other roles.
    @admin.action(
        description="Rotate the secret Telegram sends with webhooks", permissions=["see_secrets"]
    )
    def webhook_secret_rotate_action(self, request, queryset) -> None:
        for bot in queryset:
            self._webhook_secret_rotate(request, bot)

    def _webhook_secret_rotate(self, request, bot: Bot) -> None:
        from botplatform.bots import webhook_secret_rotate
        from botplatform.telegram.sender import TelegramCallError

        try:
            webhook_secret_rotate(
                bot_id=bot.pk, user=request.user, base_url=self._webhook_base_url(request)
            )
        except TelegramCallError as exc:
            self.message_user(
                request,
                _telegram_failure(bot, "refused the new secret; the old one stays", exc),
                messages.ERROR,
            )
        else:
            again = " and registered it with Telegram" if bot.mode == Bot.Mode.WEBHOOK else ""
            self.message_user(request, f"{bot}: new webhook secret set{again}.", messages.SUCCESS)

    def get_urls(self):
        from django.urls import path

        return [
            path(
                "<int:object_id>/rotate-webhook-secret/",
                self.admin_site.admin_view(self.webhook_secret_rotate_view),
                name="botplatform_bot_rotate_webhook_secret",
            ),
            *super().get_urls(),
        ]

    def webhook_secret_rotate_view(self, request, object_id: int):
        """POST from the button on the bot's page rotates; back to that page either way."""
        from django.http import Http404, HttpResponseRedirect
        from django.urls import reverse

        bot = self.get_object(request, str(object_id))
        if bot is None:
            raise Http404("No such bot.")
        if not self._secrets_visible(request, bot):
            raise PermissionDenied
        if request.method == "POST":  # a link or a prefetch never rotates
            if "_rotate_webhook_secret" in request.POST and self._bot_form_changed(request, bot):
                # The button sits in the bot's form: unsaved edits are saved first, and
                # a form with errors comes back with them, the edits kept, not rotated.
                response = self._bot_form_save(request, object_id)
                if not isinstance(response, HttpResponseRedirect):
                    return response
                bot.refresh_from_db()
            self._webhook_secret_rotate(request, bot)
        return HttpResponseRedirect(reverse("admin:botplatform_bot_change", args=[bot.pk]))

    def _bot_form_changed(self, request, bot: Bot) -> bool:
        form_class = self.get_form(request, bot, change=True)
        return form_class(request.POST, request.FILES, instance=bot).has_changed()

    def _bot_form_save(self, request, object_id: int):
        post = request.POST.copy()
        post["_continue"] = "1"
        post.pop("_rotate_webhook_secret", None)
        request.POST = post
        # Shown again with errors, the form must still post to the bot's own page.
        change_url = reverse("admin:botplatform_bot_change", args=[object_id])
        return self.change_view(request, str(object_id), form_url=change_url)

    @admin.display(description="webhook secret")
    def webhook_secret_masked(self, obj: Bot) -> str:
        from django.urls import reverse
        from django.utils.html import format_html

        if obj.pk is None:
            return ""
        url = reverse("admin:botplatform_bot_rotate_webhook_secret", args=[obj.pk])
        return format_html(
            '{} <button type="submit" class="button" formaction="{}" formnovalidate '
            'name="_rotate_webhook_secret">Rotate secret</button>',
            obj.webhook_secret_masked,
            url,
        )


# --- Telegram --------------------------------------------------------------------


@admin.register(TelegramUpdate)
class TelegramUpdateAdmin(ProjectScopedAdmin):
    """Read-only journal of received updates: what came in and what became of it.

    Status "Quarantined" (filter on the right) lists the updates the runner stopped
    and will never run again; the note says why (docs/reliability.md).
    """

    project_path = "bot__project"
    list_display = ("update_id", "bot", "chat_id", "status", "note", "received_at", "done_at")
    list_filter = ("status", "bot")
    search_fields = ("=update_id", "=chat_id")
    list_select_related = ("bot",)
    readonly_fields = (
        "bot",
        "update_id",
        "chat_id",
        "payload",
        "status",
        "actions",
        "sent_count",
        "attempts",
        "stalls",
        "claimed_at",
        "note",
        "received_at",
        "handled_at",
        "done_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DeferredSend)
class DeferredSendAdmin(ProjectScopedAdmin):
    """Replies waiting for Telegram to accept them again (after a long 429 or 5xx)."""

    project_path = "bot__project"
    list_display = ("bot", "chat_id", "due_at", "attempts", "created_at")
    list_filter = ("bot",)
    search_fields = ("=chat_id",)
    list_select_related = ("bot",)
    readonly_fields = ("bot", "chat_id", "actions", "due_at", "attempts", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


# Registered here so the admin site sees them (imported last: they use the classes above).
from botplatform import admin_accounts, admin_media  # noqa: E402, F401
