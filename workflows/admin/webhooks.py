"""Outgoing webhooks: endpoints (owners; HTTPS, passing the HTTP step's SSRF guard)
and the delivery log with status, answer and replay."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from botplatform import roles
from botplatform.admin_scoping import ProjectScopedAdmin
from users.admin import ReadOnlyAdminMixin
from users.models_pos import WebhookDelivery, WebhookEndpoint
from users.webhooks_out import delivery_replay, endpoint_url_check, webhook_secret_generate
from workflows.webhooks_send import endpoint_address_check


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(
        label="URL", max_length=500, assume_scheme="https", help_text="Must start with https://."
    )
    event_choices = forms.MultipleChoiceField(
        label="Events",
        choices=WebhookEndpoint.Event.choices,
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("project", "url", "description", "is_active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("event_choices", list(self.instance.events or []))

    def clean_url(self) -> str:
        try:
            return endpoint_url_check(self.cleaned_data["url"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        cleaned = super().clean()
        url, project = cleaned.get("url"), cleaned.get("project")
        if url and project:
            try:
                endpoint_address_check(url, allow_private=project.allow_private_http)
            except ValueError as exc:
                self.add_error("url", f"This address cannot be called: {exc}")
        return cleaned


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ProjectScopedAdmin):
    """The signing secret is made when the endpoint is created and shown to owners."""

    form = WebhookEndpointForm
    list_display = ("url", "project", "events_shown", "is_active")
    list_filter = ("project", "is_active")
    readonly_fields = ("secret_shown", "created_at")
    secret_fields = ("secret_shown",)

    @admin.display(description="events")
    def events_shown(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events or [])

    @admin.display(description="signing secret")
    def secret_shown(self, obj: WebhookEndpoint) -> str:
        return obj.secret or "(made when saved)"

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form, change: bool) -> None:
        obj.events = sorted(form.cleaned_data["event_choices"])
        if not obj.secret:
            obj.secret = webhook_secret_generate()
        super().save_model(request, obj, form, change)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, ProjectScopedAdmin):
    project_path = "endpoint__project"
    list_display = (
        "created_at",
        "event",
        "endpoint",
        "status",
        "attempts",
        "response_code",
        "next_attempt_at",
    )
    list_filter = ("status", "event")
    readonly_fields = (
        "endpoint",
        "event",
        "event_id",
        "payload",
        "status",
        "attempts",
        "next_attempt_at",
        "response_code",
        "response_body",
        "error",
        "created_at",
        "delivered_at",
    )
    actions = ("replay",)

    def has_replay_webhook_permission(self, request: HttpRequest) -> bool:
        return self.role_permits(request, roles.REPLAY_WEBHOOK, named=True)

    @admin.action(description="Send the selected deliveries again", permissions=["replay_webhook"])
    def replay(self, request: HttpRequest, queryset) -> None:
        for delivery in queryset:
            delivery_replay(delivery)
        self.message_user(request, f"{queryset.count()} delivery(ies) queued again.")
