"""Brightcove Dynamic Ingest (seed 001): one POST per entity of an ingest job.

The video's state only moves forward (processing -> ingested -> published);
notifications are not ordered: seed 001 sends the title's PUBLISH before its
final CREATE, and the video ends ``published`` having been ``ingested``.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from handlers.base import Context, Event, Ignored, ItemView, Transition, WebhookRequest, validate

ENDPOINTS = {"/dynamic-ingest": ("POST",)}
BODY = "json"
STATES = ("processing", "ingested", "published", "failed")
DEFAULT_ON = ("ingested",)

RANK = {"processing": 0, "ingested": 1, "published": 2}
# (entityType, action) of a successful notification -> the state it means.
REACHES = {("TITLE", "CREATE"): "ingested", ("TITLE", "PUBLISH"): "published"}
FAILS_THE_VIDEO = ("TITLE", "DIGITAL_MASTER")


class _Notification(BaseModel):
    entity: str
    entityType: str = Field(min_length=1)
    action: str = Field(min_length=1)
    status: str
    jobId: str = Field(min_length=1)
    videoId: int | str
    accountId: int | str
    bitrate: int | None = None
    width: int | None = None
    height: int | None = None
    errorMessage: str | None = None


def parse(request: WebhookRequest) -> Event | Ignored:
    note = validate(_Notification, request.payload)
    status = note.status.upper()
    if status not in ("SUCCESS", "FAILED"):
        return Ignored(f"status '{note.status}' is not handled")
    facts: dict[str, Any] = {
        "job_id": note.jobId,
        "entity": note.entity,
        "entity_type": note.entityType,
        "action": note.action,
        "status": status,
    }
    for name in ("bitrate", "width", "height"):
        if getattr(note, name) is not None:
            facts[name] = getattr(note, name)
    if note.errorMessage:
        facts["error_message"] = note.errorMessage
    return Event(
        key=f"{note.accountId}:{note.videoId}",
        change=f"{note.entityType}.{note.action}.{status}".lower(),
        data=facts,
        once=f"{note.jobId}:{note.entityType}:{note.entity}:{note.action}:{status}",
    )


def apply(item: ItemView, event: Event, context: Context) -> Transition:
    note = event.data
    data = dict(item.data)
    data["job_id"] = note["job_id"]
    reached = list(data.get("reached", []))
    entity = {k: note[k] for k in ("entity_type", "action", "status", "bitrate", "width", "height") if k in note}
    data["entities"] = {**data.get("entities", {}), f"{note['entity']}:{note['action']}": entity}

    new_states: list[str] = [] if reached else ["processing"]
    if note["status"] == "SUCCESS":
        state = REACHES.get((note["entity_type"], note["action"]))
        if state:
            new_states.append(state)
    else:
        data["errors"] = [*data.get("errors", []), {"entity": note["entity"], "message": note.get("error_message")}]
        if note["entity_type"] in FAILS_THE_VIDEO:
            new_states.append("failed")
    entered = [state for state in new_states if state not in reached]
    data["reached"] = reached + entered
    return Transition(state=_current(data["reached"]), data=data, entered=entered)


def _current(reached: list[str]) -> str:
    if "failed" in reached:
        return "failed"
    return max(reached, key=RANK.__getitem__)
