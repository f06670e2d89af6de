"""Developer tools (the benchmark, the Bot API double) live apart from runtime code.

``devtools/`` sits beside the runtime packages; nothing in ``botplatform``,
``workflows`` or ``users`` imports it (every import, also inside functions, and dotted
paths in strings such as settings), except ``manage.py bench``, which imports it only
when it runs, so production images can leave ``devtools/`` out.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("botplatform", "workflows", "users")
BENCH_COMMAND = Path("botplatform/management/commands/bench.py")


def _is_devtools(dotted: str | None) -> bool:
    return bool(dotted) and (dotted == "devtools" or dotted.startswith("devtools."))


def devtools_references(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every import of devtools and every ``"devtools..."`` string."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_devtools(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_devtools(node.module):
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _is_devtools(node.value.strip())  # import_module("devtools.x"), settings
        ):
            found.append((node.lineno, node.value))
    return found


def runtime_modules() -> list[Path]:
    return sorted(p for pkg in RUNTIME_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_the_runtime_packages_are_walked():
    """Guards the guard: the walk finds the modules it is meant to check."""
    names = {p.relative_to(ROOT).as_posix() for p in runtime_modules()}
    assert {"botplatform/metrics.py", "workflows/engine/execution.py", "users/ledger.py"} <= names
    assert BENCH_COMMAND.as_posix() in names


def test_no_runtime_module_imports_the_developer_tools():
    offenders = []
    for path in runtime_modules():
        relative = path.relative_to(ROOT)
        if relative == BENCH_COMMAND:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders += [f"{relative}:{line} {what}" for line, what in devtools_references(tree)]
    assert offenders == []


def test_the_bench_command_imports_the_benchmark_only_when_it_runs():
    tree = ast.parse((ROOT / BENCH_COMMAND).read_text(encoding="utf-8"))
    module_level = ast.Module(
        body=[n for n in tree.body if not isinstance(n, ast.ClassDef)], type_ignores=[]
    )
    assert devtools_references(module_level) == []
    (command,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    handle = next(n for n in command.body if getattr(n, "name", "") == "handle")
    assert "devtools.bench" in {what for _, what in devtools_references(handle)}


def test_the_benchmark_and_the_double_are_no_longer_in_the_runtime_packages():
    for old in ("botplatform.bench", "botplatform.telegram.double"):
        assert importlib.util.find_spec(old) is None, old
    for new in ("devtools.bench", "devtools.telegram_double"):
        assert importlib.util.find_spec(new) is not None, new


def test_importing_the_runtime_loads_no_developer_tool():
    """Settings, URLs, every app and the bench command load without devtools."""
    code = (
        "import sys, django; django.setup();"
        "import botplatform.urls, botplatform.celery, botplatform.telegram.batch;"
        "import botplatform.management.commands.bench, workflows.services, users.ledger;"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'devtools');"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "botplatform.settings_test"}
    result = subprocess.run(  # a fresh interpreter: this one has loaded the double
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bench_without_the_developer_tools_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "devtools.bench", None)  # as if not shipped
    with pytest.raises(CommandError, match="developer tools"):
        call_command("bench", "--users", "1", "--bots", "1", "--concurrency", "1")
