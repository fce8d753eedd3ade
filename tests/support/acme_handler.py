"""An example third-party source, living outside handlers/: README's "Adding a source" walk-through.

ACME Transcoder calls ``POST /acme`` with ``{"job": "...", "state": "finished" | "error", "output": "..."}``.
"""
from __future__ import annotations

from pydantic import BaseModel

from handlers.base import Context, Event, Ignored, ItemView, Transition, WebhookRequest, validate

ENDPOINTS = {"/acme": ("POST",)}
BODY = "json"
STATES = ("finished", "error")
DEFAULT_ON = ("finished",)


class Options(BaseModel):
    label: str = "acme"


class _Callback(BaseModel):
    job: str
    state: str
    output: str | None = None


def parse(request: WebhookRequest) -> Event | Ignored:
    callback = validate(_Callback, request.payload)
    if callback.state not in STATES:
        return Ignored(f"state '{callback.state}' is not handled")
    return Event(key=callback.job, change=callback.state, data={"output": callback.output}, once=callback.state)


def apply(item: ItemView, event: Event, context: Context) -> Transition:
    data = {**item.data, **event.data, "label": context.options.label}
    return Transition(state=event.change, data=data, entered=[event.change])
