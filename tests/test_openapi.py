"""/openapi.json: every documented route exists and answers in the documented shape."""
from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import update

from listener.models import actions
from tests.conftest import TOKENS, load_fixture, rows

TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool,
         "null": type(None)}


def check(value: Any, schema: dict[str, Any], document: dict[str, Any], where: str = "$") -> None:
    """A small JSON Schema check covering what the document uses: $ref, allOf, type, enum, const, required."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return check(value, document["components"]["schemas"][name], document, where)
    for part in schema.get("allOf", []):
        check(value, part, document, where)
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        allowed = tuple(t for name in types
                        for t in (TYPES[name] if isinstance(TYPES[name], tuple) else (TYPES[name],)))
        assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), \
            f"{where}: {value!r} is not {types}"
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, f"{where}: missing {name}"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                check(value[name], sub, document, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, element in enumerate(value):
            check(element, schema["items"], document, f"{where}[{index}]")
    return None


def call(live, method: str, path: str, operation: dict[str, Any]):
    admin = operation["tags"] == ["admin"]
    headers = {"Authorization": "Bearer " + ("admin-secret-token" if admin else "")}
    if not admin and operation["tags"] == ["webhooks"]:
        headers["Authorization"] = "Bearer " + TOKENS[operation["summary"].split()[0]]
    if method == "get" and path == "/screen9":
        return live.http.get(live.url + path, params=load_fixture("screen9", "upload__success"), headers=headers)
    bodies = {"/create": load_fixture("iconik", "create__asset"), "/proxy": load_fixture("iconik", "proxy__closed"),
              "/scoopa": load_fixture("scoopa", "new_file__video"),
              "/dynamic-ingest": load_fixture("brightcove", "title_create__success"),
              "/screen9": load_fixture("screen9", "upload__success")}
    if method == "post" and path in bodies:
        if path == "/screen9":
            return live.http.post(live.url + path, data=bodies[path], headers=headers)
        return live.http.post(live.url + path, json=bodies[path], headers=headers)
    return live.http.request(method.upper(), live.url + path, headers=headers)


@pytest.fixture
def document_and_listener(listener):
    document = listener.get("/openapi.json").json()
    # Something to read: an item with an action, an event, and a failed action to retry.
    listener.post("/create", load_fixture("iconik", "create__asset"))
    proxy = load_fixture("iconik", "proxy__closed")
    proxy["object_id"] = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"
    listener.post("/proxy", proxy)
    with listener.runtime.engine.begin() as conn:
        conn.execute(update(actions).values(status="failed", error="boom"))
    return document, listener


def test_every_documented_route_answers_in_its_documented_shape(document_and_listener):
    document, live = document_and_listener
    item_id = rows(live.runtime, "items")[0]["id"]
    ids = {"item_id": item_id, "action_id": rows(live.runtime, "actions")[0]["id"],
           "event_id": rows(live.runtime, "events")[0]["id"]}
    checked = []
    for template, operations in document["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), template)
        for method, operation in operations.items():
            answer = call(live, method, path, operation)
            documented = operation["responses"].get(str(answer.status_code))
            assert documented, f"{method.upper()} {path} answered undocumented {answer.status_code}: {answer.text}"
            assert answer.status_code < 300, f"{method.upper()} {path}: {answer.status_code} {answer.text}"
            content = documented["content"]
            if "application/json" in content:
                check(answer.json(), content["application/json"]["schema"], document, f"{method} {path}")
            checked.append(f"{method.upper()} {template}")
    assert {"POST /create", "POST /proxy", "POST /scoopa", "POST /dynamic-ingest", "GET /screen9",
            "GET /api/events", "GET /api/items", "GET /api/items/{item_id}", "GET /api/actions",
            "POST /api/actions/{action_id}/retry", "POST /api/events/{event_id}/replay", "GET /healthz",
            "GET /readyz", "GET /metrics"} <= set(checked)


def test_documented_errors_have_the_documented_shape(document_and_listener):
    document, live = document_and_listener
    answer = live.post("/create", {"realm": "entity"})
    assert answer.status_code == 400
    check(answer.json(), document["paths"]["/create"]["post"]["responses"]["400"]["content"]["application/json"]
          ["schema"], document)
    assert live.get("/api/events").status_code == 401
