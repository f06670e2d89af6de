"""The issue's "done when": scripts/till_example.py, with nothing but the documented API
and a key from createapikey, identifies a customer by phone, accrues, redeems and
refunds against a live server, and running a step again repeats nothing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.api.helpers import project_with_rules
from users.models import BonusTransaction, BotUser

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_sample_till_does_the_whole_flow(live_server):
    project_with_rules(slug="till-shop")
    out = io.StringIO()
    call_command(
        "createapikey",
        "--project",
        "till-shop",
        "--scopes",
        "read,accrue,redeem",
        stdout=out,
        stderr=io.StringIO(),
    )
    env = {**os.environ, "BP_API": f"{live_server.url}/api/v1", "BP_KEY": out.getvalue().strip()}

    def till(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "till_example.py"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "0 bonuses" in till("identify", "+4915112345678")
    assert "+50 bonuses, balance 50" in till("earn", "+4915112345678", "ORDER-1", "1000.00")
    assert "+50 bonuses, balance 50" in till("earn", "+4915112345678", "ORDER-1", "1000.00")
    assert "redeemed 20 bonuses" in till("redeem", "+4915112345678", "20", "--order", "ORDER-2")
    assert "-30 bonuses (shortfall 20), balance 0" in till("refund", "ORDER-1")
    customer = BotUser.objects.get(phone="+4915112345678")
    assert customer.balance == 0
    kinds = sorted(BonusTransaction.objects.filter(user=customer).values_list("kind", "amount"))
    assert kinds == [("clawback", -30), ("earn", 50), ("spend", -20)]
