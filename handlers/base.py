"""The contract between the listener and a source handler.

A handler is a module (``handlers/<source>.py`` or any importable module named
by ``handler:`` in the config) with:

``ENDPOINTS``  ``{"/path": ("POST",)}``: the URLs the platform calls.
``BODY``       ``"json"`` (a JSON object body) or ``"query"`` (query string and form fields).
``STATES``     the item states the handler uses, for validating workflows' ``on``.
``DEFAULT_ON`` the states a workflow acts on when it names none.
``Options``    optional pydantic model for the handler's own config keys.
``parse(request) -> Event | Ignored``  read one delivery; raise ``Rejected`` for bad input.
``apply(item, event, context) -> Transition``  the item's next state and the work it causes.

Both functions are pure: no database, Redis, network or Flask inside, so a
handler is tested with a fixture and an expectation, nothing else.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError


class Rejected(Exception):
    """The delivery is malformed; the message names the field (answered 400)."""


@dataclass(frozen=True)
class WebhookRequest:
    endpoint: str  # the route path, e.g. "/create"
    method: str
    payload: Mapping[str, Any]  # the JSON object, or query and form fields for BODY = "query"
    received_at: datetime  # when the listener received it (UTC)


@dataclass(frozen=True)
class Ignored:
    """A validation probe, or an event this endpoint does not act on (answered 200)."""

    reason: str


@dataclass(frozen=True)
class Event:
    """What one delivery says happened to one item."""

    key: str  # the item's key within its source
    change: str  # a short name for what happened: "created", "proxy_closed", ...
    data: dict[str, Any] = field(default_factory=dict)  # facts worth keeping on the item
    # Identity in meaning: a later event of the same item with the same value is
    # a duplicate and starts nothing. None: every delivery is a distinct event.
    once: str | None = None


@dataclass(frozen=True)
class ItemView:
    """The item as stored, before the event (state None for a new item)."""

    state: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class ActionRequest:
    """Work the listener should do for the item, as a background job."""

    kind: str  # the job module: "analyze", "download", "ftp_push", "notify"
    target: str = ""  # where it goes, for people reading the transfer log
    once: str | None = None  # at most one action per item with this value, ever
    workflow: str | None = None


@dataclass(frozen=True)
class Transition:
    state: str | None  # the item's state after the event
    data: dict[str, Any]  # the item's data after the event (replaces the stored data)
    actions: list[ActionRequest] = field(default_factory=list)
    # States the item entered, in order: workflows act on these. A state can be
    # entered again (Screen9 "updated"); its workflow work is then coalesced.
    entered: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """What a handler may know besides the item: its source's configuration."""

    source: str
    options: Any  # the handler's Options instance, or None
    download: bool = False  # the source's `download: true`
    workflows: tuple[Any, ...] = ()  # config.Workflow of this source


def validate(model: type[BaseModel], payload: Mapping[str, Any]) -> Any:
    """Validate a payload, turning pydantic's errors into one Rejected naming the field."""
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise Rejected(describe_validation_error(error)) from None


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for detail in error.errors()[:3]:
        where = ".".join(str(part) for part in detail["loc"]) or "body"
        problem = "missing" if detail["type"] == "missing" else detail["msg"]
        problems.append(f"{where}: {problem}")
    return "; ".join(problems)
