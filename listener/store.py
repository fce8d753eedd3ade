"""Recording a delivery: one transaction for the event, the item's new state and its actions.

The item row is upserted and locked first, so deliveries about the same item
are serialised (on PostgreSQL by the row lock, on SQLite by the write lock):
duplicate checks and "both halves seen" decisions see each other's effects.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine

from handlers.base import ActionRequest, Event, Ignored, ItemView, Transition
from listener.db import DriverCursor, Writer, moment_value, placeholder
from listener.sources import Source
from listener.workflows import workflow_actions


@dataclass(frozen=True)
class Recorded:
    status: str  # accepted, duplicate, ignored
    event_id: int
    reason: str | None = None
    item_id: int | None = None
    action_ids: list[int] = field(default_factory=list)  # new actions, to hand over after commit


class _EventRows(NamedTuple):  # a tuple, not a frozen dataclass: cheaper to make, once per webhook
    """An event's rows as far as they do not depend on what is stored, built before its transaction: on SQLite
    the transaction runs inside the write lock that every web worker queues for, so it holds the lock for the
    database's work alone."""

    # The item in the state its first delivery gives it: should it be new, it is inserted so and needs no UPDATE.
    item: dict[str, Any]
    event: dict[str, Any]  # the event as accepted, but its item_id
    first_requested: list[ActionRequest]  # the actions a new item's first state asks for


@dataclass(frozen=True)
class Delivery:
    """A call as it arrived, for the call log."""

    source: Source
    endpoint: str
    payload: Mapping[str, Any]
    received_at: datetime
    remote_addr: str | None = None
    payload_text: str | None = None  # the JSON body as received: stored as it is, not serialised again


class _Statements:
    """The hot path's statements as the driver's own SQL, written once per dialect.

    Built with SQLAlchemy they were constructed and compiled on every webhook (the
    upsert is not cacheable), which the benchmark profile showed as a fifth of the
    time; the rest of the code keeps using SQLAlchemy.
    """

    def __init__(self, dialect: str) -> None:
        postgres = dialect == "postgresql"
        value = placeholder(dialect)

        def json_value(name: str) -> str:
            return f"CAST({value(name)} AS JSONB)" if postgres else value(name)

        # PostgreSQL: the item is inserted in the state given, or, if it exists, left as it is and locked.
        # DO UPDATE (not DO NOTHING) so the row is returned, and locked, either way.
        self.lock_item = (
            f"{self._insert_item(value, json_value)} DO UPDATE SET key = excluded.key RETURNING id, state, data"
        )
        # SQLite (whose write lock is already held): insert a new item in its first state, else read it.
        self.insert_new_item = f"{self._insert_item(value, json_value)} DO NOTHING RETURNING id"
        self.find_item = f"SELECT id, state, data FROM items WHERE source = {value('source')} AND key = {value('key')}"
        columns = ("source", "endpoint", "received_at", "status", "reason", "change", "item_id", "dedupe_key",
                   "duplicate_of", "payload", "remote_addr")
        values = ", ".join(json_value(c) if c == "payload" else value(c) for c in columns)
        # A conflict on dedupe_key is a duplicate: the insert is the duplicate check, in one round trip.
        self.insert_event = (f"INSERT INTO events ({', '.join(columns)}) VALUES ({values}) "
                             "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id")
        self.find_event = f"SELECT id FROM events WHERE dedupe_key = {value('dedupe_key')}"
        self.update_item = (f"UPDATE items SET state = {value('state')}, data = {json_value('data')}, "
                            f"updated_at = {value('now')} WHERE id = {value('id')}")
        # PostgreSQL: the item upsert and the event insert in one statement, one round trip (SQLite has no
        # INSERT inside WITH). The event's insert reads the item's id, so the item row is locked first.
        # A new item is inserted with the state the delivery gives it (xmax = 0 tells an insert from an
        # update), so it needs no UPDATE afterwards: another round trip fewer for every first delivery.
        self.lock_item_and_insert_event = (
            f"WITH item AS ({self.lock_item}, (xmax = 0) AS inserted), "
            f"event AS (INSERT INTO events ({', '.join(columns)}) "
            f"SELECT {values.replace(value('item_id'), 'item.id')} FROM item "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id) "
            "SELECT item.id, item.state, item.data, (SELECT id FROM event), item.inserted FROM item"
        ) if postgres else None
        # PostgreSQL: an item's first delivery, item and event in one statement that is a transaction by itself
        # (autocommit): no BEGIN and COMMIT round trips. It inserts nothing, and returns no row, when the item
        # exists. A new item has no events, so its event cannot be a duplicate: the insert takes no ON CONFLICT,
        # and should its dedupe_key be taken after all, the statement fails whole.
        self.insert_first_delivery = (
            f"WITH item AS ({self._insert_item(value, json_value)} DO NOTHING RETURNING id) "
            f"INSERT INTO events ({', '.join(columns)}) SELECT {values.replace(value('item_id'), 'item.id')} "
            "FROM item RETURNING item_id, id"
        ) if postgres else None
        # Actions: a new one is queued, with nothing done yet.
        action_columns = ("item_id, event_id, kind, target, workflow, once_key, status, attempts, bytes_done, "
                          "created_at, updated_at")
        action_values = (f"{value('item_id')}, {value('event_id')}, {value('kind')}, {value('target')}, "
                         f"{value('workflow')}, {value('once_key')}, 'queued', 0, 0, {value('now')}, {value('now')}")
        once_only = " ON CONFLICT (item_id, once_key) DO NOTHING RETURNING id"
        self.insert_action = f"INSERT INTO actions ({action_columns}) VALUES ({action_values})"
        self.insert_once_action = f"{self.insert_action}{once_only}"
        self.insert_action += " RETURNING id"
        # PostgreSQL: an existing item's new state and the first action it asks for, when that one is a ``once``
        # action (iconik's analysis), in one statement: a round trip fewer in the transaction of every delivery
        # that starts work. The insert reads the updated row's id, so it runs once the item is updated.
        self.update_item_and_insert_once_action = (
            f"WITH updated AS ({self.update_item} RETURNING id) INSERT INTO actions ({action_columns}) "
            f"SELECT {action_values.replace(value('item_id'), 'updated.id')} FROM updated{once_only}"
        ) if postgres else None
        # An identical action still waiting for its first attempt: a repeated request joins it.
        same = "IS NOT DISTINCT FROM" if postgres else "IS"  # NULL-safe equality
        self.find_queued_twin = (
            f"SELECT id FROM actions WHERE item_id = {value('item_id')} AND kind = {value('kind')} "
            f"AND target = {value('target')} AND workflow {same} {value('workflow')} "
            "AND status = 'queued' AND attempts = 0 LIMIT 1"
        )
        self.time = moment_value(dialect)

    @staticmethod
    def _insert_item(value: Callable[[str], str], json_value: Callable[[str], str]) -> str:
        return ("INSERT INTO items (source, key, state, data, created_at, updated_at) "
                f"VALUES ({value('source')}, {value('key')}, {value('state')}, {json_value('data')}, {value('now')}, "
                f"{value('now')}) ON CONFLICT (source, key)")


