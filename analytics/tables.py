"""A figure table as the dashboard, the CSV and the JSON all see it (one source)."""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from datetime import date

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe


@dataclass
class Table:
    key: str  # the export's name
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""

    def rows_html(self) -> SafeString:
        """The body rows, each cell as the CSV writes it, escaped (built here: a year of
        days in the template language would cost most of the page's time)."""
        if not self.rows:
            return format_html(
                '<tr><td colspan="{}">Nothing in this period yet.</td></tr>', len(self.columns)
            )
        return mark_safe(  # noqa: S308 - every cell is escaped
            "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell_text(v))}</td>" for v in row) + "</tr>"
                for row in self.rows
            )
        )


def cell_text(value) -> str:
    """How a value reads on the page and in the CSV (the same text)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _csv_safe(text: str) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
    if text[:1] in ("=", "+", "@", "\t", "\r") or (text[:1] == "-" and not _number(text)):
        return "'" + text
    return text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def table_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([_csv_safe(cell_text(v)) for v in row])
    return out.getvalue()


def tables_json(tables: list[Table], **meta) -> str:
    return json.dumps(
        {
            **meta,
            "tables": {
                t.key: {
                    "title": t.title,
                    "columns": t.columns,
                    "rows": t.rows,
                    "note": t.note,
                }
                for t in tables
            },
        },
        cls=DjangoJSONEncoder,
        ensure_ascii=False,
    )
