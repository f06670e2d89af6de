"""Admin for the till's side of the bot: the cashier form (used by ``CashierAdmin`` in
``users/admin_pos.py``), and the customer card on the bot user page (its QR code, and
rotating its code).

Cashiers are Telegram users who get the cashier menu in the project's bots
(``workflows/cashier.py``); owners add them. Rotating a card code (a lost or copied
card) is a named action (``botplatform.roles.ROTATE_CARD``): owners and support.
"""

from __future__ import annotations

import base64

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from botplatform import roles
from botplatform.audit import audit_record
from botplatform.models import Bot
from users.cards import card_code_display, card_link, card_qr_png
from users.customers import card_code_rotate
from users.models import BotUser, Cashier

TELEGRAM_ID_MAX = 2**63 - 1


class CashierForm(forms.ModelForm):
    class Meta:
        model = Cashier
        fields = ("project", "telegram_id", "name", "store_name", "daily_limit", "is_active")
        help_texts = {
            "telegram_id": "The cashier's own Telegram user id (a number; they can learn it "
            "from @userinfobot). They open the menu with /cashier in any of the project's bots.",
        }

    def clean_telegram_id(self) -> int:
        value = self.cleaned_data["telegram_id"]
        if value is None or not 0 < value <= TELEGRAM_ID_MAX:
            raise forms.ValidationError("A Telegram user id is a positive number.")
        return value

    def clean(self):
        cleaned = super().clean()
        project, telegram_id = cleaned.get("project"), cleaned.get("telegram_id")
        if project and telegram_id:
            taken = Cashier.objects.filter(project=project, telegram_id=telegram_id)
            if self.instance.pk:
                taken = taken.exclude(pk=self.instance.pk)
            if taken.exists():
                self.add_error("telegram_id", "This Telegram user is already a cashier here.")
        return cleaned


def _card_bot_username(user: BotUser) -> str:
    return (
        Bot.objects.filter(project_id=user.project_id, is_active=True)
        .exclude(username="")
        .order_by("pk")
        .values_list("username", flat=True)
        .first()
        or ""
    )


class BotUserCardMixin:
    """The bot user page's "Loyalty card" field and its "Rotate" page."""

    @admin.display(description="loyalty card")
    def loyalty_card(self, obj: BotUser) -> str:
        if obj.pk is None or not obj.card_code:
            return "No card yet: it is made when the customer first asks for it in the bot."
        link = card_link(bot_username=_card_bot_username(obj), code=obj.card_code)
        qr = card_qr_png(link, scale=4)
        return format_html(
            '<img src="data:image/png;base64,{}" alt="QR code of card {}" width="164" '
            'height="164"><br><strong>{}</strong> &middot; <a href="{}">Rotate the code</a>'
            '<div class="help">The QR code opens {} (a cashier scans it). Rotate the code '
            "when a card is lost or copied: the old one stops working at once.</div>",
            base64.b64encode(qr).decode(),
            obj.card_code,
            card_code_display(obj.card_code),
            reverse("admin:users_botuser_rotate_card", args=[obj.pk]),
            link,
        )

    def card_urls(self) -> list:
        return [
            path(
                "<path:object_id>/rotate-card/",
                self.admin_site.admin_view(self.rotate_card_view),
                name="users_botuser_rotate_card",
            )
        ]

    def rotate_card_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET asks to confirm; POST draws a new code (the old one stops working)."""
        user = self.get_object(request, object_id)
        if user is None:
            raise Http404("No such bot user in your projects.")
        if not self.role_permits(request, roles.ROTATE_CARD, user, named=True):
            raise PermissionDenied
        if request.method == "POST":
            old = user.card_code
            code = card_code_rotate(user)
            audit_record(
                actor=request.user,
                obj=user,
                message=f"Card code rotated (was ending {old[-4:] or 'none'}).",
            )
            messages.success(request, f"New card code for {user}: {card_code_display(code)}.")
            return HttpResponseRedirect(reverse("admin:users_botuser_change", args=[user.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rotate the card code of {user}",
            "opts": self.opts,
            "original": user,
        }
        return TemplateResponse(request, "admin/users/botuser/rotate_card.html", context)
