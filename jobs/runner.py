"""The one RQ entry point: load an action by id, claim it, run its kind, record the outcome.

Claiming is an atomic ``queued -> running`` update, so an action handed over
twice, or retried by hand while it runs, still runs once. Failed attempts are
put back as ``queued`` with ``not_before`` and scheduled through RQ; the last
one marks the action ``failed``. RQ sees a failure as a failure (the job
raises after recording it), never as a quiet success.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Table, update

from jobs.context import ActionContext
from jobs.errors import ActionError, ActionFailed, PermanentError, Postpone
from jobs.heartbeat import heartbeat
from listener.db import DriverCursor, Writer, moment_value, placeholder
from listener.models import actions, items
from listener.outbox import Outbox, Pending
from listener.outbox import job_id as rq_job_id
from listener.runtime import Runtime, current

log = logging.getLogger(__name__)


def run_action(action_id: int) -> str:
    runtime = current()
    claimed = claim(runtime, action_id)
    if claimed is None:
        log.info("listener.action.skipped action=%s reason=not queued", action_id)
        return "skipped"
    action, item = claimed
    context = ActionContext(action=action, item=item, config=runtime.config, settings=runtime.settings,
                            engine=runtime.engine)
    module = importlib.import_module(f"jobs.{action['kind']}")
    log.info("listener.action.start action=%s kind=%s source=%s key=%s attempt=%s",
             action_id, action["kind"], item["source"], item["key"], action["attempts"])
    try:
        with heartbeat(runtime.engine, action_id, action["attempts"], runtime.settings.heartbeat_seconds):
            module.run(context)
    except Postpone as wait:
        postpone(runtime, action, item, wait)
        return "postponed"
    except ActionError as error:
        outcome = record_failure(runtime, action, item, error)
        raise ActionFailed(f"action {action_id} attempt {action['attempts']}: {error} ({outcome})") from error
    except Exception as error:  # an unexpected error is retried like any other failed attempt
        log.exception("listener.action.crashed action=%s", action_id)
        outcome = record_failure(runtime, action, item, error)
        raise ActionFailed(f"action {action_id} attempt {action['attempts']}: {error} ({outcome})") from error
    finish(runtime, action_id, "done")
    log.info("listener.action.done action=%s kind=%s source=%s key=%s attempt=%s",
             action_id, action["kind"], item["source"], item["key"], action["attempts"])
    return "done"


def claim(runtime: Runtime, action_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The action, now ``running``, and its item; None when the action is not ``queued``.

    One transaction for both: a commit fewer per job; on PostgreSQL one statement.
    """
    records = _records(runtime.engine)
    values = {"id": action_id, "now": records.time(datetime.now(UTC))}
    return records.run(lambda conn: records.claim(conn, values))


def finish(runtime: Runtime, action_id: int, status: str, error: str | None = None) -> None:
    records = _records(runtime.engine)
    values = {"id": action_id, "status": status, "error": error, "now": records.time(datetime.now(UTC))}
    records.run(lambda conn: records.finish(conn, values))


# Claim and finish run for every job. Written with the expression language they were built and
# their cache keys computed on every call, on a connection checked out of the pool each time (on
# PostgreSQL with a ping): 0.5 ms of CPU per job on SQLite and 1.5 ms on PostgreSQL, a fifth of the
# worker's time in the event-to-action benchmark. Now they are the driver's SQL, written once, sent on
# the driver's cursor past SQLAlchemy's execution and result machinery (still a fifth of a worker's CPU
# per job on SQLite in a profile), on a connection the worker's thread keeps.
_ACTION_COLUMNS = tuple(column.name for column in actions.c)
_ITEM_COLUMNS = tuple(column.name for column in items.c)


def _claim_sql(value: Callable[[str], str]) -> str:
    return ("UPDATE actions SET status = 'running', attempts = attempts + 1, "
            f"started_at = {value('now')}, updated_at = {value('now')}, finished_at = NULL, not_before = NULL "
            f"WHERE id = {value('id')} AND status = 'queued' RETURNING {', '.join(_ACTION_COLUMNS)}")


def _finish_sql(value: Callable[[str], str]) -> str:
    return (f"UPDATE actions SET status = {value('status')}, error = {value('error')}, "
            f"finished_at = {value('now')}, updated_at = {value('now')} WHERE id = {value('id')}")


# PostgreSQL: the claim and the item's read in one statement, and every statement its own transaction
# (autocommit), so a job's claim and finish are two round trips where BEGIN, the statements and COMMIT
# were seven. SQLite has no UPDATE inside WITH; its statements cost no round trip.
#
# The claim's commit does not wait for its WAL to reach the disk: ``set_config(..., true)`` is
# ``SET LOCAL`` for this statement's own transaction, in force when it commits. Nothing is weakened:
# WAL is flushed in order, so the finish's commit, which does wait, makes the claim durable before the
# outcome is recorded. A claim lost with a PostgreSQL crash leaves the action ``queued``: the finish,
# run again on a new connection, records the outcome all the same, and a job that could not finish
# fails, and the dispatcher hands its still queued action over again (``Outbox.missing``).
# A job's WAL flushes go from two to one (bench/README.md, the twentieth round).
_CLAIM_WITH_ITEM_PG = (
    f"WITH claimed AS ({_claim_sql(placeholder('postgresql'))}), "
    "unflushed AS (SELECT set_config('synchronous_commit', 'off', true)) "
    f"SELECT {', '.join(f'claimed.{name}' for name in _ACTION_COLUMNS)}, "
    f"{', '.join(f'items.{name}' for name in _ITEM_COLUMNS)} "
    "FROM claimed JOIN items ON items.id = claimed.item_id CROSS JOIN unflushed"
)
_ITEM_SQLITE = f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items WHERE id = :id"


