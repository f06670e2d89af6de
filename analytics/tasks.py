"""The periodic rollup of the programme figures (Celery beat, or the bot runner's
in-process sweeps on the embedded default)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="analytics.rollup")
def rollup_task() -> dict:
    from analytics.rollups import rollup_run

    return rollup_run()
