"""scoopa (seed 000): one POST per new file, with a download link valid for 24 h.

scoopa calls the URL from time to time with ``origin: "scoopa - endpoint
validation test"`` to check it; those calls are answered and forgotten.
"""
from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from handlers.base import ActionRequest, Context, Event, Ignored, ItemView, Transition, WebhookRequest, validate

ENDPOINTS = {"/scoopa": ("POST",)}
BODY = "json"
STATES = ("received", "downloaded")
DEFAULT_ON = ("downloaded",)

PROBE_ORIGIN = "scoopa - endpoint validation test"
LINK_VALIDITY = timedelta(hours=24)


class _Origin(BaseModel):
    origin: str


class _NewFile(BaseModel):
    platform: str = Field(min_length=1)
    file_id: int | str
    file_name: str = Field(min_length=1)
    file_type: str | None = None
    file_size_in_bytes: int = Field(ge=0)
    folder_id: int | str | None = None
    folder_name: str | None = None
    download_url: str = Field(pattern=r"^https?://")


def parse(request: WebhookRequest) -> Event | Ignored:
    origin = validate(_Origin, request.payload).origin
    if origin == PROBE_ORIGIN:
        return Ignored("endpoint validation test")
    if origin != "scoopa":
        return Ignored(f"origin '{origin}' is not handled")
    new_file = validate(_NewFile, request.payload)
    facts = new_file.model_dump(exclude={"platform"})
    facts["platform"] = new_file.platform
    facts["download_url_expires_at"] = (request.received_at + LINK_VALIDITY).isoformat()
    return Event(key=f"{new_file.platform}:{new_file.file_id}", change="received", data=facts, once="received")


def apply(item: ItemView, event: Event, context: Context) -> Transition:
    data = {**item.data, **event.data}
    state = item.state or "received"
    actions = []
    if context.download or any(_needs_file(flow, data) for flow in context.workflows):
        actions.append(ActionRequest(kind="download", target=str(data.get("file_name", "")), once="download"))
    return Transition(state=state, data=data, actions=actions, entered=[] if item.state else ["received"])


def _needs_file(workflow, data) -> bool:
    """A workflow acting on ``downloaded`` items needs the file downloaded first."""
    return "downloaded" in (workflow.on or DEFAULT_ON) and workflow.matches(data)
