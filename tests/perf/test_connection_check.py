"""The runner's chat workers tidy connections at most once a second, not per update
(each tidy-up makes Django ping PostgreSQL before the next query)."""

from __future__ import annotations

from botplatform.telegram import lanes as runner


def test_connection_check_runs_once_per_interval_unless_forced(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "close_old_connections", lambda: calls.append(1))
    check = runner.ConnectionCheck(interval=3600)
    for _ in range(50):
        check()
    assert len(calls) == 1
    check(force=True)
    assert len(calls) == 2
    zero = runner.ConnectionCheck(interval=0)
    zero()
    zero()
    assert len(calls) == 4
