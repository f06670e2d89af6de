"""A Bot API server of our own, over real HTTP on loopback, for tests and ``bench``.

It speaks enough of the Bot API for the platform (getMe, getUpdates, sendMessage,
sendPhoto and the other media sends with multipart uploads and per-bot file_ids,
sendMediaGroup, sendLocation, sendVenue, sendInvoice, answerPreCheckoutQuery,
refundStarPayment (users pay with :meth:`pre_checkout` and :meth:`paid`),
editMessageText, editMessageReplyMarkup, answerCallbackQuery, setWebhook,
deleteWebhook, getWebhookInfo), records every call, and can inject failures:
429 with ``retry_after``, 5xx, 401 (revoked token), 403 (user blocked the bot) and
slow answers. Tests enqueue user updates with :meth:`TelegramDouble.message`,
:meth:`command` and :meth:`callback`; ``getUpdates`` hands them out like Telegram
does: updates below ``offset`` are confirmed and forgotten, and a request waits up
to ``timeout`` seconds for new ones. Two overlapping ``getUpdates`` for one token
end the older with 409, as Telegram does; :attr:`conflicts` counts them.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from devtools.telegram_double_media import MediaApi, multipart_parse

_TAG = re.compile(r"<(/?)([a-zA-Z-]*)(?:\s[^<>]*)?>")
_HTML_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "blockquote",
    "tg-emoji",
}


def _html_ok(text: str) -> bool:
    """Roughly Telegram's HTML check: known tags, balanced, no stray '<'."""
    stack: list[str] = []
    position = 0
    for match in _TAG.finditer(text):
        if "<" in text[position : match.start()]:
            return False
        position = match.end()
        closing, name = match.group(1), match.group(2).lower()
        if name not in _HTML_TAGS:
            return False
        if closing:
            if not stack or stack.pop() != name:
                return False
        else:
            stack.append(name)
    return "<" not in text[position:] and not stack


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_STATUS_LINES = {status: _status_line(status) for status in (200, 400, 401, 403, 404, 409, 429)}


def _error_payload(status: int, description: str) -> dict:
    return {"ok": False, "error_code": status, "description": description}


class RawJson(str):
    """An answer body written as it is: a test's hostile ``getUpdates`` answer."""


@dataclass
class Call:
    token: str
    method: str
    params: dict
    at: float
    status: int = 200


@dataclass
class Fault:
    method: str
    status: int
    times: int
    retry_after: int | None = None
    description: str = ""


@dataclass
class BotState:
    token: str
    bot_id: int
    username: str
    queue: list[dict] = field(default_factory=list)
    webhook: dict = field(default_factory=dict)
    revoked: bool = False
    polling: int = 0  # getUpdates in flight
    poll_generation: int = 0


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a hundred bots connecting at once
    # overflow it, and the dropped SYNs are retried after 1, 3, 7… s, so clients time
    # out at start-up (aiogram's getMe did in the peer benchmark).
    request_queue_size = 1024


