"""Recording a delivery: on PostgreSQL an item's first delivery is one statement, anything else a transaction."""
from __future__ import annotations

import pytest
from sqlalchemy import text

import listener.db
from listener.store import _statements
from tests.conftest import asset_events, base_config, load_fixture, rows

TAKEN_ASSET = "c0ffee00-0000-4000-8000-000000000001"


def spy(monkeypatch, owner, name: str, note) -> None:  # noqa: ANN001
    """``owner.name`` replaced by a wrapper that calls ``note`` with the call's arguments (but the first, for a
    method: its instance) before the real one runs."""
    real = getattr(owner, name)
    is_method = isinstance(owner, type)

    def spied(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        note(*(args[1:] if is_method else args), **kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spied)


@pytest.fixture
def transactions(monkeypatch):
    """Every transaction the store begins on the driver's connection, as a list that grows."""
    begun = []
    spy(monkeypatch, listener.db, "_driver_begin", begun.append)
    return begun


@pytest.fixture
def tried_alone(monkeypatch):
    """Every delivery the store tried as a single statement outside a transaction, as a list that grows."""
    tried = []
    spy(monkeypatch, listener.db.Writer, "run_alone", tried.append)
    return tried


def spy_on_statements(monkeypatch, note) -> None:  # noqa: ANN001
    """``note(sql)`` for every statement the store sends on the driver's cursor, before it is sent."""
    spy(monkeypatch, listener.db.DriverCursor, "run", lambda sql, _params: note(sql))


@pytest.fixture
def item_statements(monkeypatch):
    """What the store asked of the items table, in order: "insert" or "select" for each statement."""
    asked = []

    def note(sql: str) -> None:
        if sql.startswith(("INSERT INTO items", "SELECT id, state, data FROM items")):
            asked.append(sql.split()[0].lower())

    spy_on_statements(monkeypatch, note)
    return asked


@pytest.fixture
def sent(monkeypatch):
    """Every statement the store sent on the driver's cursor, in order, as a list that grows."""
    statements = []
    spy_on_statements(monkeypatch, statements.append)
    return statements


def postgresql_only(listener) -> None:  # noqa: ANN001
    if listener.runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's webhook path always takes its write lock in a transaction")


def test_on_postgresql_a_first_delivery_and_an_ignored_call_need_no_transaction(listener, transactions):
    postgresql_only(listener)
    create, proxy = asset_events("first-delivery-asset")
    assert listener.post("/create", create).json()["status"] == "accepted"
    assert listener.post("/create", {**create, "event_type": "collections"}).json()["status"] == "ignored"
    assert transactions == []
    [item] = rows(listener.runtime, "items")
    assert item["state"] == "created"
    assert [e["status"] for e in rows(listener.runtime, "events")] == ["accepted", "ignored"]

    # The item exists now: its next delivery reads and changes it in a transaction.
    assert listener.post("/proxy", proxy).json()["status"] == "accepted"
    assert len(transactions) == 1
    assert rows(listener.runtime, "items")[0]["state"] == "ready"
    assert [a["kind"] for a in rows(listener.runtime, "actions")] == ["analyze"]


def test_a_first_delivery_that_requests_an_action_is_stored_with_it_in_a_transaction(start_listener,
                                                                                     transactions):
    config = base_config()
    config["sources"]["scoopa"]["download"] = True
    live = start_listener(config)
    assert live.post("/scoopa", load_fixture("scoopa", "new_file__video")).json()["status"] == "accepted"
    assert len(transactions) == 1
    [item] = rows(live.runtime, "items")
    assert [(a["kind"], a["item_id"]) for a in rows(live.runtime, "actions")] == [("download", item["id"])]


def test_a_first_delivery_whose_dedupe_key_is_taken_is_a_duplicate(listener):
    """Cannot happen through the endpoints (a new item has no events); the store still answers it sensibly:
    on PostgreSQL the single statement fails whole, and the transaction records a duplicate."""
    create, _ = asset_events("the-original-asset")
    original = listener.post("/create", create).json()["event_id"]
    with listener.runtime.engine.begin() as conn:
        conn.execute(text("UPDATE events SET dedupe_key = :taken WHERE id = :id"),
                     {"taken": f"iconik:{TAKEN_ASSET}:created", "id": original})
    taken, _ = asset_events(TAKEN_ASSET)
    assert listener.post("/create", taken).json() == {"status": "duplicate", "event_id": original}
    assert [e["status"] for e in rows(listener.runtime, "events")] == ["accepted", "duplicate"]
    assert {i["key"] for i in rows(listener.runtime, "items")} == {"the-original-asset", TAKEN_ASSET}


def test_on_postgresql_a_kind_of_delivery_that_found_its_item_stored_goes_straight_to_a_transaction(
        listener, transactions, tried_alone):
    postgresql_only(listener)
    for asset in ("proxy-after-create-1", "proxy-after-create-2"):
        create, proxy = asset_events(asset)
        assert listener.post("/create", create).json()["status"] == "accepted"
        assert listener.post("/proxy", proxy).json()["status"] == "accepted"
    # The first proxy tried the single statement, found its asset stored and ran a transaction; the second
    # went straight to its transaction.
    assert (len(tried_alone), len(transactions)) == (3, 2)

    # A proxy before its create finds no item: recorded all the same, in a transaction, and the next proxy
    # tries the single statement again.
    for asset in ("proxy-first-1", "proxy-first-2"):
        assert listener.post("/proxy", asset_events(asset)[1]).json()["status"] == "accepted"
    assert (len(tried_alone), len(transactions)) == (4, 3)
    states = {item["key"]: item["state"] for item in rows(listener.runtime, "items")}
    assert states == {"proxy-after-create-1": "ready", "proxy-after-create-2": "ready",
                      "proxy-first-1": "proxy_ready", "proxy-first-2": "proxy_ready"}
    assert len([a for a in rows(listener.runtime, "actions") if a["kind"] == "analyze"]) == 2
    assert [e["status"] for e in rows(listener.runtime, "events")] == ["accepted"] * 6


def test_on_sqlite_a_kind_of_delivery_that_found_its_item_stored_looks_it_up_before_inserting(
        listener, item_statements):
    if listener.runtime.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL locks or inserts the item in one statement")
    for asset in ("proxy-after-create-1", "proxy-after-create-2"):
        create, proxy = asset_events(asset)
        assert listener.post("/create", create).json()["status"] == "accepted"
        assert listener.post("/proxy", proxy).json()["status"] == "accepted"
    # The first proxy tried to insert its asset and found it stored; the second looked it up at once.
    assert item_statements == ["insert", "insert", "select", "insert", "select"]

    # A proxy before its create looks for its item, finds none and inserts it; the next one inserts first again.
    item_statements.clear()
    for asset in ("proxy-first-1", "proxy-first-2"):
        assert listener.post("/proxy", asset_events(asset)[1]).json()["status"] == "accepted"
    assert item_statements == ["select", "insert", "insert"]
    states = {item["key"]: item["state"] for item in rows(listener.runtime, "items")}
    assert states == {"proxy-after-create-1": "ready", "proxy-after-create-2": "ready",
                      "proxy-first-1": "proxy_ready", "proxy-first-2": "proxy_ready"}
    assert len([a for a in rows(listener.runtime, "actions") if a["kind"] == "analyze"]) == 2
    assert [e["status"] for e in rows(listener.runtime, "events")] == ["accepted"] * 6


def test_on_postgresql_a_delivery_that_starts_work_updates_its_item_and_adds_the_action_in_one_statement(
        listener, sent):
    postgresql_only(listener)
    sql = _statements("postgresql")
    for asset in ("warm-up-asset", "one-statement-asset"):  # the first proxy learns that proxies find their asset
        create, proxy = asset_events(asset)
        assert listener.post("/create", create).json()["status"] == "accepted"
        sent.clear()
        answer = listener.post("/proxy", proxy).json()
    # The item locked and the event inserted; then the item's new state and its analysis: two statements.
    assert sent == [sql.lock_item_and_insert_event, sql.update_item_and_insert_once_action]
    item = rows(listener.runtime, "items", key="one-statement-asset")[0]
    [action] = rows(listener.runtime, "actions", item_id=item["id"])
    assert item["state"] == "ready"
    assert (action["kind"], action["once_key"], action["status"], action["event_id"]) == (
        "analyze", "analyze", "queued", answer["event_id"])

    # The item made "created" again, and the proxy replayed: the item is updated, and the analysis, which
    # exists already, is not added again.
    with listener.runtime.engine.begin() as conn:
        conn.execute(text("UPDATE items SET state = 'created', data = CAST(:data AS JSONB) WHERE id = :id"),
                     {"data": '{"created": true}', "id": item["id"]})
    sent.clear()
    replayed = listener.admin(f"/api/events/{answer['event_id']}/replay", "POST").json()
    assert (replayed["status"], replayed["actions"]) == ("accepted", [])
    assert sent[-1] == sql.update_item_and_insert_once_action
    assert rows(listener.runtime, "items", key="one-statement-asset")[0]["state"] == "ready"
    assert [a["id"] for a in rows(listener.runtime, "actions", item_id=item["id"])] == [action["id"]]
