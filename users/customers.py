"""Customers as a till sees them: identity by phone (E.164), Telegram id or card code;
customers created at a till; linking a phone from Telegram, merging a till customer
into the Telegram user with the same phone; the card code and its rotation.

A till customer is a ``BotUser`` without a Telegram id, so the one ledger keeps their
balance. When the Telegram user later shares that phone, :func:`customer_link_phone`
moves the till customer's balance and history into the Telegram user (two ``merge``
ledger entries, under both row locks) and marks the till customer ``merged_into``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from django.db import IntegrityError, transaction
from django.utils import timezone

from botplatform.models import Project
from users.invalidation import user_state_changed
from users.ledger import ledger_apply
from users.levels import level_change_record
from users.models import (
    CARD_CODE_LENGTH,
    BonusTransaction,
    BotUser,
    LevelChange,
    generate_card_code,
)
from users.models_pos import Hold, Purchase
from users.selectors import level_for
from users.webhooks_out import event_emit

# Anything longer is not a phone number; refused before the parser sees it.
PHONE_INPUT_MAX_LENGTH = 32
PHONE_CHARS_RE = re.compile(r"^\+?[0-9 ().\-]+$", re.ASCII)
_CARD_CODE_ATTEMPTS = 8


class CustomerError(ValueError):
    """A request about customers that cannot be done; ``code`` is stable for the API."""

    code = "invalid"


class PhoneInvalid(CustomerError):
    code = "invalid_phone"


class CardCodeInvalid(CustomerError):
    code = "invalid_card_code"


class PhoneTaken(CustomerError):
    code = "phone_taken"


def phone_normalize(raw: object, *, region: str | None = None) -> str:
    """``raw`` as E.164 (``+4915112345678``), or :class:`PhoneInvalid`.

    Without a leading + the number needs ``region`` (ISO country code, e.g. "DE").
    Bounded: anything over 32 characters is refused unparsed.
    """
    if not isinstance(raw, str):
        raise PhoneInvalid("the phone number must be text")
    text = raw.strip()
    if not text or len(text) > PHONE_INPUT_MAX_LENGTH:
        raise PhoneInvalid("this is not a phone number")
    if not PHONE_CHARS_RE.match(text):
        raise PhoneInvalid("a phone number has only digits, spaces, + ( ) - and .")
    if not text.startswith("+") and region is None:
        if text.isdigit() and len(text) > 7:  # Telegram sends contacts without the +
            text = "+" + text
        else:
            raise PhoneInvalid("give the phone in international form, starting with +")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneInvalid(f"this is not a phone number ({exc._msg})") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise PhoneInvalid("this phone number does not exist")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def card_code_normalize(raw: object) -> str:
    """A typed or scanned card code: digits only (spaces and dashes dropped)."""
    if not isinstance(raw, str) or len(raw) > 64:
        raise CardCodeInvalid("this is not a card code")
    code = "".join(ch for ch in raw if ch not in " -")
    if len(code) != CARD_CODE_LENGTH or not code.isascii() or not code.isdigit():
        raise CardCodeInvalid(f"a card code has {CARD_CODE_LENGTH} digits")
    return code


def _followed(user: BotUser | None) -> BotUser | None:
    """A merged till customer answers as the user it was merged into."""
    seen = 0
    while user is not None and user.merged_into_id is not None and seen < 5:
        user = BotUser.objects.filter(pk=user.merged_into_id).first()
        seen += 1
    return user


def customer_find(
    *,
    project_id: int,
    customer_id: int | None = None,
    phone: str | None = None,
    telegram_id: int | None = None,
    card_code: str | None = None,
) -> BotUser | None:
    """The project's customer by exactly one identity; None when there is none.

    Raises :class:`PhoneInvalid` / :class:`CardCodeInvalid` for malformed input.
    """
    users = BotUser.objects.filter(project_id=project_id, is_test=False)
    if customer_id is not None:
        found = users.filter(pk=customer_id).first()
    elif phone is not None:
        found = users.filter(phone=phone_normalize(phone)).first()
    elif telegram_id is not None:
        found = users.filter(telegram_id=telegram_id).first()
    elif card_code is not None:
        found = users.filter(card_code=card_code_normalize(card_code)).first()
    else:
        raise CustomerError("give a phone, a Telegram id or a card code")
    return _followed(found)


def card_code_ensure(user: BotUser) -> str:
    """The customer's card code, made on first use (unique in the project)."""
    if user.card_code:
        return user.card_code
    for _attempt in range(_CARD_CODE_ATTEMPTS):
        code = generate_card_code()
        try:
            with transaction.atomic():
                updated = BotUser.objects.filter(pk=user.pk, card_code="").update(card_code=code)
        except IntegrityError:
            continue  # taken in this project: draw again
        if not updated:  # someone else made it first
            user.card_code = BotUser.objects.values_list("card_code", flat=True).get(pk=user.pk)
            return user.card_code
        user.card_code = code
        user_state_changed(user_id=user.pk, project_id=user.project_id)
        return code
    raise RuntimeError("could not draw a free card code; try again")


def card_code_rotate(user: BotUser) -> str:
    """A new card code (the old one stops working at once). The QR picture is named
    after the code, so the next card sent is a new upload (``show_card``)."""
    for _attempt in range(_CARD_CODE_ATTEMPTS):
        code = generate_card_code()
        try:
            with transaction.atomic():
                BotUser.objects.filter(pk=user.pk).update(card_code=code)
        except IntegrityError:
            continue
        user.card_code = code
        user_state_changed(user_id=user.pk, project_id=user.project_id)
        return code
    raise RuntimeError("could not draw a free card code; try again")