@functools.cache
def _statements(dialect: str) -> _Statements:
    return _Statements(dialect)


class EventStore:
    def __init__(self, engine: Engine) -> None:
        self._sql = _statements(engine.dialect.name)
        if self._sql.insert_first_delivery:
            # PostgreSQL: a statement outside the Writer's transactions is a transaction by itself; the
            # Writer's transactions send BEGIN themselves (listener.db._driver_begin).
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.writer = Writer(engine)
        # The (source, change) pairs whose last delivery found its item stored already, as an iconik proxy
        # finds its asset's create. On PostgreSQL they go straight to the transaction: the single statement
        # serves only a new item, and for them it was a round trip and a failed insert for nothing. On SQLite
        # they look their item up before trying to insert it. One that finds its item new after all puts its
        # pair back on the first path (``_record_event``).
        self._finds_item: set[tuple[str, str]] = set()

    def record(self, delivery: Delivery, outcome: Event | Ignored, *, replay_of: int | None = None) -> Recorded:
        """Record one delivery. ``replay_of``: an admin's replay of that event, past the duplicate check
        (its actions still exist at most once per ``once`` key, so done work does not run again).

        On PostgreSQL a delivery that is one insert (an ignored call) or one statement (an item's first
        delivery that requests no action: most first deliveries) is sent alone, one round trip where a
        transaction takes three; anything else, or a first delivery that finds its item exists, runs in a
        transaction.
        """
        rows = self._event_rows(delivery, outcome, replay_of) if isinstance(outcome, Event) else None
        # A first delivery's actions go in one transaction with its item; a kind of delivery that found its
        # item stored last time goes to the transaction at once.
        alone = rows is None or (not rows.first_requested
                                 and (delivery.source.name, outcome.change) not in self._finds_item)
        if self._sql.insert_first_delivery and not replay_of and alone:
            recorded = self.writer.run_alone(lambda conn: self._record_alone(conn, delivery, outcome, rows))
            if recorded is not None:
                return recorded
            # The item was stored: the transaction finds it, and ``_record_event`` notes its kind.
        return self.writer.run(lambda conn: self._record(conn, delivery, outcome, rows, replay_of))

    def _event_rows(self, delivery: Delivery, event: Event, replay_of: int | None) -> _EventRows:
        source = delivery.source
        first_state = source.handler.apply(ItemView(None, {}), event, source.context)
        # A replay is past the duplicate check: it takes no dedupe_key.
        dedupe_key = f"{source.name}:{event.key}:{event.once}" if event.once and not replay_of else None
        return _EventRows(
            item={"source": source.name, "key": event.key, "state": first_state.state,
                  "data": json.dumps(first_state.data, default=str), "now": self._sql.time(delivery.received_at)},
            event=self._event_row(delivery, status="accepted", change=event.change, dedupe_key=dedupe_key,
                                  reason=f"replay of event {replay_of}" if replay_of else None),
            first_requested=self._requested(delivery, first_state),
        )

    def _record_alone(self, conn: Connection, delivery: Delivery, outcome: Event | Ignored,
                      rows: _EventRows | None) -> Recorded | None:
        """PostgreSQL, autocommit: the delivery in one statement, or None if it needs a transaction."""
        with DriverCursor(conn) as cursor:
            if isinstance(outcome, Ignored):
                return self._record_ignored(cursor, delivery, outcome, None)
            assert rows is not None  # noqa: S101 - record() makes them for every Event
            row = cursor.one_or_integrity_error(self._sql.insert_first_delivery, {**rows.event, **rows.item})
        if row is None:
            return None  # the item exists (or, against every expectation, its dedupe_key was taken)
        item_id, event_id = row
        return Recorded("accepted", event_id, item_id=item_id)

    def _record(self, conn: Connection, delivery: Delivery, outcome: Event | Ignored, rows: _EventRows | None,
                replay_of: int | None) -> Recorded:
        # The statements run on the driver's cursor, in a transaction the Writer begins and commits on the
        # driver's connection: no SQLAlchemy execution machinery on the hot path. Driver errors are wrapped
        # as SQLAlchemy's would be.
        with DriverCursor(conn) as cursor:
            if isinstance(outcome, Ignored):
                return self._record_ignored(cursor, delivery, outcome, replay_of)
            assert rows is not None  # noqa: S101 - record() makes them for every Event
            return self._record_event(cursor, delivery, outcome, rows)

    def _record_ignored(self, cursor: DriverCursor, delivery: Delivery, outcome: Ignored,
                        replay_of: int | None) -> Recorded:
        reason = f"replay of event {replay_of}: {outcome.reason}" if replay_of else outcome.reason
        event_id = self._log(cursor, delivery, status="ignored", reason=reason)
        return Recorded("ignored", event_id, reason=reason)

    @staticmethod
    def _requested(delivery: Delivery, transition: Transition) -> list[ActionRequest]:
        """The actions a transition asks for: its own and those of the workflows for the state it enters."""
        source = delivery.source
        return transition.actions + workflow_actions(source.handler, transition.entered, transition.data,
                                                     source.context.workflows)

    def _record_event(self, cursor: DriverCursor, delivery: Delivery, event: Event, rows: _EventRows) -> Recorded:
        source = delivery.source
        if self._sql.lock_item_and_insert_event:
            item_id, state, data, event_id, inserted = cursor.one(self._sql.lock_item_and_insert_event,
                                                                  {**rows.event, **rows.item})
        else:
            item_id, state, data, inserted = self._lock_item(cursor, rows.item,
                                                             (source.name, event.change) in self._finds_item)
            event_id = self._insert_event(cursor, {**rows.event, "item_id": item_id})
        if event_id is None:  # a new item has no events yet, so this is an item that existed
            original = cursor.one(self._sql.find_event, {"dedupe_key": rows.event["dedupe_key"]})[0]
            self._log(cursor, delivery, status="duplicate", item_id=item_id, change=event.change,
                      duplicate_of=original)
            return Recorded("duplicate", original, item_id=item_id)

        new_ids: list[int] = []
        if inserted:  # inserted in its first state already
            requested = rows.first_requested
            self._finds_item.discard((source.name, event.change))
        else:  # the one place the store learns that this kind of delivery finds its item stored
            self._finds_item.add((source.name, event.change))
            data = data if isinstance(data, dict) else json.loads(data or "{}")  # SQLite's JSON is text
            transition = source.handler.apply(ItemView(state, data), event, source.context)
            requested = self._requested(delivery, transition)
            update = {"state": transition.state, "data": json.dumps(transition.data, default=str),
                      "now": self._sql.time(delivery.received_at), "id": item_id}
            if self._sql.update_item_and_insert_once_action and requested and requested[0].once is not None:
                first, requested = requested[0], requested[1:]
                added = cursor.one(self._sql.update_item_and_insert_once_action,
                                   {**_action_values(self._sql, item_id, event_id, first, delivery.received_at),
                                    **update})
                new_ids = [added[0]] if added else []  # none if the item has had that action before
            else:
                cursor.run(self._sql.update_item, update)
        action_ids = new_ids + _add_actions(cursor, self._sql, item_id, event_id, requested, delivery.received_at)
        return Recorded("accepted", event_id, reason=rows.event["reason"], item_id=item_id, action_ids=action_ids)

    def _lock_item(self, cursor: DriverCursor, item_row: dict[str, Any],
                   expect_stored: bool) -> tuple[int, str | None, Any, bool]:
        """SQLite (whose write lock is held): the item's id, state and data, and whether it was inserted just now.
        ``expect_stored``: look it up first, as such deliveries found it last time; else try to insert it first."""
        where = {"source": item_row["source"], "key": item_row["key"]}
        if expect_stored and (found := cursor.one(self._sql.find_item, where)):
            return (*found, False)
        inserted = cursor.one(self._sql.insert_new_item, item_row)
        if inserted:
            return inserted[0], item_row["state"], item_row["data"], True
        return (*cursor.one(self._sql.find_item, where), False)

    def _log(self, cursor: DriverCursor, delivery: Delivery, *, status: str, reason: str | None = None,
             item_id: int | None = None, change: str | None = None, dedupe_key: str | None = None,
             duplicate_of: int | None = None) -> int | None:
        """Insert an event; None when its dedupe_key was already taken (a duplicate)."""
        return self._insert_event(cursor, {
            **self._event_row(delivery, status=status, reason=reason, change=change, dedupe_key=dedupe_key,
                              duplicate_of=duplicate_of), "item_id": item_id})

    def _insert_event(self, cursor: DriverCursor, row: dict[str, Any]) -> int | None:
        inserted = cursor.one(self._sql.insert_event, row)
        return inserted[0] if inserted else None

    def _event_row(self, delivery: Delivery, *, status: str, reason: str | None = None, change: str | None = None,
                   dedupe_key: str | None = None, duplicate_of: int | None = None) -> dict[str, Any]:
        """An event's columns but its item_id."""
        return {
            "source": delivery.source.name, "endpoint": delivery.endpoint,
            "received_at": self._sql.time(delivery.received_at), "status": status, "reason": reason,
            "change": change, "dedupe_key": dedupe_key, "duplicate_of": duplicate_of,
            "payload": delivery.payload_text or json.dumps(dict(delivery.payload), default=str),
            "remote_addr": delivery.remote_addr,
        }


