"""iconik: /create and /proxy, in either order, analysed exactly once (SPEC 3)."""
from __future__ import annotations

import copy

from tests.conftest import load_fixture, rows

ASSET = "2b45a8ca-f0b4-11e7-a36b-0a580a00054a"


def proxy_for(asset_id: str, status: str = "CLOSED") -> dict:
    payload = copy.deepcopy(load_fixture("iconik", "proxy__closed"))
    payload["object_id"] = payload["data"]["asset_id"] = asset_id
    payload["data"]["status"] = status
    return payload


def analyze_actions(runtime) -> list[dict]:
    return rows(runtime, "actions", kind="analyze")


def test_create_fixture_records_a_created_asset(listener):
    answer = listener.post("/create", load_fixture("iconik", "create__asset"))
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted", "event_id": answer.json()["event_id"]}
    [item] = rows(listener.runtime, "items")
    assert (item["source"], item["key"], item["state"]) == ("iconik", ASSET, "created")
    assert item["data"]["title"] == "1_zps7uj5xqff.jpg"
    assert analyze_actions(listener.runtime) == []


def test_closed_proxy_fixture_before_create_marks_proxy_ready(listener):
    answer = listener.post("/proxy", load_fixture("iconik", "proxy__closed"))
    assert answer.json()["status"] == "accepted"
    [item] = rows(listener.runtime, "items")
    assert (item["key"], item["state"]) == ("c521e01a-f0a2-11e7-b528-0a580a000257", "proxy_ready")


def test_open_proxy_fixture_is_recorded_without_action(listener):
    listener.post("/create", load_fixture("iconik", "create__asset"))
    answer = listener.post("/proxy", proxy_for(ASSET, "OPEN"))
    assert answer.json()["status"] == "accepted"
    [item] = rows(listener.runtime, "items")
    assert item["state"] == "created"
    assert analyze_actions(listener.runtime) == []
    assert [e["change"] for e in rows(listener.runtime, "events")] == ["created", "proxy_open"]


def test_create_then_proxy_schedules_one_analysis(listener):
    listener.post("/create", load_fixture("iconik", "create__asset"))
    listener.post("/proxy", proxy_for(ASSET))
    [item] = rows(listener.runtime, "items")
    assert item["state"] == "ready"
    [action] = analyze_actions(listener.runtime)
    assert action["status"] == "queued"
    assert action["target"] == f"http://127.0.0.1:9/API/transcode/v1/analyze/assets/{ASSET}/"


def test_proxy_then_create_schedules_one_analysis(listener):
    listener.post("/proxy", proxy_for(ASSET))
    listener.post("/create", load_fixture("iconik", "create__asset"))
    assert rows(listener.runtime, "items")[0]["state"] == "ready"
    assert len(analyze_actions(listener.runtime)) == 1


def test_repeated_deliveries_are_duplicates_and_schedule_nothing_more(listener):
    first = listener.post("/create", load_fixture("iconik", "create__asset")).json()
    listener.post("/proxy", proxy_for(ASSET))
    again = listener.post("/create", load_fixture("iconik", "create__asset")).json()
    proxy_again = listener.post("/proxy", proxy_for(ASSET)).json()
    assert again == {"status": "duplicate", "event_id": first["event_id"]}
    assert proxy_again["status"] == "duplicate"
    assert len(analyze_actions(listener.runtime)) == 1
    statuses = [e["status"] for e in rows(listener.runtime, "events")]
    assert statuses == ["accepted", "accepted", "duplicate", "duplicate"]


def test_wrong_realm_or_operation_is_ignored(listener):
    payload = load_fixture("iconik", "create__asset")
    payload["operation"] = "delete"
    answer = listener.post("/create", payload)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert "entity/delete" in answer.json()["reason"]
    proxy_on_create = listener.post("/create", load_fixture("iconik", "proxy__closed")).json()
    assert proxy_on_create["status"] == "ignored"
    assert rows(listener.runtime, "items") == []


def test_missing_object_id_is_a_400_naming_it(listener):
    payload = load_fixture("iconik", "create__asset")
    del payload["object_id"]
    answer = listener.post("/create", payload)
    assert answer.status_code == 400
    assert "object_id" in answer.json()["message"]
    assert rows(listener.runtime, "items") == []


def test_proxy_without_status_is_a_400_naming_it(listener):
    payload = proxy_for(ASSET)
    del payload["data"]["status"]
    answer = listener.post("/proxy", payload)
    assert answer.status_code == 400
    assert "data.status" in answer.json()["message"]
