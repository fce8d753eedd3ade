"""The admin API's read side (SPEC 6): the call log, items and the transfer log.

Every list is newest first and paged with a cursor: ``next`` is the path and
query of the next page, or null. Behind ``Authorization: Bearer
$LISTENER_ADMIN_TOKEN``; closed when that is unset. Webhook tokens never open it.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from flask_restful import Api, Resource
from sqlalchemy import Select, select

from listener.models import actions, events, items
from listener.serialize import action_json, event_json, item_json
from listener.status_page import CSRF_HEADER, session_status

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def require_admin() -> None:
    expected = current_app.config["LISTENER_ADMIN_TOKEN"]
    if not expected:
        raise AdminError(403, "the admin API is closed: set LISTENER_ADMIN_TOKEN to open it")
    authorization = request.headers.get("Authorization", "")
    presented = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    if not presented:
        session = session_status(expected)  # the status page's cookie (listener/status_page.py)
        if session == "csrf":
            raise AdminError(403, f"a request with the status page's session needs the header {CSRF_HEADER}: 1")
        if session == "ok":
            return
        raise AdminError(401, "missing admin token: send Authorization: Bearer <LISTENER_ADMIN_TOKEN>")
    if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise AdminError(401, "wrong admin token")


def _int_arg(name: str, default: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise AdminError(400, f"{name}: must be an integer, got {raw[:40]!r}") from None
    if value < 0:
        raise AdminError(400, f"{name}: must not be negative")
    return value


class AdminResource(Resource):
    def dispatch_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            require_admin()
            return super().dispatch_request(*args, **kwargs)
        except AdminError as problem:
            return {"status": "error", "message": str(problem)}, problem.status


def paged(query: Select, id_column: Any, to_json: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    limit = min(_int_arg("limit", DEFAULT_LIMIT) or DEFAULT_LIMIT, MAX_LIMIT)
    before = _int_arg("before")
    if before is not None:
        query = query.where(id_column < before)
    with current_app.extensions["listener.engine"].connect() as conn:
        rows = conn.execute(query.order_by(id_column.desc()).limit(limit + 1)).all()
    next_page = None
    if len(rows) > limit:
        rows = rows[:limit]
        args = {k: v for k, v in request.args.items() if k != "before"} | {"before": rows[-1].id}
        next_page = f"{request.path}?{urlencode(args)}"
    return {"items": [to_json(row) for row in rows], "next": next_page}


def _filtered(query: Select, filters: dict[str, Any]) -> Select:
    for name, column in filters.items():
        value = request.args.get(name)
        if value:
            query = query.where(column == (int(value) if name.endswith("_id") and value.isdigit() else value))
    return query


class EventList(AdminResource):
    def get(self):  # noqa: ANN201
        _int_arg("item_id")
        query = _filtered(select(events), {"source": events.c.source, "status": events.c.status,
                                           "endpoint": events.c.endpoint, "item_id": events.c.item_id})
        return paged(query, events.c.id, event_json)


class ItemList(AdminResource):
    def get(self):  # noqa: ANN201
        query = _filtered(select(items), {"source": items.c.source, "state": items.c.state,
                                          "status": items.c.state, "key": items.c.key})
        return paged(query, items.c.id, item_json)


class ItemDetail(AdminResource):
    def get(self, item_id: int):  # noqa: ANN201
        with current_app.extensions["listener.engine"].connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for the three reads. With PostgreSQL's default each statement has its own, and a
                # job commits its item's facts just before its action's end: read in between, the action was
                # done and the facts (a download's local_path) were missing. SQLite's read transaction is one
                # snapshot already.
                conn.execution_options(isolation_level="REPEATABLE READ")
            item = conn.execute(select(items).where(items.c.id == item_id)).first()
            if item is None:
                return {"status": "error", "message": f"no item {item_id}"}, 404
            item_events = conn.execute(
                select(events).where(events.c.item_id == item_id).order_by(events.c.id.desc()).limit(200)
            ).all()
            item_actions = conn.execute(
                select(actions).where(actions.c.item_id == item_id).order_by(actions.c.id.desc())
            ).all()
        return item_json(item) | {
            "events": [event_json(row) for row in item_events],
            "actions": [action_json(row) for row in item_actions],
        }


class ActionList(AdminResource):
    def get(self):  # noqa: ANN201
        _int_arg("item_id")
        query = select(actions)
        source = request.args.get("source")
        if source:
            query = query.join(items, items.c.id == actions.c.item_id).where(items.c.source == source)
        query = _filtered(query, {"kind": actions.c.kind, "status": actions.c.status,
                                  "item_id": actions.c.item_id, "workflow": actions.c.workflow})
        return paged(query, actions.c.id, action_json)


def register_admin(api: Api) -> None:
    api.add_resource(EventList, "/api/events")
    api.add_resource(ItemList, "/api/items")
    api.add_resource(ItemDetail, "/api/items/<int:item_id>")
    api.add_resource(ActionList, "/api/actions")

    from listener.admin_actions import register_admin_actions  # it builds on AdminResource, above

    register_admin_actions(api)
