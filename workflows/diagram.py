"""The workflow graph as an SVG, drawn on the server (no JavaScript, no internet).

Steps are boxes laid out in layers by their distance from the start step; every
``next``, button, branch and timeout is an arrow labelled with what leads there.
Unreachable steps sit in a last row, outlined in red, as publishing would refuse them.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from workflows.engine.steps import STEP_TYPES

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 54, 40, 70, 20
COLORS = {
    "message": "#e3f2fd",
    "input": "#fff3e0",
    "condition": "#f3e5f5",
    "set_variable": "#e8f5e9",
    "bonus": "#fffde7",
    "http_request": "#e0f7fa",
    "delay": "#eceff1",
    "start_workflow": "#fce4ec",
    "show_card": "#ede7f6",
    "end": "#f5f5f5",
}


def _edges(steps: dict) -> list[tuple[str, str, str]]:
    """(from, to, label) for every reference between steps."""
    edges = []
    for step_id, step in steps.items():
        handler = STEP_TYPES.get(step.get("type")) if isinstance(step, dict) else None
        if handler is None:
            continue
        branch_labels = {}
        for number, branch in enumerate(step.get("branches") or [], start=1):
            if isinstance(branch, dict):
                branch_labels[number] = str(branch.get("if", ""))
        for where, target in handler.targets(step):
            if not isinstance(target, str):
                continue
            label = where
            if where.startswith("button"):
                label = where.split("(", 1)[-1].rstrip(")").strip("'") if "(" in where else where
            elif where.startswith("branch"):
                digits = "".join(ch for ch in where if "0" <= ch <= "9")
                label = f"if {branch_labels.get(int(digits), '')}" if digits else where
            elif where == "next":
                label = ""
            edges.append((step_id, target, label))
    return edges


def _layers(start: str, steps: dict, edges: list) -> tuple[list[list[str]], set[str]]:
    depth = {start: 0} if start in steps else {}
    frontier = [start] if start in steps else []
    adjacency: dict[str, list[str]] = {}
    for source, target, _ in edges:
        adjacency.setdefault(source, []).append(target)
    while frontier:
        following = []
        for node in frontier:
            for target in adjacency.get(node, []):
                if target in steps and target not in depth:
                    depth[target] = depth[node] + 1
                    following.append(target)
        frontier = following
    layers: list[list[str]] = []
    for step_id in steps:
        if step_id in depth:
            while len(layers) <= depth[step_id]:
                layers.append([])
            layers[depth[step_id]].append(step_id)
    unreachable = [step_id for step_id in steps if step_id not in depth]
    if unreachable:
        layers.append(unreachable)
    return layers, set(depth)


def _short(text: Any, limit: int) -> str:
    text = " ".join(re.sub(r"<[^>]+>", "", str(text or "")).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def diagram_svg(definition: Any) -> SafeString:
    """An SVG of the definition (a short note instead when it is not a graph yet)."""
    if not isinstance(definition, dict) or not isinstance(definition.get("steps"), dict):
        return mark_safe("<p>The definition has no steps to draw.</p>")
    steps = {k: v for k, v in definition["steps"].items() if isinstance(v, dict)}
    if not steps:
        return mark_safe("<p>The definition has no steps to draw.</p>")
    start = definition.get("start", "")
    edges = _edges(steps)
    layers, reachable = _layers(start, steps, edges)
    widest = max(len(layer) for layer in layers)
    width = MARGIN * 2 + widest * BOX_W + (widest - 1) * GAP_X
    height = MARGIN * 2 + len(layers) * BOX_H + (len(layers) - 1) * GAP_Y
    position: dict[str, tuple[float, float]] = {}
    for row, layer in enumerate(layers):
        offset = (width - (len(layer) * BOX_W + (len(layer) - 1) * GAP_X)) / 2
        for column, node in enumerate(layer):
            position[node] = (offset + column * (BOX_W + GAP_X), MARGIN + row * (BOX_H + GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-diagram" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="Workflow diagram" font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker></defs>',
    ]
    for source, target, label in edges:
        if source not in position:
            continue
        sx, sy = position[source]
        if target not in position:
            x1, y1 = sx + BOX_W / 2, sy + BOX_H
            parts.append(
                f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x1:.0f}" y2="{y1 + 25:.0f}" '
                'stroke="#c62828" stroke-dasharray="4 3" marker-end="url(#arrow)"/>'
                f'<text x="{x1 + 4:.0f}" y="{y1 + 22:.0f}" fill="#c62828">'
                f"{escape(_short('missing: ' + target, 28))}</text>"
            )
            continue
        tx, ty = position[target]
        x1, x2 = sx + BOX_W / 2, tx + BOX_W / 2
        if ty > sy:
            y1, y2 = sy + BOX_H, ty
            path = f"M {x1:.0f} {y1:.0f} C {x1:.0f} {y1 + 35:.0f}, {x2:.0f} {y2 - 35:.0f}, {x2:.0f} {y2:.0f}"
        else:  # back or sideways edge: bend around the right side
            x1, x2 = sx + BOX_W, tx + BOX_W
            y1, y2 = sy + BOX_H / 2, ty + BOX_H / 2
            bend = max(x1, x2) + 40
            path = (
                f"M {x1:.0f} {y1:.0f} C {bend:.0f} {y1:.0f}, {bend:.0f} {y2:.0f}, {x2:.0f} {y2:.0f}"
            )
        parts.append(
            f'<path class="edge" data-from="{escape(source)}" data-to="{escape(target)}" '
            f'd="{path}" fill="none" stroke="#555" marker-end="url(#arrow)"/>'
        )
        if label:
            lx, ly = (x1 + x2) / 2, (y1 + y2) / 2
            parts.append(
                f'<text x="{lx + 4:.0f}" y="{ly:.0f}" fill="#1a237e" '
                f'paint-order="stroke" stroke="#fff" stroke-width="3">'
                f"{escape(_short(label, 26))}</text>"
            )
    for node, (x, y) in position.items():
        step = steps[node]
        kind = step.get("type", "?")
        stroke = "#c62828" if node not in reachable else ("#2e7d32" if node == start else "#666")
        width_px = 3 if node == start or node not in reachable else 1
        summary = _short(step.get("text") or step.get("url") or step.get("workflow") or "", 30)
        parts.append(
            f'<g class="step" data-step="{escape(node)}">'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="8" '
            f'fill="{COLORS.get(kind, "#fff")}" stroke="{stroke}" stroke-width="{width_px}"/>'
            f'<text x="{x + 8:.0f}" y="{y + 18:.0f}" font-weight="bold">'
            f"{escape(_short(node, 24))}</text>"
            f'<text x="{x + 8:.0f}" y="{y + 33:.0f}" fill="#555">{escape(kind)}'
            f"{' · start' if node == start else ''}"
            f"{' · unreachable' if node not in reachable else ''}</text>"
            f'<text x="{x + 8:.0f}" y="{y + 48:.0f}">{escape(summary)}</text></g>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every value above is escaped
