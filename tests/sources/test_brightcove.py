"""Brightcove Dynamic Ingest: every notification recorded, states only move forward (SPEC 3)."""
from __future__ import annotations

from tests.conftest import base_config, load_fixture, rows

KEY = "57838016001:5660367449001"


def test_full_notification_sequence_of_seed_001(listener):
    sequence = load_fixture("brightcove", "ingest__sequence")
    states = []
    for note in sequence:
        answer = listener.post("/dynamic-ingest", note)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        states.append(rows(listener.runtime, "items")[0]["state"])
    # PUBLISH (7th) comes before the title's CREATE (last): published, and ingested on the way.
    assert states[:6] == ["processing"] * 6
    assert states[6:] == ["published"] * 11
    [item] = rows(listener.runtime, "items")
    assert item["key"] == KEY
    assert item["data"]["reached"] == ["processing", "published", "ingested"]
    assert item["data"]["job_id"] == "d3ef8751-2b88-4141-95d5-83f0393aca07"
    rendition = item["data"]["entities"]["default/video3800:CREATE"]
    assert (rendition["bitrate"], rendition["width"], rendition["height"]) == (3804, 1920, 1080)
    assert len(rows(listener.runtime, "events", status="accepted")) == 17


def test_title_create_fixture_marks_the_video_ingested(listener):
    listener.post("/dynamic-ingest", load_fixture("brightcove", "title_create__success"))
    assert rows(listener.runtime, "items")[0]["state"] == "ingested"


def test_rendition_fixture_keeps_the_video_processing(listener):
    listener.post("/dynamic-ingest", load_fixture("brightcove", "rendition_create__success"))
    [item] = rows(listener.runtime, "items")
    assert item["state"] == "processing"
    assert item["data"]["entities"]["default/video450:CREATE"]["bitrate"] == 451


def test_failed_title_fixture_fails_the_video_with_its_message(listener):
    listener.post("/dynamic-ingest", load_fixture("brightcove", "rendition_create__success"))
    listener.post("/dynamic-ingest", load_fixture("brightcove", "title_create__failed"))
    [item] = rows(listener.runtime, "items")
    assert item["state"] == "failed"
    assert item["data"]["errors"] == [{"entity": "5660367449001",
                                       "message": "Unable to download source file: HTTP 404"}]


def test_failed_rendition_is_recorded_but_does_not_fail_the_video(listener):
    note = load_fixture("brightcove", "rendition_create__success") | {"status": "FAILED", "errorMessage": "bad"}
    listener.post("/dynamic-ingest", note)
    [item] = rows(listener.runtime, "items")
    assert item["state"] == "processing"
    assert item["data"]["errors"][0]["message"] == "bad"


def test_repeated_notification_is_a_duplicate(listener):
    first = listener.post("/dynamic-ingest", load_fixture("brightcove", "title_create__success")).json()
    again = listener.post("/dynamic-ingest", load_fixture("brightcove", "title_create__success")).json()
    assert again == {"status": "duplicate", "event_id": first["event_id"]}


def test_unknown_status_is_ignored(listener):
    note = load_fixture("brightcove", "title_create__success") | {"status": "PENDING"}
    answer = listener.post("/dynamic-ingest", note).json()
    assert answer["status"] == "ignored"
    assert rows(listener.runtime, "items") == []


def test_missing_job_id_is_a_400(listener):
    note = load_fixture("brightcove", "title_create__success")
    del note["jobId"]
    answer = listener.post("/dynamic-ingest", note)
    assert answer.status_code == 400 and "jobId" in answer.json()["message"]


def test_workflow_on_ingested_and_failed_gets_one_action_per_state(start_listener):
    config = base_config(workflows=[{"name": "tell-cms", "source": "brightcove", "on": ["ingested", "failed"],
                                     "action": "notify", "url": "http://127.0.0.1:9/hook"}])
    live = start_listener(config)
    for note in load_fixture("brightcove", "ingest__sequence"):
        live.post("/dynamic-ingest", note)
    [action] = rows(live.runtime, "actions")
    assert (action["kind"], action["workflow"], action["once_key"]) == ("notify", "tell-cms", "tell-cms:ingested")


def test_token_in_query_string_is_accepted(listener):
    answer = listener.post("/dynamic-ingest?token=brightcove-hook-secret",
                           load_fixture("brightcove", "title_create__success"), token=None)
    assert answer.status_code == 200
