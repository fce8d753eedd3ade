"""Screen9 (seed 002): callbacks are GET requests with query parameters.

Screen9 retries a callback for 48 h until it gets a 200, so every well-formed
callback is answered 200. ``message`` is deprecated and ignored.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from handlers.base import Context, Event, Ignored, ItemView, Transition, WebhookRequest, validate

ENDPOINTS = {"/screen9": ("GET", "POST")}
BODY = "query"
STATES = ("ready", "deleted", "updated")
DEFAULT_ON = ("ready",)
# Metadata edits arrive as distinct callbacks each time; the work they cause is
# coalesced while still queued rather than done once per item.
REPEATABLE = ("updated",)

STATUS_TO_STATE = {"success": "ready", "deleted": "deleted", "": "updated"}


class _Callback(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    mediaid: str = Field(min_length=1)
    status: str = ""
    title: str | None = None
    userid: str | None = None


def parse(request: WebhookRequest) -> Event | Ignored:
    callback = validate(_Callback, request.payload)
    state = STATUS_TO_STATE.get(callback.status.lower())
    if state is None:
        return Ignored(f"status '{callback.status}' is not handled")
    facts = {key: value for key, value in (("title", callback.title), ("userid", callback.userid)) if value}
    once = None if state in REPEATABLE else state
    return Event(key=callback.mediaid, change=state, data=facts, once=once)


def apply(item: ItemView, event: Event, context: Context) -> Transition:
    return Transition(state=event.change, data={**item.data, **event.data}, entered=[event.change])
