"""The dashboard's date range: day, week, month or custom, and the period before it.

Read from the query string of a page an operator may have typed by hand, so every
value is checked: a bad one gives a clear message and the default range, never an
error page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

KINDS = {"day": "Day", "week": "Week", "month": "Month", "custom": "Custom"}
MAX_DAYS = 731  # two years: enough for a year-on-year look, bounded work per page
EARLIEST = date(2000, 1, 1)


@dataclass(frozen=True)
class Period:
    kind: str
    start: date
    end: date  # inclusive
    problem: str = ""

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def previous(self) -> Period:
        """The period of the same length just before (what "compared to" means)."""
        length = timedelta(days=self.days)
        return Period(self.kind, self.start - length, self.end - length)

    def label(self) -> str:
        if self.start == self.end:
            return self.start.strftime("%a %d %b %Y")
        return f"{self.start:%d %b %Y} to {self.end:%d %b %Y}"

    def query(self) -> str:
        return f"period={self.kind}&start={self.start.isoformat()}&end={self.end.isoformat()}"


def _day(text: object) -> date | None:
    if not isinstance(text, str) or len(text) != 10:
        return None
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return None
    return value if value >= EARLIEST else None


def period_parse(params, *, today: date) -> Period:
    """The period a request asks for (``period``, ``start``, ``end``); default: last 30 days.

    ``day``/``week``/``month`` end at ``end`` (default today); ``custom`` takes both.
    """
    kind = params.get("period") or "month"
    if not isinstance(kind, str) or kind not in KINDS:
        return Period(
            "month", today - timedelta(days=29), today, "Unknown period; showing 30 days."
        )
    end = _day(params.get("end")) if params.get("end") else today
    if end is None:
        return Period(kind, *_span(kind, today), "The end date is not a date like 2026-01-31.")
    end = min(end, today)
    if kind != "custom":
        return Period(kind, *_span(kind, end))
    start = _day(params.get("start"))
    if start is None:
        return Period(
            "month", today - timedelta(days=29), today, "Choose a start date like 2026-01-01."
        )
    if start > end:
        return Period(kind, end, end, "The start was after the end; showing the end day.")
    if (end - start).days + 1 > MAX_DAYS:
        return Period(
            kind, end - timedelta(days=MAX_DAYS - 1), end, f"At most {MAX_DAYS} days at once."
        )
    return Period(kind, start, end)


def _span(kind: str, end: date) -> tuple[date, date]:
    days = {"day": 1, "week": 7, "month": 30, "custom": 30}[kind]
    return end - timedelta(days=days - 1), end