def add_actions(conn: Connection, item_id: int, event_id: int | None, requested: list[ActionRequest],
                now: datetime) -> list[int]:
    """Insert the requested actions that do not exist yet, in ``conn``'s transaction; return the new ids.

    ``once`` actions exist at most once per item (a unique constraint backs this);
    others are coalesced with an identical action that is still queued.
    """
    if not requested:
        return []
    with DriverCursor(conn) as cursor:
        return _add_actions(cursor, _statements(conn.dialect.name), item_id, event_id, requested, now)


def _add_actions(cursor: DriverCursor, sql: _Statements, item_id: int, event_id: int | None,
                 requested: list[ActionRequest], now: datetime) -> list[int]:
    new_ids = []
    for request in requested:
        values = _action_values(sql, item_id, event_id, request, now)
        if request.once is None:
            if cursor.one(sql.find_queued_twin, values) is None:
                new_ids.append(cursor.one(sql.insert_action, values)[0])
            continue
        inserted = cursor.one(sql.insert_once_action, values)
        if inserted is not None:
            new_ids.append(inserted[0])
    return new_ids


def _action_values(sql: _Statements, item_id: int, event_id: int | None, request: ActionRequest,
                   now: datetime) -> dict[str, Any]:
    return {"item_id": item_id, "event_id": event_id, "kind": request.kind, "target": request.target,
            "workflow": request.workflow, "once_key": request.once, "now": sql.time(now)}