class TelegramDouble(MediaApi):
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.bots: dict[str, BotState] = {}
        self.faults: list[Fault] = []
        self.delays: dict[str, tuple[float, int]] = {}
        self.blocked_chats: set[int] = set()
        self.language_codes: dict[int, str] = {}  # user_id -> the language_code updates carry
        self.messages: dict[tuple[int, int], dict] = {}  # (chat_id, message_id) -> message
        self.last_message: dict[int, int] = {}  # chat_id -> the newest message_id sent
        self.conflicts = 0
        self.files: dict[str, bytes] = {}  # file_id -> the uploaded bytes
        self.bot_file_ids: dict[str, set[str]] = {}  # token -> the file_ids it may use
        self.uploads: list[tuple[str, str, str, str, int]] = []  # token, method, field, name, size
        self._file_ids = itertools.count(1)
        self.invoices: list[dict] = []  # sendInvoice parameters
        self.pre_checkout_answers: dict[str, tuple[bool, str]] = {}  # query id -> (ok, error)
        self.charges: set[str] = set()  # charge ids of payments made
        self.refunded: set[str] = set()
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._cond = threading.Condition()
        self._cpu_lock = threading.Lock()
        self.cpu_seconds = 0.0
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TelegramDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def cpu_add(self, seconds: float) -> None:
        with self._cpu_lock:
            self.cpu_seconds += seconds

    def cpu_take(self) -> float:
        """CPU seconds the server threads spent answering since the last call (the
        benchmark keeps Telegram's side out of the platform's figure with it)."""
        with self._cpu_lock:
            spent, self.cpu_seconds = self.cpu_seconds, 0.0
        return spent

    # --- set-up by tests --------------------------------------------------------------

    def bot_add(self, token: str, username: str = "test_bot") -> BotState:
        state = BotState(token=token, bot_id=int(token.split(":")[0]), username=username)
        with self._cond:
            self.bots[token] = state
        return state

    def revoke(self, token: str) -> None:
        with self._cond:
            self.bots[token].revoked = True

    def fail(
        self,
        method: str,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        description: str = "",
    ) -> None:
        """The next ``times`` calls of ``method`` answer ``status``."""
        with self._cond:
            self.faults.append(Fault(method, status, times, retry_after, description))

    def slow(self, method: str, seconds: float, *, times: int = 1_000_000) -> None:
        """The next ``times`` calls of ``method`` take ``seconds`` before answering."""
        with self._cond:
            self.delays[method] = (seconds, times)

    def block(self, chat_id: int) -> None:
        """The user of this chat blocked the bot: sends answer 403."""
        with self._cond:
            self.blocked_chats.add(chat_id)

    # --- user updates -------------------------------------------------------------------

    def _user(self, user_id: int) -> dict:
        user = {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User{user_id}",
            "username": f"u{user_id}",
        }
        if user_id in self.language_codes:
            user["language_code"] = self.language_codes[user_id]
        return user

    def enqueue(self, token: str, update: dict) -> dict:
        """Queue a raw update (gets an update_id unless it has one)."""
        with self._cond:
            update.setdefault("update_id", next(self._update_ids))
            self.bots[token].queue.append(update)
            self._cond.notify_all()
        return update

    def enqueue_raw(self, token: str, fields: str) -> int:
        """Queue an update written as raw JSON text, one json.dumps could not write
        (nested 100,000 deep, a 5,000-digit number): ``fields`` is the object's text
        after its update_id. ``getUpdates`` hands it out verbatim. Returns its id."""
        with self._cond:
            update_id = next(self._update_ids)
        raw = f'{{"update_id": {update_id}, {fields}}}'
        self.enqueue(token, {"update_id": update_id, "__raw__": raw})
        return update_id

    def message(self, token: str, chat_id: int, text: str, *, user_id: int | None = None) -> dict:
        user = self._user(user_id or chat_id)
        message = {
            "message_id": next(self._message_ids),
            "from": user,
            "chat": {"id": chat_id, "type": "private", "first_name": user["first_name"]},
            "date": int(time.time()),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(" ", 1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.enqueue(token, {"message": message})

    command = message

    def callback(
        self,
        token: str,
        chat_id: int,
        data: str,
        *,
        message_id: int = 1,
        user_id: int | None = None,
    ) -> dict:
        user = self._user(user_id or chat_id)
        query = {
            "id": f"cq{next(self._update_ids)}",
            "from": user,
            "chat_instance": str(chat_id),
            "data": data,
            "message": {
                "message_id": message_id,
                "from": {"id": self.bots[token].bot_id, "is_bot": True, "first_name": "Bot"},
                "chat": {"id": chat_id, "type": "private"},
                "date": int(time.time()),
                "text": "menu",
            },
        }
        return self.enqueue(token, {"callback_query": query})

    def contact(
        self,
        token: str,
        chat_id: int,
        phone: str,
        *,
        user_id: int | None = None,
        contact_user_id: int | None = 0,
        forwarded_from: int | None = None,
    ) -> dict:
        """The user sends a contact. By default their own, as the "share my phone" button
        sends it (``contact_user_id`` = the sender); give another id, None (an address-book
        entry of someone not on Telegram), or ``forwarded_from`` (forwarded from a chat
        with that user) to send what a forger would."""
        user = self._user(user_id or chat_id)
        owner = user["id"] if contact_user_id == 0 else contact_user_id
        contact = {"phone_number": phone, "first_name": user["first_name"]}
        if owner is not None:
            contact["user_id"] = owner
        message = {
            "message_id": next(self._message_ids),
            "from": user,
            "chat": {"id": chat_id, "type": "private", "first_name": user["first_name"]},
            "date": int(time.time()),
            "contact": contact,
        }
        if forwarded_from is not None:
            origin = self._user(forwarded_from)
            message["forward_origin"] = {"type": "user", "date": 1, "sender_user": origin}
            message["forward_from"] = origin
            message["forward_date"] = 1
        return self.enqueue(token, {"message": message})

    def press(self, token: str, chat_id: int, text: str) -> dict:
        """The user presses the button whose label contains ``text`` on the newest
        message the bot showed them (KeyError/StopIteration if there is none)."""
        message = self.messages[(chat_id, self.last_message[chat_id])]
        data = next(
            button["callback_data"]
            for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])
            for button in row
            if text in button["text"] and button.get("callback_data")
        )
        return self.callback(token, chat_id, data, message_id=message["message_id"])

    # --- what the bot did -----------------------------------------------------------------

    def calls_of(self, method: str, token: str | None = None, *, ok: bool = True) -> list[Call]:
        with self._cond:
            return [
                call
                for call in self.calls
                if call.method == method
                and (token is None or call.token == token)
                and (not ok or call.status == 200)
            ]

    def sent_texts(self, token: str | None = None, chat_id: int | None = None) -> list[str]:
        return [
            call.params["text"]
            for call in self.calls_of("sendMessage", token)
            if chat_id is None or int(call.params["chat_id"]) == chat_id
        ]

    def pending(self, token: str) -> int:
        with self._cond:
            return len(self.bots[token].queue)

    def wait_for(self, predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    # --- the server ---------------------------------------------------------------------

    def _handler_class(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            """A lean HTTP/1.1 keep-alive handler: the double shares its process (and the
            GIL) with the code under test, so each call is parsed by hand (request line,
            headers into a dict, body by Content-Length) rather than through
            ``http.server``'s email-based header parser, and answered in one write."""

            protocol_version = "HTTP/1.1"
            # One segment per answer: unbuffered header and body writes meet Nagle and
            # delayed ACKs on keep-alive connections, ~40 ms per call.
            wbufsize = -1
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def handle_one_request(self) -> None:
                started = time.thread_time()  # CPU only: waiting for the request is free
                try:
                    self._handle_one()
                finally:
                    double.cpu_add(time.thread_time() - started)

            def _handle_one(self) -> None:
                try:
                    line = self.rfile.readline(65537)
                    headers: dict[bytes, bytes] = {}
                    while True:
                        header = self.rfile.readline(65537)
                        if header in (b"\r\n", b"\n", b""):
                            break
                        name, _, value = header.partition(b":")
                        headers[name.strip().lower()] = value.strip()
                    words = line.split()
                    if len(words) != 3 or not words[2].startswith(b"HTTP/"):
                        self.close_connection = True
                        if line.strip():
                            self._reply(400, _error_payload(400, "Bad Request"))
                        return
                    verb, target, version = words
                    self.close_connection = (
                        version != b"HTTP/1.1"
                        or headers.get(b"connection", b"").lower() == b"close"
                    )
                    length = int(headers.get(b"content-length") or 0)
                    body = self.rfile.read(length) if length else b""
                except (OSError, ValueError):
                    self.close_connection = True
                    return
                if verb not in (b"GET", b"POST"):
                    self.close_connection = True
                    return self._reply(501, _error_payload(501, "Not Implemented"))
                self._serve(target.decode("latin-1"), headers.get(b"content-type", b""), body)

            def _serve(self, target: str, content_type: bytes, body: bytes) -> None:
                if target.startswith("/"):
                    path, _, query = target.partition("?")
                else:  # absolute form, as a client sends it through a proxy
                    parts = urlsplit(target)
                    path, query = parts.path, parts.query
                params = dict(parse_qsl(query)) if query else {}
                if body:
                    if b"json" in content_type:
                        params.update(json.loads(body))
                    elif b"multipart/form-data" in content_type:
                        params.update(multipart_parse(content_type, body))
                    else:
                        params.update(parse_qsl(body.decode()))
                segments = path.strip("/").split("/")
                if len(segments) != 2 or not segments[0].startswith("bot"):
                    return self._reply(404, _error_payload(404, "Not Found"))
                token, method = segments[0][3:], segments[1]
                status, payload = double._dispatch(token, method, params)
                self._reply(status, payload)

            def _reply(self, status: int, payload: dict | RawJson) -> None:
                if isinstance(payload, RawJson):
                    data = payload.encode()
                else:
                    data = json.dumps(payload).encode()
                head = _STATUS_LINES.get(status) or _status_line(status)
                try:
                    self.wfile.write(
                        b"%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (head, len(data), data)
                    )
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler

    def _error(self, status: int, description: str, **parameters) -> tuple[int, dict]:
        payload = {"ok": False, "error_code": status, "description": description}
        if parameters:
            payload["parameters"] = parameters
        return status, payload

    def _dispatch(self, token: str, method: str, params: dict) -> tuple[int, dict]:
        call = Call(token=token, method=method, params=params, at=time.monotonic())
        with self._cond:
            self.calls.append(call)
            delay, times = self.delays.get(method, (0, 0))
            if times > 0:
                self.delays[method] = (delay, times - 1)
            else:
                delay = 0
        if delay:
            time.sleep(delay)
        status, payload = self._answer(token, method, params)
        call.status = status
        return status, payload

    def _answer(self, token: str, method: str, params: dict) -> tuple[int, dict]:
        with self._cond:
            bot = self.bots.get(token)
            if bot is None or bot.revoked:
                return self._error(401, "Unauthorized")
            for fault in self.faults:
                if fault.method == method and fault.times > 0:
                    fault.times -= 1
                    if fault.status == 429:
                        retry = fault.retry_after or 1
                        return self._error(
                            429, f"Too Many Requests: retry after {retry}", retry_after=retry
                        )
                    return self._error(fault.status, fault.description or "Internal Server Error")
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        return handler(bot, params)

    def _ok(self, result) -> tuple[int, dict]:
        return 200, {"ok": True, "result": result}

    def _api_getMe(self, bot: BotState, params: dict):
        return self._ok(
            {"id": bot.bot_id, "is_bot": True, "first_name": "Test", "username": bot.username}
        )

    def _api_getUpdates(self, bot: BotState, params: dict):
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        deadline = time.monotonic() + timeout
        with self._cond:
            if bot.webhook.get("url"):
                return self._error(
                    409, "Conflict: can't use getUpdates method while webhook is active"
                )
            if bot.polling:
                self.conflicts += 1
            bot.polling += 1
            bot.poll_generation += 1
            generation = bot.poll_generation
            try:
                while True:
                    if offset:
                        bot.queue = [u for u in bot.queue if u["update_id"] >= offset]
                    if bot.poll_generation != generation:
                        return self._error(409, "Conflict: terminated by other getUpdates request")
                    if bot.queue:
                        return self._updates_answer(bot.queue[:limit])
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return self._ok([])
                    self._cond.wait(min(remaining, 0.5))
            finally:
                bot.polling -= 1

    def _updates_answer(self, updates: list[dict]) -> tuple[int, dict | RawJson]:
        if not any("__raw__" in update for update in updates):
            return self._ok(updates)
        items = [update.get("__raw__") or json.dumps(update) for update in updates]
        return 200, RawJson('{"ok": true, "result": [' + ", ".join(items) + "]}")

    def _message_new(self, chat_id: int, text: str, markup) -> dict:
        message = {
            "message_id": next(self._message_ids),
            "from": {"id": 1, "is_bot": True, "first_name": "Bot"},
            "chat": {"id": chat_id, "type": "private"},
            "date": int(time.time()),
            "text": text,
        }
        if markup:
            message["reply_markup"] = json.loads(markup) if isinstance(markup, str) else markup
        self.messages[(chat_id, message["message_id"])] = message
        self.last_message[chat_id] = message["message_id"]
        return message

    def _api_sendMessage(self, bot: BotState, params: dict):
        chat_id = int(params["chat_id"])
        text = params.get("text", "")
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if not text:
            return self._error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self._error(400, "Bad Request: message is too long")
        if params.get("parse_mode") == "HTML" and not _html_ok(text):
            return self._error(400, "Bad Request: can't parse entities: unsupported start tag")
        with self._cond:
            return self._ok(self._message_new(chat_id, text, params.get("reply_markup")))

    def _edit(self, params: dict, *, text: str | None):
        chat_id = int(params["chat_id"])
        if chat_id in self.blocked_chats:
            return self._error(403, "Forbidden: bot was blocked by the user")
        with self._cond:
            message = self.messages.get((chat_id, int(params["message_id"])))
            if message is None:
                return self._error(400, "Bad Request: message to edit not found")
            markup = params.get("reply_markup")
            markup = json.loads(markup) if isinstance(markup, str) else markup
            new_text = message["text"] if text is None else text
            if new_text == message["text"] and markup == message.get("reply_markup"):
                return self._error(
                    400,
                    "Bad Request: message is not modified: specified new message content "
                    "and reply markup are exactly the same as a current content and reply "
                    "markup of the message",
                )
            message["text"] = new_text
            message["reply_markup"] = markup
            return self._ok(message)

    def _api_editMessageText(self, bot: BotState, params: dict):
        return self._edit(params, text=params.get("text", ""))

    def _api_editMessageReplyMarkup(self, bot: BotState, params: dict):
        return self._edit(params, text=None)

    def _api_answerCallbackQuery(self, bot: BotState, params: dict):
        return self._ok(True)

    def _api_setWebhook(self, bot: BotState, params: dict):
        with self._cond:
            bot.webhook = {
                "url": params.get("url", ""),
                "secret_token": params.get("secret_token", ""),
            }
        return self._ok(True)

    def _api_deleteWebhook(self, bot: BotState, params: dict):
        with self._cond:
            bot.webhook = {}
            if str(params.get("drop_pending_updates", "")).lower() == "true":
                bot.queue = []
        return self._ok(True)

    def _api_getWebhookInfo(self, bot: BotState, params: dict):
        return self._ok(
            {
                "url": bot.webhook.get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(bot.queue),
            }
        )
