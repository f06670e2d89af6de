"""The Bot API double's media methods (a mixin of ``TelegramDouble``): multipart
uploads, per-bot file_ids, albums, locations and venues.

An upload (a file part) gets a new ``file_id`` valid for the uploading bot only, as
on Telegram; a send by ``file_id`` of another bot's file, or of an unknown one, is
refused with Telegram's "wrong file identifier". ``uploads`` records every upload,
so a test can tell an upload from a send by id.
"""

from __future__ import annotations

import json


def multipart_parse(content_type: bytes, body: bytes) -> dict:
    """A multipart/form-data body: plain fields as text, files as their bytes, and
    under ``__files__`` as {field: (filename, bytes)}."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type + b"\r\n\r\n" + body
    )
    params: dict = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
            params[name] = data
        else:
            params[name] = data.decode("utf-8", "replace")
    if files:
        params["__files__"] = files
    return params


class MediaApi:
    """Media methods; the host class provides ``_cond``, ``_ok``, ``_error``,
    ``_message_new``, ``blocked_chats``, ``files``, ``bot_file_ids``, ``uploads`` and
    ``_file_ids``."""

    # --- Media: uploads (multipart) get a file_id, valid for that bot only -----------

    def _file_take(self, bot, params: dict, field: str, method: str):
        """The file_id a send refers to or uploads; (None, error) when Telegram would refuse."""
        value = params.get(field)
        upload = (params.get("__files__") or {}).get(field)
        if isinstance(value, str) and value.startswith("attach://"):
            upload = (params.get("__files__") or {}).get(value[len("attach://") :])
        if upload is not None:
            filename, data = upload
            if not data:
                return None, self._error(400, "Bad Request: file must be non-empty")
            with self._cond:
                file_id = f"{field}-{bot.bot_id}-{next(self._file_ids)}"
                self.files[file_id] = data
                self.bot_file_ids.setdefault(bot.token, set()).add(file_id)
                self.uploads.append((bot.token, method, field, filename, len(data)))
            return file_id, None
        if not isinstance(value, str) or not value:
            return None, self._error(400, f"Bad Request: there is no {field} in the request")
        if value.startswith(("http://", "https://")):
            return f"url-{abs(hash(value)) % 10**8}", None
        if value not in self.bot_file_ids.get(bot.token, set()):
            return None, self._error(400, "Bad Request: wrong file identifier/HTTP URL specified")
        return value, None

    def _media_message(self, chat_id: int, kind: str, file_id: str, params: dict) -> dict:
        with self._cond:
            message = self._message_new(chat_id, "", params.get("reply_markup"))
            del message["text"]
            size = len(self.files.get(file_id, b""))
            item = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size}
            message[kind] = [{**item, "width": 90, "height": 90}] if kind == "photo" else item
            if params.get("caption"):
                message["caption"] = params["caption"]
            return message

    def _send_media(self, bot, params: dict, kind: str, method: str):
        chat_id = int(params["chat_id"])
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if len(params.get("caption") or "") > 1024:
            return self._error(400, "Bad Request: message caption is too long")
        file_id, error = self._file_take(bot, params, kind, method)
        if error:
            return error
        return self._ok(self._media_message(chat_id, kind, file_id, params))

    def _api_sendPhoto(self, bot, params: dict):
        return self._send_media(bot, params, "photo", "sendPhoto")

    def _api_sendDocument(self, bot, params: dict):
        return self._send_media(bot, params, "document", "sendDocument")

    def _api_sendVideo(self, bot, params: dict):
        return self._send_media(bot, params, "video", "sendVideo")

    def _api_sendAnimation(self, bot, params: dict):
        return self._send_media(bot, params, "animation", "sendAnimation")

    def _api_sendAudio(self, bot, params: dict):
        return self._send_media(bot, params, "audio", "sendAudio")

    def _api_sendVoice(self, bot, params: dict):
        return self._send_media(bot, params, "voice", "sendVoice")

    def _api_sendSticker(self, bot, params: dict):
        return self._send_media(bot, params, "sticker", "sendSticker")

    def _api_sendMediaGroup(self, bot, params: dict):
        chat_id = int(params["chat_id"])
        try:
            items = json.loads(params.get("media") or "[]")
        except ValueError:
            return self._error(400, "Bad Request: can't parse media JSON object")
        if not isinstance(items, list) or not 2 <= len(items) <= 10:
            return self._error(400, "Bad Request: wrong number of media items")
        messages = []
        for item in items:
            kind = item.get("type", "")
            file_id, error = self._file_take(
                bot, {"__files__": params.get("__files__"), kind: item.get("media")}, kind,
                "sendMediaGroup",
            )  # fmt: skip
            if error:
                return error
            messages.append(self._media_message(chat_id, kind, file_id, item))
        return self._ok(messages)

    def _api_sendLocation(self, bot, params: dict):
        chat_id = int(params["chat_id"])
        with self._cond:
            message = self._message_new(chat_id, "", params.get("reply_markup"))
            del message["text"]
            message["location"] = {
                "latitude": float(params["latitude"]),
                "longitude": float(params["longitude"]),
            }
            return self._ok(message)

    def _api_sendVenue(self, bot, params: dict):
        status, payload = self._api_sendLocation(bot, params)
        payload["result"]["venue"] = {
            "location": payload["result"]["location"],
            "title": params.get("title", ""),
            "address": params.get("address", ""),
        }
        return status, payload

    # --- The user sends media ----------------------------------------------------------

    def _user_message(self, chat_id: int, **content) -> dict:
        return {
            "message_id": next(self._message_ids),
            "from": self._user(chat_id),
            "chat": {"id": chat_id, "type": "private"},
            "date": 1700000000,
            **content,
        }

    def user_file(self, token: str, data: bytes) -> str:
        """A file the user sent: a new file_id the bot may use (as Telegram gives it)."""
        with self._cond:
            file_id = f"user-{next(self._file_ids)}"
            self.files[file_id] = data
            self.bot_file_ids.setdefault(token, set()).add(file_id)
        return file_id

    def photo(self, token: str, chat_id: int, data: bytes = b"photo", caption: str = "") -> str:
        """The user sends a photo; returns its file_id."""
        file_id = self.user_file(token, data)
        sizes = [
            {"file_id": f"{file_id}-thumb", "file_unique_id": "t", "width": 9, "height": 9},
            {"file_id": file_id, "file_unique_id": "p", "width": 90, "height": 90},
        ]
        content = {"photo": sizes, **({"caption": caption} if caption else {})}
        self.enqueue(token, {"message": self._user_message(chat_id, **content)})
        return file_id

    def document(self, token: str, chat_id: int, name: str, data: bytes = b"doc") -> str:
        """The user sends a document; returns its file_id."""
        file_id = self.user_file(token, data)
        document = {"file_id": file_id, "file_unique_id": "d", "file_name": name}
        self.enqueue(token, {"message": self._user_message(chat_id, document=document)})
        return file_id

    def location(self, token: str, chat_id: int, latitude: float, longitude: float) -> None:
        """The user shares a location."""
        location = {"latitude": latitude, "longitude": longitude}
        self.enqueue(token, {"message": self._user_message(chat_id, location=location)})

    # --- Payments (Telegram Stars and others) ---------------------------------------

    def _api_sendInvoice(self, bot, params: dict):
        chat_id = int(params["chat_id"])
        try:
            prices = json.loads(params.get("prices") or "[]")
        except ValueError:
            return self._error(400, "Bad Request: can't parse prices JSON object")
        if params.get("currency") == "XTR" and (params.get("provider_token") or "") != "":
            return self._error(400, "Bad Request: provider_token must be empty for XTR")
        if not prices or not all(int(p.get("amount", 0)) > 0 for p in prices):
            return self._error(400, "Bad Request: wrong prices")
        with self._cond:
            message = self._message_new(chat_id, "", params.get("reply_markup"))
            del message["text"]
            message["invoice"] = {
                "title": params.get("title", ""),
                "description": params.get("description", ""),
                "currency": params.get("currency", ""),
                "total_amount": sum(int(p["amount"]) for p in prices),
                "start_parameter": "",
            }
            self.invoices.append(dict(params))
            return self._ok(message)

    def _api_answerPreCheckoutQuery(self, bot, params: dict):
        with self._cond:
            self.pre_checkout_answers[params.get("pre_checkout_query_id", "")] = (
                str(params.get("ok")).lower() == "true",
                params.get("error_message", ""),
            )
        return self._ok(True)

    def _api_refundStarPayment(self, bot, params: dict):
        charge_id = params.get("telegram_payment_charge_id", "")
        with self._cond:
            if charge_id not in self.charges or charge_id in self.refunded:
                return self._error(400, "Bad Request: CHARGE_NOT_FOUND")
            self.refunded.add(charge_id)
        return self._ok(True)

    def pre_checkout(
        self, token: str, chat_id: int, payload: str, amount: int, currency: str = "XTR"
    ) -> str:
        """The user confirms paying an invoice: Telegram asks the bot; returns the query id."""
        query_id = f"pcq-{next(self._file_ids)}"
        query = {
            "id": query_id,
            "from": self._user(chat_id),
            "currency": currency,
            "total_amount": amount,
            "invoice_payload": payload,
        }
        self.enqueue(token, {"pre_checkout_query": query})
        return query_id

    def paid(
        self,
        token: str,
        chat_id: int,
        payload: str,
        amount: int,
        currency: str = "XTR",
        charge_id: str | None = None,
    ) -> str:
        """The payment went through: the successful_payment message; returns its charge id."""
        charge_id = charge_id or f"stxCharge{next(self._file_ids)}"
        self.charges.add(charge_id)
        payment = {
            "currency": currency,
            "total_amount": amount,
            "invoice_payload": payload,
            "telegram_payment_charge_id": charge_id,
            "provider_payment_charge_id": "",
        }
        self.enqueue(token, {"message": self._user_message(chat_id, successful_payment=payment)})
        return charge_id
