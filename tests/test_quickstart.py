"""scripts/quickstart.sh from a fresh clone: the web admin and the bot runner together.

The clone gets the embedded default (SQLite file, no Redis, no broker), the Bot API
double as Telegram, and the shared virtualenv (no package download). A user writes
/start and the demo bot answers; Ctrl-C (SIGINT to the whole foreground process
group, as a terminal sends it) leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from devtools.telegram_double import TelegramDouble

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "777001:AAH" + "q" * 32
CHAT = 515151
# The test process's own settings must not leak into the clone.
DROP = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "BOT_TOKEN_KEYS",
    "SECURE_SSL_REDIRECT",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _clone(tmp_path: Path) -> Path:
    """A fresh clone of the commit under test (a detached worktree's too)."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, capture_output=True, check=True
    ).stdout.strip()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
    (clone / ".venv").symlink_to((ROOT / ".venv").resolve())
    return clone


def test_quickstart_from_a_fresh_clone_answers_and_stops_on_ctrl_c(tmp_path):
    clone = _clone(tmp_path)
    double = TelegramDouble().start()
    double.bot_add(TOKEN, "quick_demo_bot")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in DROP and not k.startswith("TEST_")}
    env.update(
        QUICKSTART_SKIP_INSTALL="1",
        PORT=str(port),
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_URL=double.url,
        TELEGRAM_POLL_TIMEOUT="1",
        ADMIN_PASSWORD="quick-start-password",
    )
    log_path = tmp_path / "quickstart.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", "scripts/quickstart.sh"],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's job
        )
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and _get(f"http://127.0.0.1:{port}/healthz") is None:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            time.sleep(0.5)
        assert _get(f"http://127.0.0.1:{port}/admin/login/") == 200, log_path.read_text()
        assert (clone / "db.sqlite3").exists()  # the embedded default, in the clone

        double.command(TOKEN, CHAT, "/start")
        assert double.wait_for(
            lambda: any("Welcome" in t for t in double.sent_texts(TOKEN, CHAT)), timeout=60
        ), log_path.read_text(errors="replace")

        os.killpg(pgid, signal.SIGINT)  # Ctrl-C
        # Raises TimeoutExpired if Ctrl-C does not stop it; the exit code of a stop by
        # Ctrl-C is not the point.
        proc.wait(60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        assert not _group_alive(pgid), subprocess.run(
            ["ps", "-o", "pid,args", "-g", str(pgid)], capture_output=True, text=True
        ).stdout
        assert _get(f"http://127.0.0.1:{port}/healthz") is None
        output = log_path.read_text(errors="replace")
        assert "Stopping the web admin and the bot runner" in output
        assert TOKEN not in output
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        double.stop()
