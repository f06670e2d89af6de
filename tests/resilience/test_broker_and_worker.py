"""The broker unreachable when a step is queued; a Celery worker SIGKILLed mid-task."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from botplatform.breaker import breakers_reset
from botplatform.celery import app
from devtools.telegram_double import TelegramDouble
from tests.factories import bot_create, bot_user_create, project_create
from tests.resilience.servers import RedisServer, free_port
from tests.resilience.test_conversation_and_state import assert_each_step_ran_once
from tests.workflows.conftest import command, publish, texts
from users.models import BonusTransaction
from workflows import services, tasks
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


class SlowService:
    """An HTTP endpoint whose first request hangs (until the worker running it dies)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                service.calls += 1
                if service.calls == 1:
                    service.first_arrived.set()
                    service.release.wait(30)
                body = json.dumps({"data": {"points": 7}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller is gone

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/points"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def http_workflow(url: str) -> dict:
    return {
        "start": "call",
        "steps": {
            "call": {
                "type": "http_request",
                "method": "POST",
                "url": url,
                "timeout": 20,
                "retries": 0,
                "save": {"points": "data.points"},
                "on_success": "earn",
                "on_failure": "failed",
            },
            "earn": {"type": "bonus", "operation": "earn", "amount": 7, "next": "done"},
            "done": {"type": "message", "text": "You got {{ vars.points }} points"},
            "failed": {"type": "message", "text": "The service is unavailable"},
        },
    }


@pytest.fixture
def service():
    server = SlowService()
    yield server
    server.stop()


@pytest.fixture
def dead_broker():
    """Celery publishes to a port where nothing listens (then back to in-process)."""
    breakers_reset()
    app.conf.task_always_eager = False
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    app._pool = None
    app.amqp._producer_pool = None
    yield
    app.conf.task_always_eager = True
    app.conf.broker_url = "memory://"
    app._pool = None
    app.amqp._producer_pool = None
    breakers_reset()


def test_a_step_that_cannot_be_queued_is_not_lost_and_the_user_gets_an_answer(
    dead_broker, service, settings, caplog, delivery_to
):
    from tests.workflows.conftest import DELIVERED, record_delivery

    delivery_to(record_delivery)
    DELIVERED.clear()
    project = project_create(allow_private_http=True)
    ann, bob = bot_user_create(project=project), bot_user_create(project=project)
    publish(project, http_workflow(service.url))
    service.release.set()

    result = command(ann, "start")  # the request completes although queueing failed
    assert texts(result) == []
    assert "Broker unreachable" in caplog.text
    execution = WorkflowExecution.objects.get()
    assert execution.status == "running" and execution.context["pending"]["kind"] == "http"
    assert service.calls == 0
    command(bob, "start")  # the breaker is open now: not even a connection attempt
    outage_lines = [r for r in caplog.records if r.name == "botplatform.breaker"]
    assert len(outage_lines) == 1 and "Celery broker unreachable" in outage_lines[0].getMessage()

    # The broker is back (in-process here); the sweep finds the due work in the database.
    app.conf.task_always_eager = True
    WorkflowExecution.objects.update(wait_until=timezone.now() - timedelta(seconds=1))
    tasks.executions_sweep()
    assert service.calls == 2
    done = [a.text for d in DELIVERED for a in d["actions"] if hasattr(a, "text")]
    assert done == ["You got 7 points"] * 2
    assert BonusTransaction.objects.filter(user__in=[ann, bob]).count() == 2
    DELIVERED.clear()


class Worker:
    def __init__(self, env: dict, log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "botplatform",
                "worker",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def test_a_worker_killed_mid_task_leaves_the_step_redone_once(service, tmp_path, monkeypatch):
    broker = RedisServer().start()
    double = TelegramDouble().start()
    workers: list[Worker] = []
    try:
        project = project_create(allow_private_http=True)
        bot = bot_create(project=project)
        double.bot_add(bot.token, bot.username)
        user = bot_user_create(project=project)
        publish(project, http_workflow(service.url))
        queued: list[tuple] = []
        stub = SimpleNamespace(apply_async=lambda args, **options: queued.append(tuple(args)))
        # The services queue the engine's work by task name: queued by hand below.
        monkeypatch.setattr(services, "task_named", lambda name: stub)
        command(user, "start", bot=bot)
        [(execution_id, seq)] = queued

        db = django_settings.DATABASES["default"]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "botplatform.settings_test",
            "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{connection.settings_dict['NAME']}",
            "TEST_CELERY_BROKER_URL": broker.url,
            "CELERY_VISIBILITY_TIMEOUT": "1",
            "CELERY_UNACKED_RESTORE_INTERVAL": "1",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            "TELEGRAM_API_URL": double.url,
            "TELEGRAM_CHAT_SEND_WINDOW_MS": "300",
        }
        workers.append(Worker(env, tmp_path / "worker-a.log"))
        # Not the current app: shared tasks of this process stay bound to botplatform's.
        sender = Celery("sender", broker=broker.url, set_as_current=False)
        sender.send_task("workflows.tasks.http_request_run", args=[execution_id, seq])
        sender.close()
        assert service.first_arrived.wait(45), workers[0].output()

        workers[0].proc.send_signal(signal.SIGKILL)  # mid-request, before any ack
        workers[0].proc.wait(10)
        assert double.sent_texts(bot.token) == []

        workers.append(Worker(env, tmp_path / "worker-b.log"))
        assert double.wait_for(lambda: double.sent_texts(bot.token), timeout=45), workers[
            1
        ].output()
        # Give a duplicate every chance to show up before counting.
        double.wait_for(lambda: len(double.sent_texts(bot.token)) > 1, timeout=2)
        assert double.sent_texts(bot.token) == ["You got 7 points"]
        assert service.calls == 2  # the killed attempt and exactly one redo
        execution = WorkflowExecution.objects.get(pk=execution_id)
        assert execution.status == "completed"
        assert BonusTransaction.objects.filter(user=user, kind="earn").count() == 1
        assert_each_step_ran_once(pausing={"call"})
    finally:
        for worker in workers:
            worker.stop(signal.SIGKILL if worker is workers[0] else signal.SIGTERM)
        double.stop()
        broker.stop()


def test_webhook_updates_are_handled_in_process_when_the_broker_is_down(
    dead_broker, client, settings
):
    """TELEGRAM_WEBHOOK_ASYNC hands updates to Celery after the insert commits; with the
    broker gone the update is handled right there instead of being left pending."""
    from botplatform.models import TelegramUpdate
    from tests.botplatform.telegram.conftest import ECHO

    settings.TELEGRAM_WEBHOOK_ASYNC = True
    settings.TELEGRAM_EVENT_HANDLER = ECHO
    settings.TELEGRAM_CHAT_SEND_WINDOW_MS = 300
    double = TelegramDouble().start()
    settings.TELEGRAM_API_URL = double.url
    try:
        bot = bot_create()
        double.bot_add(bot.token, bot.username)
        update = double.message(bot.token, 807, "no broker")
        response = client.post(
            f"/telegram/webhook/{bot.pk}/",
            data=json.dumps(update),
            content_type="application/json",
            HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN=bot.webhook_secret,
        )
        assert response.status_code == 200
        assert double.sent_texts(bot.token) == ["echo:no broker"]
        assert TelegramUpdate.objects.get().status == TelegramUpdate.Status.DONE
    finally:
        double.stop()


def test_a_broadcast_started_while_the_broker_is_down_goes_out_once_it_is_back(
    dead_broker, settings, delivery_to
):
    from tests.admin.conftest import RECORDED, record_telegram
    from workflows import broadcasts
    from workflows.models import Broadcast

    delivery_to(record_telegram)
    RECORDED.clear()
    project = project_create()
    bot_create(project=project)
    users = [bot_user_create(project=project) for _ in range(3)]
    broadcast = Broadcast.objects.create(project=project, title="News", text="Hi", segment="all")

    # "Send now" while nothing can be queued: the request succeeds, nothing is lost.
    assert broadcasts.broadcast_start(broadcast_id=broadcast.pk) is True
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.total, broadcast.sent) == ("sending", 3, 0)
    assert broadcast.deliveries.filter(status="pending").count() == 3
    assert RECORDED == []

    # The broker is back (tasks run in-process again): the periodic task revives it.
    app.conf.task_always_eager = True
    breakers_reset()
    broadcasts.broadcasts_due()
    broadcasts.broadcasts_due()
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.sent) == ("done", 3)
    assert sorted(sent["chat_id"] for sent in RECORDED) == sorted(u.chat_id for u in users)
