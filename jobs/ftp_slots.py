"""At most ``max_connections`` transfers per FTP server, across every worker process and machine (SPEC 4).

A counting semaphore in Redis: a sorted set per server whose members are the
current holders, scored by when their lease runs out. Taking a slot first
drops expired holders, so the slot of a worker that was killed mid-transfer
frees itself after ``lease`` seconds; a holder renews its lease while it
transfers. Redis's own clock decides expiry, so the machines' clocks need not
agree.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0

_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if held or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
  return 1
end
return 0
"""

_RENEW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""


class NoSlot(Exception):
    """Every connection to the server is in use."""


class ServerSlots:
    def __init__(self, connection: redis.Redis, server: str, limit: int, lease: float = LEASE_SECONDS) -> None:
        self.redis = connection
        self.key = f"listener:ftp-slots:{server}"
        self.server = server
        self.limit = limit
        self.lease = lease
        self._take = connection.register_script(_TAKE)
        self._renew = connection.register_script(_RENEW)

    def take(self, holder: str) -> bool:
        return bool(self._take(keys=[self.key], args=[holder, self.limit, self.lease]))

    def renew(self, holder: str) -> None:
        self._renew(keys=[self.key], args=[holder, self.lease])

    def give_back(self, holder: str) -> None:
        self.redis.zrem(self.key, holder)

    def holders(self) -> list[str]:
        return [member.decode() for member in self.redis.zrange(self.key, 0, -1)]

    @contextmanager
    def hold(self, holder: str) -> Iterator[None]:
        """Hold a slot for the duration of the block, renewing it; NoSlot if none is free."""
        if not self.take(holder):
            raise NoSlot(f"all {self.limit} connections to FTP server {self.server} are in use")
        stop = threading.Event()
        renewer = threading.Thread(target=self._keep, args=(holder, stop), name=f"ftp-slot-{self.server}",
                                   daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(5)
            try:
                self.give_back(holder)
            except redis.RedisError as error:  # the lease runs out by itself
                log.warning("listener.ftp.slot_release_failed server=%s error=%s", self.server, error)

    def _keep(self, holder: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease / 3):
            try:
                self.renew(holder)
            except redis.RedisError as error:
                log.warning("listener.ftp.slot_renew_failed server=%s error=%s", self.server, error)
