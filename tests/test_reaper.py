"""Actions left running by a dead worker go back to the queue (or fail when out of attempts)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from rq import Queue
from sqlalchemy import update

from listener.models import actions
from listener.outbox import Dispatcher, Outbox
from tests.conftest import asset_events, config_for, iconik_path, rows
from tests.support.peers import RecordingServer


def running_action(live, attempts: int, heartbeat_age: float) -> dict:
    for event in asset_events("asset-r"):
        live.post(iconik_path(event), event)
    [action] = rows(live.runtime, "actions")
    Queue(live.runtime.settings.queue_name, connection=live.runtime.redis()).empty()
    with live.runtime.engine.begin() as conn:
        conn.execute(update(actions).where(actions.c.id == action["id"]).values(
            status="running", attempts=attempts, updated_at=datetime.now(UTC) - timedelta(seconds=heartbeat_age)))
    return action


def dispatcher_for(live) -> Dispatcher:
    connection = redis.Redis.from_url(live.runtime.settings.redis_url)
    return Dispatcher(live.runtime.engine, Outbox(connection, live.runtime.settings.queue_name),
                      config=live.runtime.config, stale_after=30)


def test_abandoned_action_is_requeued_and_handed_over(start_listener):
    server = RecordingServer()
    live = start_listener(config_for(server))
    action = running_action(live, attempts=1, heartbeat_age=60)
    assert dispatcher_for(live).run_once() == 1
    [after] = rows(live.runtime, "actions")
    assert (after["status"], after["attempts"]) == ("queued", 1)
    assert "stopped without finishing" in after["error"]
    queue = Queue(live.runtime.settings.queue_name, connection=live.runtime.redis())
    assert queue.job_ids == [f"action-{action['id']}-1"]
    server.close()


def test_live_heartbeat_is_left_alone(start_listener):
    live = start_listener()
    running_action(live, attempts=1, heartbeat_age=5)
    assert dispatcher_for(live).run_once() == 0
    assert rows(live.runtime, "actions")[0]["status"] == "running"


def test_abandoned_action_out_of_attempts_fails(start_listener):
    live = start_listener()  # retry schedule of two delays: three attempts in all
    running_action(live, attempts=3, heartbeat_age=60)
    assert dispatcher_for(live).run_once() == 0
    [after] = rows(live.runtime, "actions")
    assert after["status"] == "failed" and "no attempts left" in after["error"]
