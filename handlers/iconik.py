"""iconik (seed 003): ``/create`` for new assets, ``/proxy`` for proxy updates.

An asset is analysed once it is both created and has a closed proxy, whichever
webhook came first (iconik does not order them) and however often each is sent.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handlers.base import (
    ActionRequest,
    Context,
    Event,
    Ignored,
    ItemView,
    Rejected,
    Transition,
    WebhookRequest,
    validate,
)

ENDPOINTS = {"/create": ("POST",), "/proxy": ("POST",)}
BODY = "json"
STATES = ("created", "proxy_ready", "ready")
DEFAULT_ON = ("ready",)

EXPECTED = {"/create": ("entity", "create"), "/proxy": ("proxies", "update")}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_url: str = "https://app.iconik.io"
    app_id: str = ""
    auth_token: str = ""
    analysis_path: str = "/API/transcode/v1/analyze/assets/{asset_id}/"
    timeout: float = Field(default=30.0, gt=0)


class _Envelope(BaseModel):
    realm: str
    operation: str
    event_type: str | None = None


class _AssetEvent(BaseModel):
    object_id: str = Field(min_length=1)
    data: dict[str, Any] = Field(default_factory=dict)


class _ProxyData(BaseModel):
    status: str
    id: str | None = None
    asset_id: str | None = None
    name: str | None = None


class _ProxyEvent(BaseModel):
    object_id: str | None = None
    data: _ProxyData


def parse(request: WebhookRequest) -> Event | Ignored:
    envelope = validate(_Envelope, request.payload)
    realm, operation = EXPECTED[request.endpoint]
    if envelope.event_type not in (None, "assets"):
        return Ignored(f"event_type '{envelope.event_type}' is not handled")
    if (envelope.realm, envelope.operation) != (realm, operation):
        return Ignored(
            f"realm/operation '{envelope.realm}/{envelope.operation}' is not handled by {request.endpoint}"
        )
    if request.endpoint == "/create":
        return _parse_create(request.payload)
    return _parse_proxy(request.payload)


def _parse_create(payload: Any) -> Event:
    asset = validate(_AssetEvent, payload)
    facts = {"title": asset.data.get("title"), "asset_type": asset.data.get("type")}
    return Event(key=asset.object_id, change="created", data=_present(facts), once="created")


def _parse_proxy(payload: Any) -> Event:
    proxy = validate(_ProxyEvent, payload)
    asset_id = proxy.object_id or proxy.data.asset_id
    if not asset_id:
        raise Rejected("object_id: missing")
    status = proxy.data.status.upper()
    if status == "CLOSED":
        facts = {"proxy_id": proxy.data.id, "proxy_name": proxy.data.name}
        return Event(key=asset_id, change="proxy_closed", data=_present(facts), once="proxy_closed")
    # Other statuses (OPEN, ...) are worth a line in the call log, nothing more.
    return Event(key=asset_id, change=f"proxy_{status.lower()}", once=f"proxy:{proxy.data.id}:{status}")


def apply(item: ItemView, event: Event, context: Context) -> Transition:
    data = {**item.data, **event.data}
    if event.change == "created":
        data["created"] = True
    elif event.change == "proxy_closed":
        data["proxy_ready"] = True
    state = _state_of(data) or item.state
    if state == item.state:
        return Transition(state=state, data=data)
    actions = []
    if state == "ready":
        actions.append(ActionRequest(kind="analyze", target=analysis_url(context.options, event.key), once="analyze"))
    return Transition(state=state, data=data, actions=actions, entered=[state] if state else [])


def _state_of(data: dict[str, Any]) -> str | None:
    if data.get("created") and data.get("proxy_ready"):
        return "ready"
    if data.get("created"):
        return "created"
    if data.get("proxy_ready"):
        return "proxy_ready"
    return None


def analysis_url(options: Options | None, asset_id: str) -> str:
    options = options or Options()
    return options.api_url.rstrip("/") + options.analysis_path.format(asset_id=asset_id)


def _present(facts: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in facts.items() if value is not None}
