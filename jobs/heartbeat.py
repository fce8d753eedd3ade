"""A running job's heartbeat: its action's ``updated_at`` refreshed every few seconds.

The dispatcher puts back an action whose heartbeat stopped (listener.reaper):
that is how work survives a worker killed mid-job (SIGKILL, a lost machine).

One thread per process beats for every action running in it. A thread per
job cost a thread start and join on every job, which the event-to-action
profile showed for short jobs (an analysis takes a few milliseconds).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, update

from listener.models import actions

log = logging.getLogger(__name__)


@dataclass
class _Beat:
    engine: Engine
    action_id: int
    attempt: int
    # Held while this action is beaten, and by the block's end to set ``ended``: no beat commits after the block
    # has ended, even one the thread had started on before. A lock per action, so a job's end waits only for a
    # beat of its own in flight.
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: bool = False


class _Heart:
    """The process's beating thread and the actions it beats for."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.running: dict[int, _Beat] = {}
        self.lock = threading.Lock()
        self.pid = os.getpid()
        threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True).start()

    def _beat_forever(self) -> None:
        wake = threading.Event()  # never set: a sleep that is not a busy loop
        while True:
            wake.wait(self.interval)
            with self.lock:
                beats = list(self.running.values())
            for beat in beats:
                with beat.lock:
                    if not beat.ended:
                        self._beat(beat)

    @staticmethod
    def _beat(beat: _Beat) -> None:
        try:
            with beat.engine.begin() as conn:
                conn.execute(
                    update(actions)
                    .where(actions.c.id == beat.action_id, actions.c.status == "running",
                           actions.c.attempts == beat.attempt)
                    .values(updated_at=datetime.now(UTC))
                )
        except Exception as error:  # noqa: BLE001 - a missed beat is retried at the next one
            log.warning("listener.action.heartbeat_failed action=%s error=%s", beat.action_id, error)


_hearts: dict[float, _Heart] = {}
_hearts_lock = threading.Lock()


def _heart(interval: float) -> _Heart:
    with _hearts_lock:
        heart = _hearts.get(interval)
        if heart is None or heart.pid != os.getpid():  # a forked child has no thread of its parent's
            heart = _hearts[interval] = _Heart(interval)
        return heart


@contextmanager
def heartbeat(engine: Engine, action_id: int, attempt: int, interval: float) -> Iterator[None]:
    """Beat for the action while the block runs: first within ``interval``, then every ``interval``."""
    heart = _heart(interval)
    beat = _Beat(engine, action_id, attempt)
    with heart.lock:
        heart.running[action_id] = beat
    try:
        yield
    finally:
        with heart.lock:
            heart.running.pop(action_id, None)
        with beat.lock:  # waits for a beat of this action already under way
            beat.ended = True
