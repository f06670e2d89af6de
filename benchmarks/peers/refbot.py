"""The reference bot: the demo loyalty conversation as a competent developer would
write it by hand with aiogram 3 (RedisStorage FSM, an asyncpg ledger with one
transaction per spend). Runs in its own virtualenv (benchmarks/peers/requirements.txt);
nothing of the platform is imported.

    refbot.py --tokens-file F --api URL --database-url DSN --redis-url URL
              [--webhook-port P] [--count-file F]

Polls every token of ``--tokens-file`` (one per line) against ``--api`` (the Bot API
double), or with ``--webhook-port`` serves aiogram's own webhook
(``/webhook/<token>``, aiohttp) instead. The same texts and buttons as the demo
(workflows/fixtures/demo.json), so the load driver's users take the same paths.
Not implemented: the minute reminder (it needs a scheduler; the driver never
presses it). ``--count-file``: the statements it sent, rewritten 5 times a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from html import escape

import asyncpg
from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandStart, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from redis.asyncio import BlockingConnectionPool, Redis

WELCOME_BONUS = 100
SPEND = 100
COUNTS = {"statements": 0, "transaction_statements": 0}
TEXTS: dict[str, int] = {}  # the statements by their first 90 characters

SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_user (
    telegram_id bigint PRIMARY KEY,
    first_name text NOT NULL DEFAULT '',
    balance integer NOT NULL DEFAULT 0 CHECK (balance >= 0),
    birthday date
);
CREATE TABLE IF NOT EXISTS peer_ledger (
    id bigserial PRIMARY KEY,
    telegram_id bigint NOT NULL REFERENCES peer_user,
    amount integer NOT NULL,
    reason text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS peer_ledger_user ON peer_ledger (telegram_id, id DESC);
"""


class CountingConnection(asyncpg.Connection):
    """Counts what is sent (BEGIN/COMMIT apart), as the driver counts the runner's."""

    def _count(self, sql: str) -> None:
        word = sql.lstrip().split(None, 1)[0].upper().rstrip(";") if sql.strip() else ""
        key = "transaction_statements" if word in ("BEGIN", "COMMIT", "ROLLBACK") else "statements"
        COUNTS[key] += 1
        head = " ".join(sql.split())[:90]
        TEXTS[head] = TEXTS.get(head, 0) + 1

    async def execute(self, query, *args, **kwargs):
        self._count(query)
        return await super().execute(query, *args, **kwargs)

    async def fetch(self, query, *args, **kwargs):
        self._count(query)
        return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query, *args, **kwargs):
        self._count(query)
        return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(self, query, *args, **kwargs):
        self._count(query)
        return await super().fetchval(query, *args, **kwargs)


class Input(StatesGroup):
    birthday = State()


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=text, callback_data=data) for text, data in row]
            for row in rows
        ]
    )


MENU = keyboard(
    [("💰 Balance", "balance"), ("📜 History", "history")],
    [("🛍 Spend 100 bonuses", "spend")],
    [("🤝 Invite a friend", "invite")],
    [("🎂 Tell us your birthday", "birthday")],
    [("⏰ Remind me in a minute", "remind")],
)
BACK = keyboard([("« Back to the menu", "welcome")])


