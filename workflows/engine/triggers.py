"""Which workflow an event starts.

Kinds: ``command`` (with an optional deep-link payload or payload prefix),
``text`` (exact, case-insensitive by default), ``regex``, ``callback`` (exact data
or a prefix), ``level_up``, ``event`` (an API event by name: POST
/api/v1/customers/{id}/events) and ``fallback`` (any other text or command). The
highest-priority workflow wins; fallback only when nothing else matches.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from botplatform import metrics
from botplatform.cache import WORKFLOW_TRIGGERS_TTL, workflow_triggers_key
from botplatform.conversation import InputEvent
from workflows.engine.patterns import pattern_captures, pattern_search
from workflows.models import Workflow

MAX_TRIGGER_TEXT = 4096  # a Telegram message is at most 4096 characters


@dataclass(frozen=True, slots=True)
class TriggerMatch:
    workflow_id: int
    version_id: int
    slug: str
    interrupt: bool
    # What the conversation sees as ``trigger.text`` and ``trigger.match.1`` (a regex's
    # captures); None for a fallback.
    trigger: dict | None = None


def trigger_candidates(project_id: int) -> list[dict]:
    """The project's live workflows with their published versions' triggers (cached).

    The triggers come from the published version, never from the draft: saving a
    draft changes nothing users get, and a publish swaps definition and triggers in
    one write of ``published_version``.
    """
    key = workflow_triggers_key(project_id)
    cached = cache.get(key)  # an unreachable Redis reads as a miss (cache_backend)
    metrics.cache_lookup("workflow_triggers", hit=isinstance(cached, list))
    if isinstance(cached, list):
        return cached
    candidates = [
        {
            "id": row["id"],
            "slug": row["slug"],
            "triggers": row["published_version__triggers"],
            "published_version_id": row["published_version_id"],
        }
        for row in Workflow.objects.filter(
            project_id=project_id, is_active=True, published_version__isnull=False
        )
        .order_by("-priority", "name", "id")
        .values("id", "slug", "published_version__triggers", "published_version_id")
    ]
    cache.set(key, candidates, WORKFLOW_TRIGGERS_TTL)
    return candidates


def trigger_candidates_invalidate(*, project_id: int) -> None:
    """Drop the project's cached trigger table now and again after commit.

    Now: this transaction's own later reads see the change. After commit: a reader in
    another process that reloaded the old table in between is not left behind.
    """

    def drop() -> None:
        cache.delete(workflow_triggers_key(project_id))

    drop()
    transaction.on_commit(drop)


# Saves touching only these leave the trigger table as it is (the draft is not live).
DRAFT_ONLY_FIELDS = frozenset({"draft", "triggers", "name", "description", "updated_at"})


@receiver(post_save, sender=Workflow, dispatch_uid="workflow_triggers_saved")
@receiver(post_delete, sender=Workflow, dispatch_uid="workflow_triggers_deleted")
def _workflow_changed(sender, instance: Workflow, update_fields=None, **kwargs) -> None:
    """A publish (``published_version``), activity, priority or slug change, a delete.

    A save limited to the draft's fields keeps the cached table: it follows
    publishes, not saves.
    """
    if update_fields is not None and set(update_fields) <= DRAFT_ONLY_FIELDS:
        return
    trigger_candidates_invalidate(project_id=instance.project_id)


def _matches(trigger: dict, event: InputEvent) -> bool:
    kind = trigger.get("type")
    if kind == "command" and event.kind == "command":
        if str(trigger.get("command", "")).lstrip("/").lower() != event.command.lower():
            return False
        if "payload" in trigger and trigger["payload"] != event.payload:
            return False
        prefix = trigger.get("payload_prefix")
        return not prefix or event.payload.startswith(prefix)
    if kind == "text" and event.kind == "text":
        expected = str(trigger.get("text", "")).strip()
        if trigger.get("ignore_case", True):
            return expected.casefold() == event.text.strip().casefold()
        return expected == event.text.strip()
    if kind == "regex" and event.kind == "text":
        # Time-bounded: a runaway pattern counts as no match (see patterns.py).
        pattern = trigger.get("pattern")
        return isinstance(pattern, str) and pattern_search(
            pattern,
            event.text[:MAX_TRIGGER_TEXT],
            ignore_case=bool(trigger.get("ignore_case", True)),
        )
    if kind == "callback" and event.kind == "callback":
        if "data" in trigger:
            return trigger["data"] == event.callback_data
        prefix = trigger.get("prefix")
        return bool(prefix) and event.callback_data.startswith(prefix)
    if kind == "event" and event.kind == "event":
        return trigger.get("name") == event.payload
    if kind == "level_up" and event.kind == "level_up":
        level = trigger.get("level")
        return not level or str(level).casefold() == event.payload.casefold()
    return False


def trigger_context(trigger: dict, event: InputEvent) -> dict:
    """``trigger.text`` (the message, a command's payload) and ``trigger.match`` (a regex
    trigger's captures: ``trigger.match.1``, named groups by name)."""
    text = event.text if event.kind == "text" else event.payload
    context: dict = {"text": (text or "")[:MAX_TRIGGER_TEXT], "match": {}}
    if trigger.get("type") == "regex" and event.kind == "text":
        captures = pattern_captures(
            str(trigger.get("pattern") or ""),
            event.text[:MAX_TRIGGER_TEXT],
            ignore_case=bool(trigger.get("ignore_case", True)),
        )
        context["match"] = captures or {}
    return context


def trigger_matches_all(candidates: list[dict], event: InputEvent) -> list[TriggerMatch]:
    """Every workflow the event starts (``level_up``: all of them, by priority)."""
    found = []
    for workflow in candidates:
        for trigger in workflow["triggers"] or []:
            if isinstance(trigger, dict) and _matches(trigger, event):
                found.append(
                    TriggerMatch(
                        workflow_id=workflow["id"],
                        version_id=workflow["published_version_id"],
                        slug=workflow["slug"],
                        interrupt=False,
                        trigger=trigger_context(trigger, event),
                    )
                )
                break
    return found


def trigger_match(candidates: list[dict], event: InputEvent) -> TriggerMatch | None:
    """The workflow this event starts, or None."""
    fallback = None
    for workflow in candidates:
        for trigger in workflow["triggers"] or []:
            if not isinstance(trigger, dict):
                continue
            if _matches(trigger, event):
                return TriggerMatch(
                    workflow_id=workflow["id"],
                    version_id=workflow["published_version_id"],
                    slug=workflow["slug"],
                    interrupt=bool(trigger.get("interrupt", False)),
                    trigger=trigger_context(trigger, event),
                )
            if (
                fallback is None
                and trigger.get("type") == "fallback"
                and event.kind in {"text", "command"}
            ):
                fallback = TriggerMatch(
                    workflow_id=workflow["id"],
                    version_id=workflow["published_version_id"],
                    slug=workflow["slug"],
                    interrupt=False,
                )
    return fallback
