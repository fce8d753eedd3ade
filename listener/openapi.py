"""The OpenAPI document at /openapi.json: the webhook endpoints of the configured sources and the admin API."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

openapi = Blueprint("openapi", __name__)

NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["status", "message"],
              "properties": {"status": {"const": "error"}, "message": {"type": "string"}}},
    "Answer": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"enum": ["accepted", "duplicate", "ignored"]}, "event_id": {"type": "integer"},
                       "reason": {"type": "string"}},
    },
    "Event": {
        "type": "object", "required": ["id", "source", "endpoint", "received_at", "status", "reason", "item_id"],
        "properties": {"id": {"type": "integer"}, "source": {"type": "string"}, "endpoint": {"type": "string"},
                       "received_at": {"type": "string", "format": "date-time"},
                       "status": {"enum": ["accepted", "duplicate", "ignored"]}, "reason": NULLABLE_STRING,
                       "item_id": NULLABLE_INTEGER, "change": NULLABLE_STRING, "duplicate_of": NULLABLE_INTEGER},
    },
    "Item": {
        "type": "object", "required": ["id", "source", "key", "state", "data", "created_at", "updated_at"],
        "properties": {"id": {"type": "integer"}, "source": {"type": "string"}, "key": {"type": "string"},
                       "state": NULLABLE_STRING, "data": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"},
                       "updated_at": {"type": "string", "format": "date-time"}},
    },
    "Action": {
        "type": "object",
        "required": ["id", "kind", "item_id", "target", "status", "attempts", "bytes_done", "bytes_total",
                     "speed_bps", "error", "started_at", "finished_at"],
        "properties": {"id": {"type": "integer"}, "kind": {"type": "string"}, "item_id": {"type": "integer"},
                       "target": {"type": "string"}, "workflow": NULLABLE_STRING,
                       "status": {"enum": ["queued", "running", "done", "failed"]},
                       "attempts": {"type": "integer"}, "bytes_done": {"type": "integer"},
                       "bytes_total": NULLABLE_INTEGER, "speed_bps": {"type": ["number", "null"]},
                       "error": NULLABLE_STRING, "not_before": NULLABLE_STRING, "started_at": NULLABLE_STRING,
                       "finished_at": NULLABLE_STRING},
    },
    "ItemDetail": {
        "allOf": [{"$ref": "#/components/schemas/Item"}, {
            "type": "object", "required": ["events", "actions"],
            "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                           "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Action"}}}}],
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "next"],
            "properties": {"items": {"type": "array", "items": _ref(name)}, "next": NULLABLE_STRING}}


def _query(*names: str) -> list[dict[str, Any]]:
    integer = {"limit", "before", "item_id"}
    return [{"name": n, "in": "query", "required": False,
             "schema": {"type": "integer" if n in integer else "string"}} for n in names]


ERRORS = {
    "400": _json(_ref("Error"), "a missing or invalid field, named in the message"),
    "401": _json(_ref("Error"), "missing or wrong token"),
    "403": _json(_ref("Error"), "caller outside allow_ips, or the admin API closed"),
}


def build_document(sources: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for source in sources.values():
        for path, methods in source.handler.ENDPOINTS.items():
            operations = paths.setdefault(path, {})
            for method in methods:
                operation: dict[str, Any] = {
                    "tags": ["webhooks"], "summary": f"{source.name} webhook",
                    "security": [{"bearer": []}, {"header": []}, {"query": []}],
                    "responses": {
                        "200": _json(_ref("Answer"), "recorded, a duplicate, or ignored"),
                        **ERRORS,
                        "413": _json(_ref("Error"), "body over the limit"),
                        "503": _json(_ref("Error"), "database unavailable; retry after Retry-After seconds"),
                    },
                }
                if source.handler.BODY == "json" and method == "POST":
                    operation["requestBody"] = {"required": True,
                                                "content": {"application/json": {"schema": {"type": "object"}}}}
                else:
                    operation["parameters"] = _query("mediaid", "status") if source.name == "screen9" else []
                operations[method.lower()] = operation

    def admin(summary: str, schema: dict[str, Any], parameters: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {"tags": ["admin"], "summary": summary, "security": [{"bearer": []}],
                        "parameters": parameters, "responses": {"200": _json(schema, "OK"), **ERRORS}}}

    paths["/api/events"] = admin("the call log", _page("Event"),
                                 _query("source", "status", "endpoint", "item_id", "limit", "before"))
    paths["/api/items"] = admin("items", _page("Item"), _query("source", "state", "key", "limit", "before"))
    paths["/api/items/{item_id}"] = admin("an item with its events and actions", _ref("ItemDetail"),
                                          [{"name": "item_id", "in": "path", "required": True,
                                            "schema": {"type": "integer"}}])
    paths["/api/actions"] = admin("the transfer log", _page("Action"),
                                  _query("source", "kind", "status", "item_id", "workflow", "limit", "before"))
    paths["/api/actions/{action_id}/retry"] = {"post": {
        "tags": ["admin"], "summary": "put a failed action back in the queue", "security": [{"bearer": []}],
        "parameters": [{"name": "action_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": _json({"type": "object", "required": ["status", "action"],
                                    "properties": {"status": {"const": "queued"}, "action": _ref("Action")}}, "queued"),
                      **ERRORS, "404": _json(_ref("Error"), "no such action"),
                      "409": _json(_ref("Error"), "done, running or already queued: not retried")}}}
    paths["/api/events/{event_id}/replay"] = {"post": {
        "tags": ["admin"], "summary": "run a recorded event through its handler again", "security": [{"bearer": []}],
        "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": _json({"type": "object", "required": ["status", "event_id", "replay_of", "actions"],
                                    "properties": {"status": {"type": "string"}, "event_id": {"type": "integer"},
                                                   "replay_of": {"type": "integer"},
                                                   "actions": {"type": "array", "items": {"type": "integer"}}}},
                                   "recorded again"),
                      **ERRORS, "404": _json(_ref("Error"), "no such event"),
                      "409": _json(_ref("Error"), "the event cannot be replayed")}}}
    paths["/healthz"] = {"get": {"tags": ["operations"], "summary": "process alive", "responses": {
        "200": _json({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, "OK")}}}
    ready = {"type": "object", "required": ["status", "checks"],
             "properties": {"status": {"type": "string"}, "checks": {"type": "object"}}}
    paths["/readyz"] = {"get": {"tags": ["operations"], "summary": "database and Redis reachable",
                                "responses": {"200": _json(ready, "ready"), "503": _json(ready, "not ready")}}}
    paths["/metrics"] = {"get": {"tags": ["operations"], "summary": "Prometheus metrics", "responses": {
        "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "listener", "version": "1",
                 "description": "Webhook receiver and automation listener for media platforms."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "header": {"type": "apiKey", "in": "header", "name": "X-Listener-Token"},
                "query": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


@openapi.get("/openapi.json")
def serve_openapi() -> dict[str, Any]:
    return build_document(current_app.extensions["listener.runtime"].sources)
