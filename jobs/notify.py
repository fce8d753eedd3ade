"""Tell another system that an item entered a state (SPEC 4 and 5): POST the item and its event as JSON.

The body is ``{"workflow", "state", "item", "event"}``: the item as the admin
API shows it (with its data), and the event that caused the work, with the
payload the platform sent. The workflow's ``headers`` go along; their values
usually hold credentials, so they never appear in a log line or an error.
2xx is success; 408, 429, 5xx and network errors are retried on the
schedule; any other answer fails at once.
"""
from __future__ import annotations

import json
from typing import Any

import requests
from sqlalchemy import select

from config import Workflow
from jobs.context import ActionContext
from jobs.errors import ActionError, PermanentError
from jobs.http import session
from listener.models import events, items
from listener.serialize import event_json, item_json

TIMEOUT = (10.0, 30.0)


def run(context: ActionContext) -> None:
    flow = context.config.workflow(context.action["workflow"] or "")
    if flow is None or not flow.url:
        raise PermanentError(f"workflow {context.action['workflow']!r} is no longer configured with a url")
    body = describe(context, flow)
    headers = {"Content-Type": "application/json", "User-Agent": "listener", **flow.headers}
    try:
        response = session().post(flow.url, data=json.dumps(body, default=str), headers=headers, timeout=TIMEOUT,
                                 allow_redirects=False)
    except requests.RequestException as error:
        raise ActionError(f"cannot reach {flow.url}: {type(error).__name__}") from None
    if 200 <= response.status_code < 300:
        return
    message = f"{flow.url} answered {response.status_code}: {response.text[:200].strip() or response.reason}"
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise ActionError(message)
    raise PermanentError(message)


def describe(context: ActionContext, flow: Workflow) -> dict[str, Any]:
    """The JSON body: the item now, and the event the work descends from."""
    with context.engine.connect() as conn:
        item = conn.execute(select(items).where(items.c.id == context.item["id"])).one()
        event = None
        if context.action.get("event_id"):
            event = conn.execute(select(events).where(events.c.id == context.action["event_id"])).first()
    return {
        "workflow": flow.name,
        "state": _acted_on(context, event, item.state),
        "item": item_json(item),
        "event": (event_json(event) | {"payload": event.payload}) if event is not None else None,
    }


def _acted_on(context: ActionContext, event: Any, current_state: str | None) -> str | None:
    """The state the workflow acted on, even if the item has moved on since.

    It is in the action's once key (``<workflow>:<state>``); a repeatable state's
    work (Screen9 ``updated``) has none, and is caused by the event that entered it.
    """
    action = context.action
    once = action.get("once_key") or ""
    prefix = f"{action.get('workflow')}:"
    if once.startswith(prefix):
        return once[len(prefix):]
    handler = getattr(context.runtime.sources.get(context.item["source"]), "handler", None)
    if event is not None and event.change in getattr(handler, "STATES", ()):
        return event.change
    return current_state
