"""scoopa: new files recorded, validation probes ignored (SPEC 3)."""
from __future__ import annotations

from datetime import datetime, timedelta

from tests.conftest import base_config, load_fixture, rows


def test_new_file_fixture_records_the_file(listener):
    answer = listener.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    [item] = rows(listener.runtime, "items")
    assert (item["source"], item["key"], item["state"]) == ("scoopa", "mediapool:535986", "received")
    data = item["data"]
    assert data["file_name"] == "server_push.svg"
    assert data["file_size_in_bytes"] == 5007
    assert (data["folder_id"], data["folder_name"]) == (62251, "Test Webhook")
    assert data["download_url"].startswith("https://")
    [event] = rows(listener.runtime, "events")
    expires = datetime.fromisoformat(data["download_url_expires_at"])
    received = event["received_at"].replace(tzinfo=expires.tzinfo)
    assert abs(expires - received - timedelta(hours=24)) < timedelta(seconds=5)


def test_validation_probe_is_ignored_and_records_no_item(listener):
    answer = listener.post("/scoopa", load_fixture("scoopa", "validation__probe"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "ignored"
    assert answer.json()["reason"] == "endpoint validation test"
    assert rows(listener.runtime, "items") == []
    assert rows(listener.runtime, "actions") == []
    [event] = rows(listener.runtime, "events")
    assert event["status"] == "ignored"


def test_no_download_without_workflow_or_download_flag(listener):
    listener.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    assert rows(listener.runtime, "actions") == []


def test_download_flag_schedules_one_download(start_listener):
    config = base_config()
    config["sources"]["scoopa"]["download"] = True
    live = start_listener(config)
    live.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    live.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    [action] = rows(live.runtime, "actions")
    assert (action["kind"], action["status"]) == ("download", "queued")


def test_matching_workflow_schedules_a_download(start_listener):
    config = base_config(
        ftp_servers={"playout": {"host": "127.0.0.1"}},
        workflows=[{"name": "to-playout", "source": "scoopa", "folders": [62251], "filter": "push",
                    "action": "ftp_push", "ftp_server": "playout", "target_dir": "/in"}],
    )
    live = start_listener(config)
    live.post("/scoopa", load_fixture("scoopa", "new_file__video"))
    other = load_fixture("scoopa", "new_file__video") | {"file_id": 2, "folder_id": 1}
    live.post("/scoopa", other)
    downloads = rows(live.runtime, "actions", kind="download")
    assert [a["item_id"] for a in downloads] == [rows(live.runtime, "items")[0]["id"]]


def test_file_size_must_be_a_number(listener):
    payload = load_fixture("scoopa", "new_file__video") | {"file_size_in_bytes": "big"}
    answer = listener.post("/scoopa", payload)
    assert answer.status_code == 400
    assert "file_size_in_bytes" in answer.json()["message"]
    assert rows(listener.runtime, "items") == []


def test_other_origin_is_ignored(listener):
    answer = listener.post("/scoopa", load_fixture("scoopa", "new_file__video") | {"origin": "elsewhere"})
    assert answer.json()["status"] == "ignored"
    assert rows(listener.runtime, "items") == []
