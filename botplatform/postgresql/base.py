"""Django's PostgreSQL backend, with its connection health check at most once per
``DATABASE_HEALTH_CHECK_INTERVAL`` seconds a connection (default 1).

With ``CONN_HEALTH_CHECKS`` Django pings the server (``SELECT 1``) before the first
query of every request: a round trip a webhook request, about 2 % of its CPU. Here a
connection checked less than the interval ago counts as checked. What that gives up:
a connection the server dropped within that interval fails the one request that
finds it (the webhook answers 503 and Telegram delivers again; the journal's unique
update id makes that safe), and Django replaces it after the error, as with health
checks off. A connection that saw an error is still checked at the next request
(Django's own rule, ``close_if_unusable_or_obsolete``). ``0`` checks before every
request, as Django does.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    # (the driver's connection last checked, when): a new connection is checked anew
    _checked: tuple[object, float] = (None, 0.0)

    def close_if_health_check_failed(self) -> None:
        if self.connection is None or not self.health_check_enabled or self.health_check_done:
            return
        now = time.monotonic()
        checked, checked_at = self._checked
        interval = getattr(settings, "DATABASE_HEALTH_CHECK_INTERVAL", 0)
        if interval > 0 and checked is self.connection and now - checked_at < interval:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
        self._checked = (self.connection, now)
