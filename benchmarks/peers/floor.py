"""The floor: the least a bot can do per message and still be a bot with state and a
ledger. Plain asyncio and aiohttp long polling, per update one Redis GET (the user's
state), one SQL statement (read or move the balance) and one Bot API call (the
reply). No framework, no FSM, no retries: what the others are measured against.

    floor.py --tokens-file F --api URL --database-url DSN --redis-url URL [--count-file F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from refbot import BACK, MENU, SCHEMA, number, welcome_text

COUNTS = {"statements": 0, "transaction_statements": 0}
MENU_JSON = MENU.model_dump_json(exclude_none=True)
BACK_JSON = BACK.model_dump_json(exclude_none=True)


async def handle(update: dict, *, token, api, http, pool, redis) -> None:
    message = update.get("message")
    query = update.get("callback_query")
    user = (message or query)["from"]
    await redis.get(f"floor:state:{user['id']}")  # the FSM read every framework does
    COUNTS["statements"] += 1
    data = query["data"] if query else "start"
    if data == "spend":
        balance = await pool.fetchval(
            "UPDATE peer_user SET balance = balance - 100 WHERE telegram_id = $1 "
            "AND balance >= 100 RETURNING balance",
            user["id"],
        )
        text = (
            f"✅ Done: 100 bonuses spent. Balance: <b>{number(balance)}</b>."
            if balance is not None
            else "Not enough bonuses: you have 0, you need 100."
        )
        markup = BACK_JSON
    else:
        balance = await pool.fetchval(
            "INSERT INTO peer_user (telegram_id, first_name, balance) VALUES ($1, $2, 100) "
            "ON CONFLICT (telegram_id) DO UPDATE SET first_name = EXCLUDED.first_name "
            "RETURNING balance",
            user["id"],
            user.get("first_name", ""),
        )
        if data in ("start", "welcome"):
            text, markup = welcome_text(user.get("first_name", ""), balance), MENU_JSON
        elif data == "history":
            text, markup = "📜 Your last operations:\nNo operations yet.", BACK_JSON
        else:
            text = f"💰 Your balance: <b>{number(balance)}</b> bonuses.\nLevel: —."
            markup = BACK_JSON
    body = {"chat_id": user["id"], "text": text, "parse_mode": "HTML", "reply_markup": markup}
    if query:
        body["message_id"] = query["message"]["message_id"]
        method = "editMessageText"
    else:
        method = "sendMessage"
    async with http.post(f"{api}/bot{token}/{method}", json=body) as response:
        await response.read()


async def poll(token: str, **deps) -> None:
    offset = 0
    http, api = deps["http"], deps["api"]
    while True:
        async with http.post(
            f"{api}/bot{token}/getUpdates", json={"offset": offset, "timeout": 10}
        ) as response:
            updates = (await response.json())["result"]
        for update in updates:
            offset = update["update_id"] + 1
            asyncio.get_running_loop().create_task(handle(update, token=token, **deps))


async def counts_write(path: str) -> None:
    while True:
        with open(f"{path}.tmp", "w") as out:
            json.dump({**COUNTS, "pid": os.getpid()}, out)
        os.replace(f"{path}.tmp", path)
        await asyncio.sleep(0.2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens-file", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--count-file", default="")
    options = parser.parse_args()
    tokens = [t.strip() for t in open(options.tokens_file) if t.strip()]
    pool = await asyncpg.create_pool(options.database_url, min_size=2, max_size=10)
    await pool.execute(SCHEMA)
    redis = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            options.redis_url, max_connections=32, timeout=None
        )
    )
    if options.count_file:
        asyncio.get_running_loop().create_task(counts_write(options.count_file))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        deps = {"api": options.api, "http": http, "pool": pool, "redis": redis}
        await asyncio.gather(*(poll(token, **deps) for token in tokens))


if __name__ == "__main__":
    asyncio.run(main())
