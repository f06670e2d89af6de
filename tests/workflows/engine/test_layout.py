"""The engine's modules each do one job and stay small enough to read in one sitting."""

from __future__ import annotations

from pathlib import Path

ENGINE = Path(__file__).resolve().parents[3] / "workflows" / "engine"


def test_no_engine_module_is_over_600_lines():
    long = {
        path.relative_to(ENGINE).as_posix(): lines
        for path in ENGINE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 600
    }
    assert long == {}


def test_the_engine_has_no_module_named_like_the_telegram_runner():
    """botplatform/telegram/runner.py is the polling runner; the engine's step loop is
    workflows/engine/execution.py."""
    assert not (ENGINE / "runner.py").exists()