def _row_reader(table: Table, dialect: Dialect) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A driver's row of ``table``'s columns as SQLAlchemy would give it, by name.

    psycopg gives these columns the values SQLAlchemy's types would (datetimes, JSONB as dicts). The
    sqlite3 module gives their text: each column goes through its type's own result processor, as in
    SQLAlchemy's results.
    """
    names = tuple(column.name for column in table.c)
    if dialect.name == "postgresql":
        return lambda row: dict(zip(names, row, strict=True))
    readers = [column.type.dialect_impl(dialect).result_processor(dialect, None) or (lambda value: value)
               for column in table.c]
    return lambda row: {name: read(value) for name, read, value in zip(names, readers, row, strict=True)}


class _Records:
    """Claim and finish transactions on a connection kept by the worker's thread between jobs.

    Not behind the webhooks' SQLite file lock: queued behind them, posting
    slowed by half in the benchmark. A kept connection the database dropped
    (a restart during a long download) is replaced and the transaction run
    once more (``Writer.run``): a finish must not be lost, or the reaper would
    run the action again. Run again, a claim whose first commit did reach the
    database finds the action ``running`` and skips it; the reaper puts it back.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        self.postgres = dialect.name == "postgresql"
        if self.postgres:  # each statement is a whole claim or finish: no BEGIN and COMMIT round trips
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.writer = Writer(engine, file_lock=False)
        self.time = moment_value(dialect.name)
        self.read_action, self.read_item = _row_reader(actions, dialect), _row_reader(items, dialect)
        value = placeholder(dialect.name)
        self.claim_sql = _CLAIM_WITH_ITEM_PG if self.postgres else _claim_sql(value)
        self.finish_sql = _finish_sql(value)

    def run(self, work: Callable[[Connection], Any]) -> Any:
        """``work`` as one autocommit statement on PostgreSQL; in a transaction on SQLite, whose claim is two."""
        return self.writer.run_alone(work) if self.postgres else self.writer.run(work)

    def claim(self, conn: Connection, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        with DriverCursor(conn) as cursor:
            row = cursor.one(self.claim_sql, values)
            if row is None:
                return None
            action, item = row[:len(_ACTION_COLUMNS)], row[len(_ACTION_COLUMNS):]
            if not self.postgres:
                item = cursor.one(_ITEM_SQLITE, {"id": action[_ACTION_COLUMNS.index("item_id")]})
        return self.read_action(action), self.read_item(item)

    def finish(self, conn: Connection, values: dict[str, Any]) -> None:
        with DriverCursor(conn) as cursor:
            cursor.run(self.finish_sql, values)


_records_by_engine: dict[tuple[int, int], _Records] = {}


def _records(engine: Engine) -> _Records:
    key = (os.getpid(), id(engine))  # a forked child keeps none of its parent's connections
    if key not in _records_by_engine:
        _records_by_engine[key] = _Records(engine)
    return _records_by_engine[key]


def record_failure(runtime: Runtime, action: dict[str, Any], item: dict[str, Any], error: Exception) -> str:
    """Schedule the next attempt, or mark the action failed; returns which."""
    message = str(error) or type(error).__name__
    schedule = runtime.config.retry_schedule(item["source"], action["workflow"])
    attempts = action["attempts"]
    if isinstance(error, PermanentError) or attempts > len(schedule):
        finish(runtime, action["id"], "failed", message)
        log.warning("listener.action.failed action=%s kind=%s key=%s attempt=%s error=%s",
                    action["id"], action["kind"], item["key"], attempts, message)
        return "failed"
    delay = schedule[attempts - 1]
    now = datetime.now(UTC)
    not_before = now + timedelta(seconds=delay)
    with runtime.engine.begin() as conn:
        conn.execute(
            update(actions).where(actions.c.id == action["id"])
            .values(status="queued", error=message, not_before=not_before, updated_at=now)
        )
    Outbox(runtime.redis(), runtime.settings.queue_name).hand_over([Pending(action["id"], attempts, not_before)])
    log.warning("listener.action.retry action=%s kind=%s key=%s attempt=%s in=%ss error=%s",
                action["id"], action["kind"], item["key"], attempts, delay, message)
    return f"retry in {delay:g}s"


@dataclass(frozen=True)
class _Later(Pending):
    """A postponed run: its own RQ job id, since ``action-<id>-<attempts>`` is the job running now."""

    tag: str = ""

    @property
    def job_id(self) -> str:
        return f"{rq_job_id(self.action_id, self.attempts)}-later-{self.tag}"


def postpone(runtime: Runtime, action: dict[str, Any], item: dict[str, Any], wait: Postpone) -> None:
    """Put the action back as ``queued`` without counting the attempt, and schedule it ``wait.delay`` from now."""
    now = datetime.now(UTC)
    attempts = action["attempts"] - 1  # undo the claim's count: nothing was tried
    not_before = now + timedelta(seconds=wait.delay)
    with runtime.engine.begin() as conn:
        conn.execute(
            update(actions).where(actions.c.id == action["id"], actions.c.status == "running")
            .values(status="queued", attempts=attempts, not_before=not_before, updated_at=now)
        )
    later = _Later(action["id"], attempts, not_before, tag=str(int(now.timestamp() * 1000)))
    Outbox(runtime.redis(), runtime.settings.queue_name).hand_over([later])
    log.info("listener.action.postponed action=%s kind=%s key=%s in=%.1fs reason=%s",
             action["id"], action["kind"], item["key"], wait.delay, wait)