def number(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def welcome_text(first_name: str, balance: int) -> str:
    return (
        f"👋 Welcome, <b>{escape(first_name or 'friend')}</b>!\n"
        f"Your balance: <b>{number(balance)}</b> bonuses. Level: —."
    )


def build(pool: asyncpg.Pool, me: dict[int, str]) -> Router:
    router = Router()

    async def balance_of(conn, user) -> int:
        balance = await conn.fetchval(
            "SELECT balance FROM peer_user WHERE telegram_id = $1", user.id
        )
        if balance is not None:
            return balance
        # First contact: the user and the welcome bonus, once (the key makes it so).
        async with conn.transaction():
            balance = await conn.fetchval(
                "INSERT INTO peer_user (telegram_id, first_name, balance) VALUES ($1, $2, $3) "
                "ON CONFLICT (telegram_id) DO NOTHING RETURNING balance",
                user.id,
                user.first_name or "",
                WELCOME_BONUS,
            )
            if balance is None:  # a concurrent first message won
                return await conn.fetchval(
                    "SELECT balance FROM peer_user WHERE telegram_id = $1", user.id
                )
            await conn.execute(
                "INSERT INTO peer_ledger (telegram_id, amount, reason, idempotency_key) "
                "VALUES ($1, $2, 'Welcome bonus', $3)",
                user.id,
                WELCOME_BONUS,
                f"welcome:{user.id}",
            )
        return balance

    async def show(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup) -> None:
        await query.answer()
        try:
            await query.message.edit_text(text, reply_markup=markup)
        except TelegramBadRequest as exc:  # "message is not modified"
            if "not modified" not in str(exc):
                raise

    @router.message(CommandStart())
    @router.message(Command("menu"))
    @router.message(F.text == "Menu")
    async def start(message: Message, state: FSMContext) -> None:
        if await state.get_state() is not None:
            await state.clear()
        async with pool.acquire() as conn:
            balance = await balance_of(conn, message.from_user)
        await message.answer(welcome_text(message.from_user.first_name, balance), reply_markup=MENU)

    @router.callback_query(F.data == "welcome")
    async def welcome(query: CallbackQuery) -> None:
        async with pool.acquire() as conn:
            balance = await balance_of(conn, query.from_user)
        await show(query, welcome_text(query.from_user.first_name, balance), MENU)

    @router.callback_query(F.data == "balance")
    async def balance(query: CallbackQuery) -> None:
        async with pool.acquire() as conn:
            value = await balance_of(conn, query.from_user)
        text = f"💰 Your balance: <b>{number(value)}</b> bonuses.\nLevel: —."
        await show(query, text, BACK)

    @router.callback_query(F.data == "history")
    async def history(query: CallbackQuery) -> None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT amount, reason, created_at FROM peer_ledger WHERE telegram_id = $1 "
                "ORDER BY id DESC LIMIT 5",
                query.from_user.id,
            )
        lines = "\n".join(
            f"{row['created_at']:%d.%m %H:%M} {row['amount']:+d} {escape(row['reason'])}"
            for row in rows
        )
        await show(query, f"📜 Your last operations:\n{lines or 'No operations yet.'}", BACK)

    @router.callback_query(F.data == "spend")
    async def spend(query: CallbackQuery, event_update) -> None:
        key = f"spend:{query.bot.id}:{event_update.update_id}"
        async with pool.acquire() as conn, conn.transaction():  # one transaction per spend
            done = await conn.fetchval(
                "INSERT INTO peer_ledger (telegram_id, amount, reason, idempotency_key) "
                "SELECT telegram_id, $2, 'Spent in the bot', $3 FROM peer_user "
                "WHERE telegram_id = $1 AND balance >= $4 "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                query.from_user.id,
                -SPEND,
                key,
                SPEND,
            )
            if done is not None:
                balance = await conn.fetchval(
                    "UPDATE peer_user SET balance = balance - $2 "
                    "WHERE telegram_id = $1 RETURNING balance",
                    query.from_user.id,
                    SPEND,
                )
            else:
                balance = await conn.fetchval(
                    "SELECT balance FROM peer_user WHERE telegram_id = $1", query.from_user.id
                )
        if done is not None:
            text = f"✅ Done: 100 bonuses spent. Balance: <b>{number(balance)}</b>."
        else:
            text = f"Not enough bonuses: you have {number(balance or 0)}, you need 100."
        await show(query, text, BACK)

    @router.callback_query(F.data == "invite")
    async def invite(query: CallbackQuery) -> None:
        async with pool.acquire() as conn:
            await balance_of(conn, query.from_user)
        link = f"https://t.me/{me.get(query.bot.id, 'bot')}?start=ref{query.from_user.id}"
        text = f"🤝 Invite friends with your personal link:\n{link}\nYou have invited 0 friends so far."
        await show(query, text, BACK)

    @router.callback_query(F.data == "birthday")
    async def birthday_ask(query: CallbackQuery, state: FSMContext) -> None:
        await state.set_state(Input.birthday)
        await query.answer()
        await query.message.answer(
            "🎂 When is your birthday? Send it as DD.MM.YYYY, e.g. 31.12.1990."
        )

    @router.message(StateFilter(Input.birthday))
    async def birthday_got(message: Message, state: FSMContext) -> None:
        import datetime

        try:
            day = datetime.datetime.strptime((message.text or "").strip(), "%d.%m.%Y").date()
        except ValueError:
            await message.answer("That is not a date I can use. Please send it as DD.MM.YYYY.")
            return
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE peer_user SET birthday = $2 WHERE telegram_id = $1",
                message.from_user.id,
                day,
            )
        await state.clear()
        await message.answer(
            f"Thank you! We will congratulate you on {day:%d.%m.%Y} 🎉", reply_markup=BACK
        )

    @router.callback_query(F.data == "remind")
    async def remind(query: CallbackQuery) -> None:
        await show(query, "OK, I will remind you in a minute. Send /start for the menu.", BACK)

    return router


async def counts_write(path: str) -> None:
    while True:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as out:
            json.dump({**COUNTS, "pid": os.getpid(), "texts": TEXTS}, out)
        os.replace(tmp, path)
        await asyncio.sleep(0.2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens-file", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--webhook-port", type=int, default=0)
    parser.add_argument("--count-file", default="")
    options = parser.parse_args()
    tokens = [t.strip() for t in open(options.tokens_file) if t.strip()]

    pool = await asyncpg.create_pool(
        options.database_url, min_size=2, max_size=10, connection_class=CountingConnection
    )
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
    COUNTS.update(statements=0, transaction_statements=0)
    # A bounded pool that waits for a free connection (the default pool raises "Too
    # many connections" under a burst).
    pool_redis = BlockingConnectionPool.from_url(
        options.redis_url, max_connections=32, timeout=None
    )
    storage = RedisStorage(Redis(connection_pool=pool_redis))
    # One HTTP session for all the bots, with room for every bot's long poll plus the
    # replies (aiohttp's default of 100 connections starves the sends of 100 bots).
    session = AiohttpSession(
        api=TelegramAPIServer.from_base(options.api), limit=2 * len(tokens) + 100
    )
    props = DefaultBotProperties(parse_mode="HTML")
    bots = [Bot(token, session=session, default=props) for token in tokens]
    me = {bot.id: f"bench_{n}_bot" for n, bot in enumerate(bots)}
    dp = Dispatcher(storage=storage)
    dp.include_router(build(pool, me))
    if options.count_file:
        asyncio.get_running_loop().create_task(counts_write(options.count_file))
    if options.webhook_port:
        from aiogram.webhook.aiohttp_server import TokenBasedRequestHandler, setup_application
        from aiohttp import web

        app = web.Application()
        TokenBasedRequestHandler(
            dispatcher=dp, bot_settings={"session": session, "default": props}
        ).register(app, path="/webhook/{bot_token}")
        setup_application(app, dp)
        await web._run_app(app, host="127.0.0.1", port=options.webhook_port, print=None)
    else:
        await dp.start_polling(*bots, polling_timeout=10, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(main())
