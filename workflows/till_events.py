"""What an update does for the till before (and after) the workflows see it.

Called by the handler (:mod:`workflows.handler`), inside the update's transaction:

- a shared contact that is the sender's own (``contact_user_id`` is the sender, not
  forwarded) links the phone to the customer, merging a customer created at a till
  with the same phone (``users.customers.customer_link_phone``);
- a cashier's menu events go to :mod:`workflows.cashier`;
- a customer's Yes/No on a redemption goes to :mod:`workflows.hold_approval`.

Anything else passes through to the workflows untouched.
"""

from __future__ import annotations

import logging

from botplatform.conversation import Action, InputEvent, SendMessage
from botplatform.models import Bot
from botplatform.telegram.updates import ParsedUpdate
from users.customers import CustomerError, customer_link_phone
from users.e164 import PhoneInvalid, phone_e164, phone_masked
from users.models import BotUser
from users.readahead import UsersAhead
from workflows.cashier import cashier_handle
from workflows.hold_approval import hold_answer

logger = logging.getLogger(__name__)

CONTACT_SAVED = "✅ Thank you! Your phone number is saved."
CONTACT_REFUSED = "Please use the “share my phone” button: it sends your own number."


def contact_is_own(event: InputEvent, *, telegram_id: int | None) -> bool:
    """The "share my phone" button's contact: the sender's own, not forwarded."""
    return (
        event.kind == "contact"
        and not event.forwarded
        and telegram_id is not None
        and event.contact_user_id == telegram_id
    )


def contact_link(*, user: BotUser, event: InputEvent) -> BotUser:
    """Link the phone of the user's own shared contact; the (maybe merged) user."""
    if not contact_is_own(event, telegram_id=user.telegram_id):
        return user
    try:
        phone = phone_e164(event.contact_phone, international=True)
        return customer_link_phone(user=user, phone=phone).user
    except (PhoneInvalid, CustomerError) as exc:
        logger.info(
            "User %s: phone %s not linked: %s", user.pk, phone_masked(event.contact_phone), exc
        )
        return user


def before_workflows(
    *, bot: Bot, user: BotUser, parsed: ParsedUpdate, ahead: UsersAhead | None = None
) -> list[Action] | None:
    """The cashier menu's or a hold answer's actions, or None (the workflows go on).
    ``ahead``: the batch's read-ahead, where the cashier's menu state may already be."""
    event = parsed.event
    staff = cashier_handle(
        bot=bot,
        user=user,
        chat_id=parsed.chat_id,
        event=event,
        update_id=parsed.update_id,
        ahead=ahead,
    )
    if staff is not None:
        return staff
    if event.kind == "callback":
        return hold_answer(
            bot=bot,
            user=user,
            chat_id=parsed.chat_id,
            callback_data=event.callback_data,
            query_id=event.callback_query_id,
            message_id=event.message_id,
        )
    return None


def contact_unhandled(*, user: BotUser, parsed: ParsedUpdate) -> list[Action]:
    """No workflow was waiting for the contact: say whether it was taken."""
    own = contact_is_own(parsed.event, telegram_id=user.telegram_id)
    return [
        SendMessage(
            chat_id=parsed.chat_id,
            text=CONTACT_SAVED if own and user.phone else CONTACT_REFUSED,
            remove_reply_keyboard=bool(own and user.phone),
        )
    ]
