"""A worker outlives its Redis: started before it, or losing it mid-job, it waits and carries on.

RQ's worker retries a lost Redis only while it waits for a job. Anywhere else
(starting up, its bookkeeping around a job, its once-a-second suspension
check) the connection error ended ``work()``, and the worker process with it:
a worker started a moment before Redis, or one whose Redis restarted during
a job, stopped for good, and the webhooks' work waited for someone to notice.
"""
from __future__ import annotations

import signal

import pytest

from tests.conftest import TOKENS, asset_events, config_for, iconik_path
from tests.support.backends import RedisServer
from tests.support.peers import RecordingServer
from tests.support.processes import ListenerProcesses


@pytest.fixture
def stopped_redis():
    server = RedisServer()  # its port chosen, not started
    yield server
    server.stop()


@pytest.fixture
def iconik():
    server = RecordingServer()
    yield server
    server.close()


def post_asset(processes: ListenerProcesses, asset_id: str) -> None:
    import requests

    for event in asset_events(asset_id):
        answer = requests.post(processes.url + iconik_path(event), json=event, timeout=10,
                               headers={"Authorization": f"Bearer {TOKENS['iconik']}"})
        assert answer.status_code == 200, answer.text


def analysed(server: RecordingServer) -> list[str]:
    return sorted(request.path for request in server.requests)


def statuses(processes: ListenerProcesses) -> list[str]:
    return [action["status"] for action in processes.admin("/api/actions?kind=analyze")["items"]]


def test_a_worker_started_before_redis_waits_for_it(tmp_path, database_url, stopped_redis, iconik, clean):
    processes = ListenerProcesses(tmp_path, database_url, stopped_redis.url, config_for(iconik), "admin-x",
                                  mode="procfile").start()
    try:
        post_asset(processes, "asset-early")
        processes.wait_for(lambda: "waiting for Redis" in processes.logs(tail=None), timeout=20)
        assert processes.processes["worker"].poll() is None, processes.logs()
        stopped_redis.start()
        processes.wait_for(lambda: analysed(iconik), timeout=30)
        assert analysed(iconik) == ["/API/transcode/v1/analyze/assets/asset-early/"]
        assert processes.stop("worker", sig=signal.SIGTERM) == {"worker": 0}
    finally:
        processes.stop()


def test_a_worker_whose_redis_restarts_mid_job_carries_on(tmp_path, database_url, stopped_redis, clean):
    slow_iconik = RecordingServer(delay=2)  # Redis goes away while the first analysis waits for its answer
    processes = ListenerProcesses(tmp_path, database_url, stopped_redis.start().url, config_for(slow_iconik),
                                  "admin-x", mode="procfile").start()
    try:
        post_asset(processes, "asset-before")
        processes.wait_for(lambda: slow_iconik.requests, timeout=20, interval=0.05)
        stopped_redis.stop()
        post_asset(processes, "asset-during")  # recorded; handed over once Redis is back
        processes.wait_for(lambda: "waiting for Redis" in processes.logs(tail=None), timeout=20)
        assert processes.processes["worker"].poll() is None, processes.logs()
        stopped_redis.start()  # empty: the dispatcher hands the second analysis over again
        processes.wait_for(lambda: len(analysed(slow_iconik)) == 2, timeout=30)
        assert analysed(slow_iconik) == ["/API/transcode/v1/analyze/assets/asset-before/",
                                         "/API/transcode/v1/analyze/assets/asset-during/"]
        processes.wait_for(lambda: statuses(processes) == ["done", "done"], timeout=15)  # iconik answers late
        assert processes.stop("worker", sig=signal.SIGTERM) == {"worker": 0}
    finally:
        processes.stop()
        slow_iconik.close()


def test_a_worker_waiting_for_redis_stops_on_sigterm(tmp_path, database_url, stopped_redis, iconik, clean):
    processes = ListenerProcesses(tmp_path, database_url, stopped_redis.url, config_for(iconik), "admin-x",
                                  mode="procfile").start()
    try:
        processes.wait_for(lambda: "waiting for Redis" in processes.logs(tail=None), timeout=20)
        assert processes.stop("worker", sig=signal.SIGTERM, timeout=5) == {"worker": 0}
    finally:
        processes.stop()
