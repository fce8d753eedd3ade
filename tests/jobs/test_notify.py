"""notify (SPEC 4 and 5): the item and its event, POSTed as JSON with the workflow's headers, for its states."""
from __future__ import annotations

import logging

from tests.conftest import TOKENS, base_config, load_fixture, rows
from tests.jobs.conftest import settle

SECRET = "Bearer cms-secret-value"


def notify_config(url: str, source: str, on: list[str], **flow: object) -> dict:
    workflow = {"name": f"tell-{source}", "source": source, "on": on, "action": "notify", "url": url,
                "headers": {"Authorization": SECRET, "X-Team": "media"}} | flow
    return base_config(workflows=[workflow])


def screen9(live, fixture: str, **extra: str):
    params = load_fixture("screen9", fixture) | {"token": TOKENS["screen9"]} | extra
    answer = live.get("/screen9", params=params)
    assert answer.status_code == 200, answer.text
    return answer


def test_brightcove_ingested_and_failed_are_sent_with_item_event_and_headers(start_listener, recorder):
    sink = recorder(default=(200, {"ok": True}))
    live = start_listener(notify_config(f"{sink.url}/hooks/video", "brightcove", ["ingested", "failed"]))
    for notification in load_fixture("brightcove", "ingest__sequence"):
        live.post("/dynamic-ingest", notification)
    settle(live.runtime)
    [sent] = sink.requests  # published is not in `on`; the renditions change no state
    assert sent.path == "/hooks/video"
    assert sent.headers["Authorization"] == SECRET and sent.headers["X-Team"] == "media"
    assert sent.headers["Content-Type"] == "application/json"
    body = sent.json()
    assert (body["workflow"], body["state"]) == ("tell-brightcove", "ingested")
    assert body["item"]["source"] == "brightcove"
    assert body["item"]["key"] == "57838016001:5660367449001"
    assert body["item"]["data"]["job_id"] == "d3ef8751-2b88-4141-95d5-83f0393aca07"
    assert body["event"]["source"] == "brightcove" and body["event"]["change"] == "title.create.success"
    assert body["event"]["payload"]["entityType"] == "TITLE"

    failed = load_fixture("brightcove", "title_create__failed") | {"videoId": "42", "entity": "42"}
    live.post("/dynamic-ingest", failed)
    settle(live.runtime)
    assert len(sink.requests) == 2
    body = sink.requests[1].json()
    assert (body["state"], body["item"]["key"], body["item"]["state"]) == ("failed", "57838016001:42", "failed")
    assert body["event"]["payload"]["errorMessage"] == "Unable to download source file: HTTP 404"


def test_screen9_states_are_sent_for_the_states_listed(start_listener, recorder):
    sink = recorder(default=(204, {}))
    live = start_listener(notify_config(sink.url, "screen9", ["ready", "deleted", "updated"]))
    screen9(live, "upload__success")
    settle(live.runtime)
    screen9(live, "update__metadata", mediaid="hAHlHXzOLgOQI2La-hWFpg")
    settle(live.runtime)
    screen9(live, "update__metadata", mediaid="hAHlHXzOLgOQI2La-hWFpg")  # a second edit: sent again
    # Deleted before that notify runs: it still says which state it was for.
    screen9(live, "update__deleted", mediaid="hAHlHXzOLgOQI2La-hWFpg")
    settle(live.runtime)
    bodies = [request.json() for request in sink.requests]
    assert [body["state"] for body in bodies] == ["ready", "updated", "updated", "deleted"]
    assert [body["item"]["state"] for body in bodies] == ["ready", "updated", "deleted", "deleted"]
    assert {body["item"]["key"] for body in bodies} == {"hAHlHXzOLgOQI2La-hWFpg"}
    assert bodies[0]["item"]["data"]["title"] == "Video title"
    assert bodies[0]["event"]["payload"]["status"] == "success"
    assert all(action["status"] == "done" for action in rows(live.runtime, "actions"))


def test_states_not_listed_send_nothing(start_listener, recorder):
    sink = recorder()
    live = start_listener(notify_config(sink.url, "screen9", ["deleted"]))
    screen9(live, "upload__success")
    settle(live.runtime)
    assert sink.requests == [] and rows(live.runtime, "actions") == []


def test_server_error_is_retried_and_a_client_error_fails_at_once(start_listener, recorder, caplog):
    sink = recorder(default=(200, {}))
    sink.queue([(503, {"error": "down"}), (422, {"error": "unknown video"})])
    live = start_listener(notify_config(sink.url, "screen9", ["ready", "deleted"]))
    with caplog.at_level(logging.DEBUG):
        screen9(live, "upload__success")
        [action] = settle(live.runtime)
        assert (action["status"], action["attempts"]) == ("failed", 2)  # 503 retried, then 422: failed at once
        assert "answered 422" in action["error"] and "unknown video" in action["error"]
        screen9(live, "update__deleted", mediaid="hAHlHXzOLgOQI2La-hWFpg")
        settle(live.runtime)
    assert rows(live.runtime, "actions")[-1]["status"] == "done"
    # The headers carry credentials: never in a log line or a recorded error.
    assert "cms-secret-value" not in caplog.text
    assert all("cms-secret-value" not in (action["error"] or "") for action in rows(live.runtime, "actions"))
