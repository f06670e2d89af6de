"""Queueing that never fails the caller when the broker is down, and never loses work.

Tasks queued after a commit (``transaction.on_commit(lambda: task.delay(...))``) run
after the user's data is already saved; if the broker is unreachable, ``delay`` would
raise into the request (the user sees an error for something that succeeded) and the
work would only exist in the lost message. Tasks built on :class:`BrokerSafeTask` instead:

- ``on_broker_down = "sweep"``: the work is already recorded in the database (an
  execution's due time, its pending step): log and return; the periodic sweep, or the
  sweep run when a worker starts, queues it again.
- ``on_broker_down = "inline"``: run the task in the calling process now (for work
  that is idempotent and cheap enough, e.g. handling a recorded webhook update).

(Not an outbox: "the outbox" is a journal row's stored replies,
``TelegramUpdate.actions``, see botplatform/telegram/dispatch.py.)

A circuit breaker (``broker``) keeps a dead broker from costing every caller Celery's
publish retries: after a failure, queueing is skipped for ``REDIS_BREAKER_SECONDS``.
"""

from __future__ import annotations

import logging

from celery import Task

from botplatform.breaker import breaker_for

logger = logging.getLogger("botplatform.queueing")

broker_breaker = breaker_for(
    "broker", what="Celery", fallback="tasks are not queued, their due work stays in the database"
)


def _broker_errors() -> tuple[type[BaseException], ...]:
    import kombu.exceptions
    import redis.exceptions

    return (
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,
        TimeoutError,
        OSError,
    )


class BrokerSafeTask(Task):
    """A Celery task whose ``apply_async`` survives an unreachable broker."""

    abstract = True
    on_broker_down = "sweep"

    def apply_async(self, args=None, kwargs=None, **options):
        if self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, **options)
        if broker_breaker.allow():
            try:
                result = super().apply_async(args, kwargs, **options)
            except _broker_errors() as exc:
                broker_breaker.failure(exc)
            else:
                broker_breaker.success()
                broker_breaker.flush_pending = False
                return result
        if self.on_broker_down == "inline":
            logger.warning("Broker unreachable: running %s in this process", self.name)
            self.run(*(args or ()), **(kwargs or {}))
            return None
        logger.warning(
            "Broker unreachable: %s%s not queued; the database keeps it due for the sweep",
            self.name,
            tuple(args or ()),
        )
        return None


class InlineFallbackTask(BrokerSafeTask):
    """An :class:`BrokerSafeTask` that runs in the caller when the broker is unreachable."""

    abstract = True
    on_broker_down = "inline"


def task_named(name: str) -> Task:
    """The registered task called ``name``, to queue it (with its broker-down rules)
    from the module whose work it runs: that module need not import the tasks module,
    which imports it back."""
    from botplatform.celery import app

    if name not in app.tasks:  # outside a worker nothing imported the tasks modules yet
        app.loader.import_default_modules()  # the apps' ``tasks`` (autodiscovery)
    return app.tasks[name]
