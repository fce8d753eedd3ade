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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from jobs.context import ActionContext
from jobs.errors import ActionError, ActionFailed, PermanentError, Postpone
from jobs.heartbeat import heartbeat
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

    One transaction for both: a connection checkout (on PostgreSQL a ping) and a
    commit fewer per job.
    """
    now = datetime.now(UTC)
    with runtime.engine.begin() as conn:
        row = conn.execute(
            update(actions)
            .where(actions.c.id == action_id, actions.c.status == "queued")
            .values(status="running", attempts=actions.c.attempts + 1, started_at=now, updated_at=now,
                    finished_at=None, not_before=None)
            .returning(*actions.c)
        ).first()
        if row is None:
            return None
        item = conn.execute(select(items).where(items.c.id == row.item_id)).one()
    return dict(row._mapping), dict(item._mapping)


def finish(runtime: Runtime, action_id: int, status: str, error: str | None = None) -> None:
    now = datetime.now(UTC)
    with runtime.engine.begin() as conn:
        conn.execute(
            update(actions).where(actions.c.id == action_id)
            .values(status=status, error=error, finished_at=now, updated_at=now)
        )


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
