"""A worker stopped mid-job: SIGTERM lets the job finish; SIGKILL puts it back for another worker."""
from __future__ import annotations

import signal

import pytest
import requests
from sqlalchemy import select

from listener.db import get_engine
from listener.models import actions
from tests.conftest import TOKENS, asset_events, config_for, iconik_path
from tests.support.peers import RecordingServer
from tests.support.processes import ListenerProcesses


@pytest.fixture
def slow_iconik():
    server = RecordingServer(delay=3)  # keeps the analyze job running for 3 s
    yield server
    server.close()


def post_asset(processes: ListenerProcesses, asset_id: str) -> None:
    for event in asset_events(asset_id):
        path = iconik_path(event)
        answer = requests.post(processes.url + path, json=event, timeout=10,
                               headers={"Authorization": f"Bearer {TOKENS['iconik']}"})
        assert answer.status_code == 200


def the_action(database_url: str) -> dict:
    with get_engine(database_url).connect() as conn:
        [row] = conn.execute(select(actions)).all()
    return dict(row._mapping)


def test_sigterm_lets_the_running_job_finish(tmp_path, database_url, redis_url, clean, slow_iconik):
    processes = ListenerProcesses(tmp_path, database_url, redis_url, config_for(slow_iconik), "admin-x",
                                  mode="procfile").start()
    try:
        post_asset(processes, "asset-term")
        processes.wait_for(lambda: slow_iconik.requests, timeout=20, interval=0.05)
        assert the_action(database_url)["status"] == "running"
        codes = processes.stop("worker", sig=signal.SIGTERM, timeout=30)  # a PaaS restart
        assert codes == {"worker": 0}
        action = the_action(database_url)
        assert (action["status"], action["attempts"]) == ("done", 1)
    finally:
        processes.stop()


def test_worker_killed_mid_job_is_put_back_and_finished_by_another(tmp_path, database_url, redis_url, clean,
                                                                    slow_iconik):
    processes = ListenerProcesses(tmp_path, database_url, redis_url, config_for(slow_iconik), "admin-x",
                                  mode="procfile", extra_env={"LISTENER_HEARTBEAT_SECONDS": "0.5"}).start()
    try:
        post_asset(processes, "asset-kill")
        processes.wait_for(lambda: slow_iconik.requests, timeout=20, interval=0.05)
        processes.stop("worker", sig=signal.SIGKILL)  # the worker, its work horse and its scheduler
        assert the_action(database_url)["status"] == "running"  # left behind by the dead worker
        slow_iconik.delay = 0
        processes.start_worker("worker-2")
        action = processes.wait_for(lambda: (a := the_action(database_url))["status"] == "done" and a, timeout=30)
        assert action["attempts"] == 2  # the extra attempt is on the record
        assert len(slow_iconik.requests) == 2
        assert "listener.action.abandoned" in (tmp_path / "worker-2.log").read_text()
    finally:
        processes.stop()
