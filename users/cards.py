"""The customer card as a picture: a QR code of the card's deep link, made with segno.

The QR holds ``https://t.me/<bot>?start=card_<code>``: a cashier's phone camera opens
it in Telegram, which starts the bot with ``/start card_<code>`` from the cashier's own
account (the cashier menu takes it from there). Without a bot username (the simulator)
it holds the bare code. The code itself is made and rotated by ``users.customers``.
"""

from __future__ import annotations

import functools
import io

import segno

CARD_START_PREFIX = "card_"  # /start card_<code>: a cashier opened a customer's card


def card_link(*, bot_username: str, code: str) -> str:
    """What the card's QR code says."""
    if not bot_username:
        return code
    return f"https://t.me/{bot_username}?start={CARD_START_PREFIX}{code}"


# Remembered per process (about 0.5 KB each): ``show_card`` hands the transport the
# card's bytes on every send (the transport sends them by file id after the first
# upload), and drawing one costs ~10 ms, so a card shown again is not drawn again.
@functools.lru_cache(maxsize=1024)
def card_qr_png(text: str, *, scale: int = 8) -> bytes:
    """The QR code of ``text`` as a PNG (error correction M, a quiet zone of 4)."""
    out = io.BytesIO()
    segno.make_qr(text, error="m").save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def card_code_display(code: str) -> str:
    """Grouped by four for reading aloud and typing: "1234 5678 9012"."""
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))
