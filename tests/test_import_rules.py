"""The architecture's import rules (docs/architecture.md), checked on every module.

Every ``import`` and ``from … import`` counts, also inside functions. A violation that
could not be removed yet is listed in :data:`ALLOWED` with the reason; the test fails
on any new violation AND when a listed one disappears, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("botplatform", "workflows", "users", "analytics")

INFRASTRUCTURE = [
    f"botplatform.{name}"
    for name in (
        "cache",
        "cache_backend",
        "locks",
        "ratelimit",
        "breaker",
        "metrics",
        "env",
        "logging",
        "queueing",
        "periodic",
        "heartbeat",
        "conversation",
    )
]

# (rule, importer, imported) -> why it is still there.
ALLOWED: dict[tuple[str, str, str], str] = {}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from x import y`` counts x.y too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _modules() -> dict[str, set[str]]:
    result = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            module = _module_name(path)
            result[module] = _imports(path, module)
    return result


def _is_model_module(module: str) -> bool:
    return module.endswith(".models") or ".models." in module


# The vocabulary shared by transport and application (botplatform/conversation.py).
VOCABULARY = ("Action", "AnswerCallback", "Button", "EditMessage", "EventKind", "InputEvent")
VOCABULARY += ("SendMessage", "actions_to_json", "actions_from_json")


RULES = {
    "transport imports neither the engine nor users": (
        lambda m: _under(m, "botplatform.telegram"),
        ("workflows.engine", "users"),
    ),
    "transport reaches the application only through the handler setting": (
        lambda m: _under(m, "botplatform.telegram"),
        ("workflows",),
    ),
    "the engine imports no transport, tasks, services, broadcasts or admin": (
        lambda m: _under(m, "workflows.engine"),
        (
            "botplatform.telegram",
            "workflows.tasks",
            "workflows.services",
            "workflows.broadcasts",
            "workflows.admin",
            "django.contrib.admin",
        ),
    ),
    "users never imports the engine": (
        lambda m: _under(m, "users"),
        ("workflows.engine",),
    ),
    "models import no services, selectors or engine": (
        _is_model_module,
        (
            "workflows.engine",
            "workflows.services",
            "users.ledger",
            "users.botusers",
            "users.referrals",
            "users.variables",
            "users.invalidation",
            "users.selectors",
        ),
    ),
    "analytics only reads: no engine, services, transport or admin of the others": (
        lambda m: _under(m, "analytics"),
        (
            "workflows.engine",
            "workflows.services",
            "workflows.tasks",
            "workflows.broadcasts",
            "workflows.admin",
            "users.ledger",
            "users.botusers",
            "users.referrals",
            "users.variables",
            "users.purchases",
            "users.holds",
            "users.customers",
            "users.admin",
            "botplatform.telegram",
        ),
    ),
    "infrastructure imports nothing from workflows or users": (
        lambda m: any(_under(m, infra) for infra in INFRASTRUCTURE),
        ("workflows", "users"),
    ),
    "the shared vocabulary is imported from botplatform.conversation, never re-exported": (
        lambda m: True,
        tuple(
            f"{module}.{name}"
            for module in ("workflows.engine.events", "workflows.engine", "workflows.services")
            for name in VOCABULARY
        ),
    ),
}


def _violations() -> set[tuple[str, str, str]]:
    found = set()
    for module, imported in _modules().items():
        for rule, (applies, forbidden) in RULES.items():
            if not applies(module):
                continue
            for name in imported:
                for prefix in forbidden:
                    if _under(name, prefix):
                        found.add((rule, module, prefix))
    return found


def test_the_import_rules_hold():
    new = sorted(_violations() - set(ALLOWED))
    assert not new, "Import rule broken (docs/architecture.md):\n" + "\n".join(
        f"  {module} imports {target}: {rule}" for rule, module, target in new
    )


def test_the_allowlist_only_shrinks():
    gone = sorted(set(ALLOWED) - _violations())
    assert not gone, "Fixed, so remove from ALLOWED:\n" + "\n".join(map(str, gone))


def _cycles(modules: dict[str, set[str]], prefix: str) -> list[list[str]]:
    """The import cycles among the modules under ``prefix`` (Tarjan's SCCs)."""
    graph = {
        module: {name if name in modules else name.rpartition(".")[0] for name in imported}
        & set(modules) - {module}
        for module, imported in modules.items()
        if _under(module, prefix)
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, ()):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_transport_has_no_import_cycles():
    """dispatch, sender and tasks imported each other; the transport is a clean stack."""
    assert _cycles(_modules(), "botplatform") == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "def f():\n    from users.models import BotUser\n    import workflows.engine\n"
    )
    assert {"users.models", "users.models.BotUser", "workflows.engine"} <= _imports(
        source, "botplatform.telegram.probe"
    )
