"""A worker stopped mid-job: SIGTERM lets the job finish; SIGKILL puts it back for another worker."""
from __future__ import annotations

import signal
import time

import pytest
import redis
import requests
from rq import Queue
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


class LostWorker:
    """A worker on a machine that was lost while it waited for a job: its BLMOVE is at the head of Redis's
    queue of blocked clients, and nothing will ever read the answer. Redis learns of a dead peer only from
    TCP keepalive, minutes later: until then it hands this connection the next job, which RQ moves to the
    queue's intermediate list on the way."""

    NAME = "lost-worker"

    def __init__(self, redis_url: str, queue_name: str) -> None:
        client = redis.Redis.from_url(redis_url)
        queue = Queue(queue_name, connection=client)
        self.connection = redis.Connection(**{**client.connection_pool.connection_kwargs, "client_name": self.NAME})
        self.connection.send_command("BLMOVE", queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT", 600)

        def blocked() -> bool:
            return any(c["name"] == self.NAME and c["cmd"] == "blmove" for c in client.client_list())

        deadline = time.monotonic() + 5
        while not blocked() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert blocked(), "the lost worker's BLMOVE did not block"

    def close(self) -> None:
        self.connection.disconnect()


def test_a_job_handed_to_a_lost_worker_runs_on_a_live_one(tmp_path, database_url, redis_url, clean, slow_iconik):
    slow_iconik.delay = 0
    processes = ListenerProcesses(tmp_path, database_url, redis_url, config_for(slow_iconik), "admin-x",
                                  mode="procfile").start()
    lost = None
    try:
        queue_name = processes.env["LISTENER_QUEUE"]
        lost = LostWorker(redis_url, queue_name)
        # The live worker blocked before the lost one did: a new one queues behind it, as after a restart.
        processes.stop("worker")
        processes.start_worker("worker-2")
        processes.wait_for(lambda: "listener.worker.start" in (tmp_path / "worker-2.log").read_text(), timeout=20)
        post_asset(processes, "asset-lost")
        queue = Queue(queue_name, connection=redis.Redis.from_url(redis_url))
        [stranded] = processes.wait_for(lambda: queue.intermediate_queue.get_job_ids(), timeout=10)
        assert stranded.startswith("action-")  # the lost worker's: nobody runs it from there
        action = processes.wait_for(lambda: (a := the_action(database_url))["status"] == "done" and a, timeout=30)
        assert action["attempts"] == 1  # it never started anywhere else
        assert len(slow_iconik.requests) == 1
        assert queue.intermediate_queue.get_job_ids() == []
        assert "listener.outbox.stranded" in (tmp_path / "worker-2.log").read_text()
    finally:
        if lost:
            lost.close()
        processes.stop()
