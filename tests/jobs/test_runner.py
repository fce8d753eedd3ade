"""The worker's claim and finish: on a connection its thread keeps, replaced when the database dropped it."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from jobs import runner
from tests.conftest import asset_events, iconik_path, rows
from tests.support.backends import end_from_the_server


def queued_action(live, key: str = "asset-k") -> int:
    """The analysis that an iconik asset's create and closed proxy queue."""
    before = {action["id"] for action in rows(live.runtime, "actions")}
    for body in asset_events(key):
        live.post(iconik_path(body), body)
    [action_id] = {action["id"] for action in rows(live.runtime, "actions")} - before
    return action_id


def test_claim_and_finish_check_no_connection_out_of_the_pool_once_the_thread_has_one(start_listener):
    live = start_listener()
    action_id = queued_action(live)
    engine = live.runtime.engine
    runner.finish(live.runtime, -1, "done")  # the thread's first transaction: its connection comes from the pool
    checkouts = []
    def count(*_args) -> None:
        checkouts.append(1)

    event.listen(engine, "checkout", count)
    try:
        action, item = runner.claim(live.runtime, action_id)
        runner.finish(live.runtime, action_id, "done")
    finally:
        event.remove(engine, "checkout", count)
    assert checkouts == []
    assert (action["status"], action["attempts"], item["key"]) == ("running", 1, "asset-k")
    assert isinstance(action["started_at"], datetime) and isinstance(item["data"], dict)
    [stored] = rows(live.runtime, "actions")
    assert (stored["status"], stored["attempts"]) == ("done", 1)
    assert stored["finished_at"] >= stored["started_at"]


def test_a_finish_after_the_database_dropped_the_kept_connection_is_recorded(start_listener):
    live = start_listener()
    if live.runtime.engine.dialect.name != "postgresql":
        pytest.skip("a SQLite connection is a file the process holds: no server drops it")
    action_id = queued_action(live)
    runner.claim(live.runtime, action_id)
    kept = runner._records(live.runtime.engine).writer._kept.conn
    end_from_the_server(live.runtime.engine, kept)
    runner.finish(live.runtime, action_id, "done")  # a long job's end, after a database restart
    [stored] = rows(live.runtime, "actions")
    assert stored["status"] == "done"
    assert runner._records(live.runtime.engine).writer._kept.conn is not kept


def test_a_claim_commits_without_waiting_for_the_flush_and_a_finish_waits(start_listener):
    live = start_listener()
    engine = live.runtime.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's synchronous setting is the connection's, the same for every commit")
    looked_into, claimed = queued_action(live, "asset-a"), queued_action(live, "asset-b")
    records = runner._records(engine)
    values = {"id": looked_into, "now": records.time(datetime.now(UTC))}
    with engine.begin() as conn:  # a claim in a transaction of its own, to look inside it before it commits
        assert records.claim(conn, values) is not None
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    # Only that transaction's: the worker's kept connection, on which the finish commits, still waits.
    assert runner.claim(live.runtime, claimed) is not None
    kept = runner._records(engine).writer._kept.conn
    assert kept.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    runner.finish(live.runtime, claimed, "done")
    stored = {action["id"]: action["status"] for action in rows(live.runtime, "actions")}
    assert stored == {looked_into: "running", claimed: "done"}
