"""The level moves per day (``LevelMoveDay``), from the level history (``LevelChange``).

Kept like the other daily rollups (``analytics.rollups``): a day is recomputed whole,
so a re-run gives the same rows; a move recorded late (a higher id for an older day)
marks its day to be recomputed. Test users (the simulator's) are left out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.db.models import Count, Max
from django.db.models.functions import TruncDate

from analytics.models import LevelMoveDay, RollupState
from users.models import LevelChange


def level_moves_write(first: date, last: date, *, t0: datetime, t1: datetime) -> None:
    """Recompute the moves of the days [first, last] (``t0``/``t1``: their bounds)."""
    rows = (
        LevelChange.objects.filter(at__gte=t0, at__lt=t1)
        .exclude(user__is_test=True)
        .annotate(day=TruncDate("at"))
        .values("project_id", "day", "from_level", "to_level")
        .annotate(moves=Count("id"))
    )
    LevelMoveDay.objects.filter(day__gte=first, day__lte=last).delete()
    LevelMoveDay.objects.bulk_create(
        [
            LevelMoveDay(
                project_id=row["project_id"],
                day=row["day"],
                from_level=row["from_level"],
                to_level=row["to_level"],
                moves=row["moves"],
            )
            for row in rows
        ],
        batch_size=5000,
    )


def level_moves_dirty(state: RollupState) -> tuple[set[date], dict]:
    """Days of the moves recorded since the last run, and the new watermark."""
    changes = LevelChange.objects.filter(id__gt=state.level_change_id)
    top = changes.aggregate(top=Max("id"))["top"]
    if not top:
        return set(), {}
    days = set(changes.annotate(d=TruncDate("at")).values_list("d", flat=True).distinct())
    return days, {"level_change_id": top}


def level_moves_first() -> date | None:
    """The day of the first recorded move (where a rebuild must start at the latest)."""
    first = LevelChange.objects.order_by("at").values_list("at", flat=True).first()
    return None if first is None else first.astimezone(UTC).date()
