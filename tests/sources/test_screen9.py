"""Screen9: GET callbacks with query parameters (SPEC 3)."""
from __future__ import annotations

from tests.conftest import TOKENS, base_config, load_fixture, rows


def call(live, fixture: str, method: str = "GET", **extra):
    params = load_fixture("screen9", fixture) | {"token": TOKENS["screen9"]} | extra
    if method == "GET":
        return live.get("/screen9", params=params)
    # The callback URL configured in Screen9 carries the token; the fields come as a form.
    token = params.pop("token")
    return live.http.post(f"{live.url}/screen9?token={token}", data=params, timeout=10)


def test_upload_success_fixture_marks_the_media_ready(listener):
    answer = call(listener, "upload__success")
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    [item] = rows(listener.runtime, "items")
    assert (item["key"], item["state"]) == ("hAHlHXzOLgOQI2La-hWFpg", "ready")
    assert item["data"] == {"title": "Video title", "userid": "rzLmShSpK-7kWkqh2oVCLA"}
    [event] = rows(listener.runtime, "events")
    assert "token" not in event["payload"]


def test_deleted_fixture_marks_the_media_deleted(listener):
    call(listener, "update__deleted")
    assert rows(listener.runtime, "items")[0]["state"] == "deleted"


def test_metadata_fixture_marks_the_media_updated_each_time(listener):
    first = call(listener, "update__metadata").json()
    second = call(listener, "update__metadata").json()
    assert first["status"] == second["status"] == "accepted"
    assert first["event_id"] != second["event_id"]
    assert rows(listener.runtime, "items")[0]["state"] == "updated"


def test_retried_success_callback_is_a_duplicate(listener):
    first = call(listener, "upload__success").json()
    assert call(listener, "upload__success").json() == {"status": "duplicate", "event_id": first["event_id"]}


def test_form_post_is_accepted_too(listener):
    assert call(listener, "upload__success", method="POST").json()["status"] == "accepted"


def test_missing_mediaid_is_a_400(listener):
    answer = listener.get("/screen9", params={"status": "success", "token": TOKENS["screen9"]})
    assert answer.status_code == 400 and "mediaid" in answer.json()["message"]
    assert rows(listener.runtime, "items") == []


def test_unknown_status_is_ignored(listener):
    assert call(listener, "upload__success", status="weird").json()["status"] == "ignored"


def test_updated_work_is_coalesced_while_queued(start_listener):
    config = base_config(workflows=[{"name": "sync", "source": "screen9", "on": ["ready", "updated"],
                                     "action": "notify", "url": "http://127.0.0.1:9/hook"}])
    live = start_listener(config)
    call(live, "upload__success")
    for _ in range(3):
        call(live, "update__metadata")
    notify = rows(live.runtime, "actions")
    # one for the ready media, one (not three) for the metadata edits of the other media
    assert sorted((a["once_key"] or "-") for a in notify) == ["-", "sync:ready"]
