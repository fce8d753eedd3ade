"""What a process needs to work: settings, config, database, Redis and sources, loaded once."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property

import redis
from sqlalchemy import Engine

from config import ListenerConfig, Settings, load_config
from listener.db import get_engine
from listener.sources import Source, build_sources

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    config: ListenerConfig

    @classmethod
    def load(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or Settings.from_env()
        return cls(settings=settings, config=load_config(settings.config_path, settings.environ))

    @property
    def engine(self) -> Engine:
        return get_engine(self.settings.database_url)

    @cached_property
    def sources(self) -> dict[str, Source]:
        return build_sources(self.config)

    def redis(self, *, fast_fail: bool = False) -> redis.Redis:
        """A Redis client. ``fast_fail``: short timeouts, for the request path."""
        timeouts = {"socket_connect_timeout": 0.5, "socket_timeout": 2} if fast_fail else {
            "socket_connect_timeout": 5, "socket_timeout": 30}
        return redis.Redis.from_url(self.settings.effective_redis_url, health_check_interval=30, **timeouts)


_current: tuple[int, Runtime] | None = None


def current() -> Runtime:
    """The runtime of this process (a forked child, such as a gunicorn worker, gets its own engine)."""
    global _current
    if _current is None:
        _current = (os.getpid(), Runtime.load())
    return _current[1]


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one ``current()`` returns (the worker and the tests do this)."""
    global _current
    _current = (os.getpid(), runtime)
