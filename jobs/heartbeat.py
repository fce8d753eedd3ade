"""A running job's heartbeat: its action's ``updated_at`` refreshed every few seconds.

The dispatcher puts back an action whose heartbeat stopped (listener.reaper):
that is how work survives a worker killed mid-job (SIGKILL, a lost machine).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Engine, update

from listener.models import actions

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(engine: Engine, action_id: int, attempt: int, interval: float) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with engine.begin() as conn:
                    conn.execute(
                        update(actions)
                        .where(actions.c.id == action_id, actions.c.status == "running", actions.c.attempts == attempt)
                        .values(updated_at=datetime.now(UTC))
                    )
            except Exception as error:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("listener.action.heartbeat_failed action=%s error=%s", action_id, error)

    thread = threading.Thread(target=beat, name=f"heartbeat-{action_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
