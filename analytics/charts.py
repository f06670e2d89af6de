"""Server-side SVG charts: titled, with axes, ticks and units; no JavaScript, offline."""

from __future__ import annotations

from datetime import date
from xml.sax.saxutils import escape

from django.utils.safestring import SafeString, mark_safe

W, H, LEFT, RIGHT, TOP, BOTTOM = 640, 236, 64, 16, 50, 40
COLORS = ("#417690", "#c0392b", "#27ae60", "#8e44ad")


def _ticks(top: float) -> list[float]:
    """Three to five round values from 0 to at least ``top``."""
    if top <= 0:
        return [0, 1]
    magnitude = 10 ** (len(str(int(top))) - 1)
    for step in (magnitude / 5, magnitude / 2, magnitude, magnitude * 2, magnitude * 5):
        if step and top / step <= 5:
            break
    step = max(step, 1)
    ticks, value = [], 0.0
    while value < top + step:
        ticks.append(value)
        if value >= top:
            break
        value += step
    return ticks


def _number(value: float) -> str:
    value = float(value)
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def time_chart(
    days: list[date],
    series: list[tuple[str, list[float]]],
    *,
    title: str,
    unit: str,
    bars: bool = False,
) -> SafeString:
    """A chart of one or more daily series: x = days, y = ``unit``."""
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    values = [v for _name, vs in series for v in vs if v is not None]
    ticks = _ticks(max(values, default=0))
    top = ticks[-1] or 1
    n = max(len(days), 1)
    slot = plot_w / n
    label = escape(f"{title} ({unit})")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{label}" class="analytics-chart" font-family="sans-serif" '
        f'font-size="11"><title>{label}</title>',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<text x="8" y="{TOP - 6}" fill="#555">{escape(unit)}</text>',
    ]
    for tick in ticks:
        y = TOP + plot_h - tick / top * plot_h
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(tick)}</text>'
        )
    base = TOP + plot_h
    parts.append(f'<line x1="{LEFT}" y1="{base}" x2="{W - RIGHT}" y2="{base}" stroke="#777"/>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#777"/>')
    marks = sorted({0, n // 2, n - 1}) if days else []
    for i in marks:
        x = LEFT + slot * (i + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle">{days[i]:%d %b}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{H - 4}" text-anchor="middle" fill="#555">'
        "day (UTC)</text>"
    )
    for k, (name, vs) in enumerate(series):
        color = COLORS[k % len(COLORS)]
        if bars:
            width = max(slot / len(series) - 1, 1)
            for i, v in enumerate(vs):
                h = (v or 0) / top * plot_h
                x = LEFT + slot * i + width * k
                parts.append(
                    f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{width:.1f}" '
                    f'height="{h:.1f}" fill="{color}"><title>{days[i]:%d %b}: '
                    f"{_number(v or 0)} {escape(unit)}</title></rect>"
                )
        else:
            points = " ".join(
                f"{LEFT + slot * (i + 0.5):.1f},{base - (v or 0) / top * plot_h:.1f}"
                for i, v in enumerate(vs)
            )
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>'
            )
        lx = LEFT + 110 * k
        parts.append(
            f'<rect x="{lx}" y="24" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="33">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped
