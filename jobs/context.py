"""What a job module gets: the action, its item, the config, and a way to report progress."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, update

from config import ListenerConfig, Settings
from listener.models import actions

if TYPE_CHECKING:
    from listener.runtime import Runtime


@dataclass
class ActionContext:
    action: dict[str, Any]
    item: dict[str, Any]
    config: ListenerConfig
    settings: Settings
    engine: Engine
    _started: float = field(default_factory=time.monotonic)
    _last_report: float = 0.0

    @property
    def action_id(self) -> int:
        return self.action["id"]

    @property
    def runtime(self) -> Runtime:
        """The process's runtime (sources, Redis), for jobs that need more than the config."""
        from listener.runtime import current

        return current()

    def source_options(self) -> Any:
        return self.runtime.sources[self.item["source"]].context.options

    def progress(self, bytes_done: int, bytes_total: int | None = None, *, force: bool = False,
                 resumed_from: int = 0) -> None:
        """Record bytes done and speed, at most twice a second unless forced.

        ``resumed_from``: bytes an earlier attempt already moved, left out of this attempt's speed.
        """
        now = time.monotonic()
        if not force and now - self._last_report < 0.5:
            return
        self._last_report = now
        elapsed = max(now - self._started, 1e-6)
        speed = max(bytes_done - resumed_from, 0) / elapsed
        values: dict[str, Any] = dict(bytes_done=bytes_done, speed_bps=speed,
                                      updated_at=datetime.now(UTC))
        if bytes_total is not None:
            values["bytes_total"] = bytes_total
        with self.engine.begin() as conn:
            conn.execute(update(actions).where(actions.c.id == self.action_id).values(**values))
