#!/usr/bin/env python3
"""A small sample till for the POS/CRM API (docs/api.md), standard library only.

    export BP_API=http://127.0.0.1:8000/api/v1 BP_KEY=bp_…   # manage.py createapikey
    python scripts/till_example.py identify +4915112345678
    python scripts/till_example.py earn +4915112345678 ORDER-1 24.90
    python scripts/till_example.py redeem +4915112345678 50 --order ORDER-2
    python scripts/till_example.py refund ORDER-1 [--amount 10.00]

Every write carries an Idempotency-Key derived from what it does, so running a command
again after a timeout repeats nothing: the API answers the first result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

API = os.environ.get("BP_API", "http://127.0.0.1:8000/api/v1").rstrip("/")
KEY = os.environ.get("BP_KEY", "")
if not API.startswith(("http://", "https://")):
    sys.exit("BP_API must be an http:// or https:// address")


class ApiError(Exception):
    def __init__(self, status: int, body: dict) -> None:
        self.status, self.code = status, body.get("code", "error")
        super().__init__(f"{status} {self.code}: {body.get('detail', '')}")


def call(method: str, path: str, body: dict | None = None, *, key: str | None = None) -> dict:
    """One request; retried on network errors and 5xx with the same Idempotency-Key."""
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if key:
        headers["Idempotency-Key"] = key
    for attempt in range(4):
        request = urllib.request.Request(  # noqa: S310 - API's scheme is checked above
            API + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            retryable = (
                exc.code >= 500
                or exc.code == 429
                or payload.get("code") == ("idempotency_in_progress")
            )
            if not retryable or attempt == 3:
                raise ApiError(exc.code, payload) from None
        except urllib.error.URLError:
            if attempt == 3:
                raise
        time.sleep(0.5 * 2**attempt)
    raise RuntimeError("unreachable")


def identify(phone: str) -> dict:
    query = urllib.parse.urlencode({"phone": phone})  # encodes + as %2B
    try:
        return call("GET", f"/customers?{query}")
    except ApiError as exc:
        if exc.code != "customer_not_found":
            raise
    # Not known yet: create the customer; they are linked when they share this phone
    # in the bot.
    return call("POST", "/customers", {"phone": phone}, key=f"customer:{phone}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("identify")
    p.add_argument("phone")
    p = sub.add_parser("earn")
    p.add_argument("phone")
    p.add_argument("order_id")
    p.add_argument("amount")
    p.add_argument("--currency", default="EUR")
    p = sub.add_parser("redeem")
    p.add_argument("phone")
    p.add_argument("bonuses", type=int)
    p.add_argument("--order", default="")
    p.add_argument("--store", default="Store 1")
    p = sub.add_parser("refund")
    p.add_argument("order_id")
    p.add_argument("--amount")
    p.add_argument("--refund-id", default="")
    args = parser.parse_args(argv)

    if args.command == "identify":
        customer = identify(args.phone)
        print(
            f"customer {customer['id']}: {customer['balance']} bonuses "
            f"({customer['available']} available), level {customer['level'] or '-'}"
        )
    elif args.command == "earn":
        customer = identify(args.phone)
        purchase = call(
            "POST",
            "/purchases",
            {
                "customer_id": customer["id"],
                "order_id": args.order_id,
                "amount": args.amount,
                "currency": args.currency,
            },
            key=f"purchase:{args.order_id}",
        )
        print(
            f"order {purchase['order_id']}: +{purchase['accrued']} bonuses, "
            f"balance {purchase['balance']}"
        )
    elif args.command == "redeem":
        customer = identify(args.phone)
        hold = call(
            "POST",
            "/holds",
            {
                "customer_id": customer["id"],
                "amount": args.bonuses,
                "order_id": args.order,
                "store": args.store,
            },
            key=f"hold:{args.order or customer['id']}:{args.bonuses}",
        )
        while hold["approval"] == "pending":  # the customer answers in Telegram
            print("waiting for the customer to approve in Telegram…")
            time.sleep(2)
            hold = call("GET", f"/holds/{hold['id']}")
        if hold["status"] != "held":
            print(f"not redeemed: the hold is {hold['status']} ({hold['approval']})")
            return 1
        hold = call("POST", f"/holds/{hold['id']}/confirm", {}, key=f"confirm:{hold['id']}")
        print(f"redeemed {hold['amount']} bonuses (hold {hold['id']} {hold['status']})")
    elif args.command == "refund":
        body = {"order_id": args.order_id, "refund_id": args.refund_id or f"{args.order_id}-r"}
        if args.amount:
            body["amount"] = args.amount
        refund = call("POST", "/refunds", body, key=f"refund:{body['refund_id']}")
        print(
            f"refund {refund['refund_id']}: -{refund['taken']} bonuses "
            f"(shortfall {refund['shortfall']}), balance {refund['balance']}"
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ApiError as exc:
        print(f"API error {exc}", file=sys.stderr)
        sys.exit(2)
