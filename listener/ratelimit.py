"""A per-source rate limit shared by every web process, counted in Redis (fixed windows).

Only authenticated calls count, so strangers cannot use up a sender's allowance.
If Redis is down the limit is not enforced: losing events would be worse.
"""
from __future__ import annotations

import logging
import math
import time

import redis

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, connection: redis.Redis, clock=time.time) -> None:  # noqa: ANN001
        self.redis = connection
        self.clock = clock

    def retry_after(self, source: str, calls: int, per_seconds: float) -> int | None:
        """Seconds to wait if this call is over the limit, else None (and the call is counted)."""
        now = self.clock()
        window = int(now // per_seconds)
        key = f"listener:rate:{source}:{window}"
        try:
            with self.redis.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, math.ceil(per_seconds) + 1)
                count = pipe.execute()[0]
        except redis.RedisError as error:
            log.warning("listener.%s.rate_limit_unchecked error=%s", source, error)
            return None
        if count <= calls:
            return None
        return max(1, math.ceil((window + 1) * per_seconds - now))
