"""/metrics: events by source and status, the state of the work, summed over gunicorn's processes."""
from __future__ import annotations

import re

import requests

from tests.conftest import TOKENS, asset_events, config_for, iconik_path, load_fixture
from tests.support.processes import ListenerProcesses


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if found == wanted:
                return float(match.group(3))
    return None


def test_metrics_count_events_and_actions_in_process(listener):
    listener.post("/create", load_fixture("iconik", "create__asset"))
    listener.post("/create", load_fixture("iconik", "create__asset"))
    listener.post("/scoopa", load_fixture("scoopa", "validation__probe"))
    listener.post("/create", {"realm": 1})
    text = listener.get("/metrics").text
    assert metric(text, "listener_events_total", source="iconik", status="duplicate") >= 1
    assert metric(text, "listener_events_total", source="scoopa", status="ignored") >= 1
    assert metric(text, "listener_events_total", source="iconik", status="rejected") >= 1
    assert metric(text, "listener_queue_depth") == 0
    assert metric(text, "listener_oldest_pending_action_seconds") == 0


def test_metrics_sum_over_gunicorn_workers_and_read_the_work(tmp_path, database_url, redis_url, clean, iconik_api):
    processes = ListenerProcesses(tmp_path, database_url, redis_url, config_for(iconik_api), "admin-x",
                                  mode="procfile").start()
    try:
        session = requests.Session()  # new connections spread the calls over both gunicorn workers
        for index in range(6):
            for event in asset_events(f"m-{index}"):
                path = iconik_path(event)
                answer = requests.post(processes.url + path, json=event, timeout=10,
                                       headers={"Authorization": f"Bearer {TOKENS['iconik']}"})
                assert answer.status_code == 200
        processes.wait_for(lambda: len(iconik_api.requests) == 6, timeout=30)
        processes.wait_for(lambda: metric(session.get(processes.url + "/metrics").text, "listener_actions",
                                          kind="analyze", status="done") == 6, timeout=15)
        text = session.get(processes.url + "/metrics").text
        assert metric(text, "listener_events_total", source="iconik", status="accepted") == 12
        assert metric(text, "listener_action_duration_seconds_count", kind="analyze") == 6
        assert metric(text, "listener_webhook_seconds_count", source="iconik") == 12
    finally:
        processes.stop()