def customer_create(
    *, project_id: int, phone: str, first_name: str = "", last_name: str = ""
) -> tuple[BotUser, bool]:
    """A customer created at a till, identified by phone; (customer, created).

    The same phone again answers the existing customer (Telegram-linked or not).
    """
    e164 = phone_normalize(phone)
    existing = customer_find(project_id=project_id, phone=e164)
    if existing is not None:
        return existing, False
    project = Project.objects.only("levels").get(pk=project_id)
    try:
        with transaction.atomic():
            user = BotUser.objects.create(
                project_id=project_id,
                telegram_id=None,
                chat_id=None,
                phone=e164,
                first_name=first_name[:128],
                last_name=last_name[:128],
                source=BotUser.Source.TILL,
                level=level_for(levels=project.levels, lifetime_earned=0),
            )
    except IntegrityError:  # the same phone created concurrently
        existing = customer_find(project_id=project_id, phone=e164)
        if existing is None:
            raise
        return existing, False
    card_code_ensure(user)
    event_emit(project_id=project_id, event="customer.joined", data=customer_payload(user))
    return user, True


def customer_joined(user: BotUser) -> None:
    """A new Telegram user: tell the project's webhooks (``customer.joined``)."""
    event_emit(project_id=user.project_id, event="customer.joined", data=customer_payload(user))


@dataclass(frozen=True)
class PhoneLink:
    user: BotUser
    merged_from: int | None  # the till customer merged into ``user``


def customer_link_phone(*, user: BotUser, phone: str) -> PhoneLink:
    """Give a Telegram user the phone they shared (their own contact, checked by the
    caller); a till customer with that phone is merged into them.

    Raises :class:`PhoneTaken` when another Telegram user of the project has it.
    """
    e164 = phone_normalize(phone)
    with transaction.atomic():
        other = (
            BotUser.objects.filter(project_id=user.project_id, phone=e164)
            .exclude(pk=user.pk)
            .first()
        )
        if other is not None and other.telegram_id is not None:
            raise PhoneTaken("this phone belongs to another customer")
        merged_from = None
        if other is not None:
            customer_merge(source_id=other.pk, target_id=user.pk)
            merged_from = other.pk
        if user.phone != e164 or user.phone_linked_at is None:
            BotUser.objects.filter(pk=user.pk).update(phone=e164, phone_linked_at=timezone.now())
        user.refresh_from_db()
        user_state_changed(user_id=user.pk, project_id=user.project_id)
        event_emit(
            project_id=user.project_id,
            event="customer.phone_linked",
            data={**customer_payload(user), "merged_from": merged_from},
        )
    return PhoneLink(user=user, merged_from=merged_from)


def customer_merge(*, source_id: int, target_id: int) -> None:
    """Move a till customer (``source``) into a Telegram user (``target``): balance and
    lifetime earnings (two ``merge`` ledger entries), purchases and open holds; the
    source keeps its history and points at the target. Idempotent (keyed by source).
    A level the summed lifetime earnings reach is a move (``merge:<source id>``)."""
    with transaction.atomic():
        first, second = sorted((source_id, target_id))
        locked = {
            u.pk: u
            for u in BotUser.objects.select_for_update(of=("self",))
            .select_related("project")
            .filter(pk__in=[first, second])
            .order_by("pk")
        }
        source, target = locked[source_id], locked[target_id]
        if source.merged_into_id is not None:
            return
        amount = source.balance
        if amount > 0:
            ledger_apply(
                user_id=source.pk,
                amount=-amount,
                kind=BonusTransaction.Kind.MERGE,
                idempotency_key=f"merge:{source.pk}:out",
                reason=f"Moved to customer {target.pk} (same phone)",
            )
            ledger_apply(
                user_id=target.pk,
                amount=amount,
                kind=BonusTransaction.Kind.MERGE,
                idempotency_key=f"merge:{source.pk}:in",
                reason=f"Moved from till customer {source.pk} (same phone)",
            )
        lifetime = target.lifetime_earned + source.lifetime_earned
        level = level_for(levels=target.project.levels, lifetime_earned=lifetime)
        BotUser.objects.filter(pk=target.pk).update(lifetime_earned=lifetime, level=level)
        level_change_record(
            project_id=target.project_id,
            user_id=target.pk,
            from_level=target.level,
            to_level=level,
            key=f"merge:{source.pk}",
            at=timezone.now(),
            cause=LevelChange.Cause.MERGE,
            announce=not target.is_test,
        )
        Purchase.objects.filter(customer_id=source.pk).update(customer_id=target.pk)
        Hold.objects.filter(customer_id=source.pk).update(customer_id=target.pk)
        BotUser.objects.filter(pk=source.pk).update(merged_into=target, phone="", card_code="")
        if not target.first_name and source.first_name:
            BotUser.objects.filter(pk=target.pk).update(
                first_name=source.first_name, last_name=source.last_name
            )
        user_state_changed(user_id=source.pk, project_id=source.project_id)
        user_state_changed(user_id=target.pk, project_id=target.project_id)


def customer_payload(user: BotUser) -> dict:
    """The customer as the API and webhooks show it."""
    return {
        "id": user.pk,
        "telegram_id": user.telegram_id,
        "phone": user.phone or None,
        "card_code": user.card_code or None,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "level": user.level,
        "balance": user.balance,
        "source": user.source,
    }
