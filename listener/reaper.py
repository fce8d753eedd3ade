"""Actions left ``running`` by a worker that died (SIGKILL, a lost machine): put back, never lost.

A running job's heartbeat refreshes its action's ``updated_at`` (jobs.runner);
an action whose heartbeat is older than ``stale_after`` has no live worker. It
goes back to ``queued`` to be resumed at once (the attempt it was on stays
counted), or is marked ``failed`` when it has used up its schedule, so a job
that kills its worker every time cannot loop forever.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from config import ListenerConfig
from listener.models import actions, items
from listener.outbox import Pending

log = logging.getLogger(__name__)


def reap_abandoned(engine: Engine, config: ListenerConfig, now: datetime, stale_after: float) -> list[Pending]:
    """Requeue (or fail) running actions without a heartbeat; returns those to hand over again."""
    cutoff = now - timedelta(seconds=stale_after)
    query = (
        select(actions.c.id, actions.c.attempts, actions.c.workflow, actions.c.kind, items.c.source)
        .join(items, items.c.id == actions.c.item_id)
        .where(actions.c.status == "running", actions.c.updated_at < cutoff)
    )
    requeued = []
    with engine.begin() as conn:
        for row in conn.execute(query).all():
            attempts_allowed = len(config.retry_schedule(row.source, row.workflow)) + 1
            message = f"the worker running attempt {row.attempts} stopped without finishing"
            values = dict(updated_at=now, error=message)
            if row.attempts >= attempts_allowed:
                values |= dict(status="failed", finished_at=now, error=message + "; no attempts left")
            else:
                values |= dict(status="queued", not_before=None)
            changed = conn.execute(
                update(actions)
                # Only if it is still as we saw it: a late heartbeat means the worker is alive after all.
                .where(actions.c.id == row.id, actions.c.status == "running", actions.c.updated_at < cutoff,
                       actions.c.attempts == row.attempts)
                .values(**values)
            ).rowcount
            if changed and values["status"] == "queued":
                requeued.append(Pending(row.id, row.attempts))
            if changed:
                log.warning("listener.action.abandoned action=%s kind=%s source=%s attempt=%s now=%s",
                            row.id, row.kind, row.source, row.attempts, values["status"])
    return requeued
