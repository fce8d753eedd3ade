"""A running job's heartbeat: one thread per process beats for each running action, only while it runs."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from jobs import heartbeat as heartbeat_module
from jobs.heartbeat import heartbeat
from listener.db import as_utc
from listener.models import actions
from tests.conftest import asset_events, config_for, iconik_path, rows

INTERVAL = 0.1
STALE = datetime.now(UTC) - timedelta(hours=1)


def running_actions(live, count: int) -> list[int]:
    for number in range(count):
        for event in asset_events(f"asset-hb-{number}"):
            live.post(iconik_path(event), event)
    ids = [action["id"] for action in rows(live.runtime, "actions")]
    with live.runtime.engine.begin() as conn:
        conn.execute(update(actions).values(status="running", attempts=1, updated_at=STALE))
    return ids


def beaten_at(live, action_id: int) -> datetime:
    return as_utc(rows(live.runtime, "actions", id=action_id)[0]["updated_at"])


def test_running_actions_are_beaten_for_while_their_block_runs_and_not_after(start_listener, iconik_api):
    live = start_listener(config_for(iconik_api))
    first, second, other_attempt = running_actions(live, 3)
    engine = live.runtime.engine
    threads_before = threading.active_count()
    with heartbeat(engine, first, 1, INTERVAL), heartbeat(engine, second, 1, INTERVAL), \
            heartbeat(engine, other_attempt, 2, INTERVAL):  # the action's attempt is 1: not this one's to beat
        time.sleep(4 * INTERVAL)
        assert threading.active_count() <= threads_before + 1  # one thread for the process, not one per job
        for action_id in (first, second):
            assert beaten_at(live, action_id) > datetime.now(UTC) - timedelta(seconds=1)
        assert beaten_at(live, other_attempt) == STALE
    last = beaten_at(live, first)
    time.sleep(4 * INTERVAL)
    assert beaten_at(live, first) == last  # the block ended: no more beats


def test_the_block_ends_only_once_a_beat_already_under_way_has_committed(start_listener, iconik_api, monkeypatch):
    live = start_listener(config_for(iconik_api))
    [action_id] = running_actions(live, 1)
    started, real_beat = threading.Event(), heartbeat_module._Heart._beat

    def slow_beat(beat):  # noqa: ANN001, ANN202
        started.set()
        time.sleep(3 * INTERVAL)
        real_beat(beat)

    monkeypatch.setattr(heartbeat_module._Heart, "_beat", staticmethod(slow_beat))
    with heartbeat(live.runtime.engine, action_id, 1, INTERVAL):
        assert started.wait(5)  # the block ends while a beat for its action is under way
    ended = beaten_at(live, action_id)
    assert ended != STALE  # that beat committed before the block ended
    time.sleep(5 * INTERVAL)
    assert beaten_at(live, action_id) == ended  # and none came after
