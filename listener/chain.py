"""An item entering a state because a job finished (a scoopa file is ``downloaded``): what follows.

The webhook path records an item's new state and the work it causes in one
transaction (``listener.store``). A job does the same here: the item's state
and data, and the actions of every workflow acting on that state, commit
together; then the new actions are handed to RQ. If Redis is down at that
moment the actions are still ``queued`` in the database, and the dispatcher
hands them over later.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from listener.db import writer
from listener.models import items
from listener.outbox import Outbox, Pending
from listener.runtime import Runtime
from listener.store import add_actions
from listener.workflows import workflow_actions

log = logging.getLogger(__name__)


def enter_state(runtime: Runtime, item_id: int, state: str, facts: Mapping[str, Any], *,
                event_id: int | None = None) -> list[int]:
    """Move the item to ``state``, merge ``facts`` into its data, add and hand over the workflows' actions.

    ``event_id`` is the event the work descends from (a notify sends it along).
    Returns the ids of the new actions. Safe to repeat: workflow actions of a
    state are created once per item.
    """
    engine = writer(runtime.engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        row = conn.execute(select(items).where(items.c.id == item_id).with_for_update()).one()
        data = {**(row.data or {}), **facts}
        conn.execute(update(items).where(items.c.id == item_id).values(state=state, data=data, updated_at=now))
        source = runtime.sources.get(row.source)
        requested = []
        if source is not None:
            requested = workflow_actions(source.handler, [state], data, source.context.workflows)
        action_ids = add_actions(conn, item_id, event_id, requested, now)
    log.info("listener.item.entered item=%s source=%s key=%s state=%s actions=%s",
             item_id, row.source, row.key, state, action_ids)
    if action_ids:
        Outbox(runtime.redis(), runtime.settings.queue_name).hand_over(Pending(action_id) for action_id in action_ids)
    return action_ids
