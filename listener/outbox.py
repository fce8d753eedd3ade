"""Handing actions to RQ, exactly once, even when Redis was down at the time.

The database is the outbox: an action is ``queued`` there before anything
touches Redis. After the commit the request path tries a cheap hand-over (one
Redis pipeline); if Redis is down nothing fails, and the dispatcher, a loop in
every worker process, hands over later every queued action that has no RQ job.

RQ job ids are derived from the action (``action-<id>-<attempt>``), so "has it
been handed over?" is one EXISTS, and a job that does run twice cannot do the
work twice: ``jobs.runner`` claims the action in the database first.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer
from rq.utils import now, utcformat
from sqlalchemy import Engine, select

from config import ListenerConfig
from listener.db import as_utc
from listener.models import actions

log = logging.getLogger(__name__)

JOB_FUNCTION = "jobs.runner.run_action"
JOB_TIMEOUT = 6 * 3600  # a large transfer may take hours; progress shows it is alive
FAILURE_TTL = 7 * 86400  # a failed job stays a week, for RQ's own tools
LEASE_KEY = "listener:dispatcher-lease"
_WILL_RUN = {b"queued", b"scheduled", b"deferred", b"started"}  # RQ job statuses of a job still to run or running


@dataclass(frozen=True)
class Pending:
    action_id: int
    attempts: int = 0
    not_before: datetime | None = None

    @property
    def job_id(self) -> str:
        return job_id(self.action_id, self.attempts)


def job_id(action_id: int, attempts: int) -> str:
    return f"action-{action_id}-{attempts}"


def _description(action: Pending) -> str:
    return f"action {action.action_id}"


def _job_options(action: Pending) -> dict:
    # result_ttl=0: a finished job is deleted, not kept with its result. The action's row is the
    # record of the outcome; keeping results cost RQ a job save, a result stream and a registry
    # entry per job. Failed jobs stay a week, for RQ's own tools.
    return dict(args=(action.action_id,), job_id=action.job_id, timeout=JOB_TIMEOUT, result_ttl=0,
                failure_ttl=FAILURE_TTL, description=_description(action))


def _compress(data: bytes) -> bytes:
    """A job's data as RQ's ``zlib.compress`` stores it, for its ``zlib.decompress``, with a 512-byte window.

    ``zlib.compress`` sets up some 256 KiB of state for its 32 KiB window on every call, in memory fresh
    from the system each time: 71 µs to compress a job's 48 bytes here, 7 µs with the smallest window and
    state (wbits 9, memLevel 1). The stream is zlib's format either way; its header gives the window size.
    """
    compressor = zlib.compressobj(6, zlib.DEFLATED, 9, 1)
    return compressor.compress(data) + compressor.flush()


# The fields RQ's Job.to_dict() gives a new job made with _job_options, but those of the job and the moment.
_NEW_JOB_FIELDS = {
    "status": JobStatus.QUEUED.value, "timeout": JOB_TIMEOUT, "result_ttl": 0, "failure_ttl": FAILURE_TTL,
    "success_callback_name": "", "failure_callback_name": "", "stopped_callback_name": "",
    "started_at": "", "ended_at": "", "last_heartbeat": "", "worker_name": "", "group_id": "",
}


# The job moves from the intermediate list to the queue's front only if it is still in that list: a worker
# that started it meanwhile has removed it, and it must not be queued again. RQ's note of when its own
# maintenance first saw the job there goes too, or a later pass could fail the job the moment a live worker
# takes it again.
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[1])
    redis.call('DEL', KEYS[3])
    return 1
end
return 0
"""


class Outbox:
    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.redis = connection
        self.queue = Queue(queue_name, connection=connection)
        self._down_until = 0.0
        self._put_back = connection.register_script(_PUT_BACK)

    def hand_over(self, pending: Iterable[Pending]) -> bool:
        """Enqueue (or schedule) each action; False when Redis could not take them."""
        pending = list(pending)
        if not pending:
            return True
        try:
            with self.redis.pipeline() as pipe:
                for action in pending:
                    self._enqueue(action, pipe)
                pipe.execute()
        except redis.RedisError as error:
            log.warning("listener.outbox.redis_down actions=%s error=%s", [p.action_id for p in pending], error)
            return False
        return True

    def hand_over_new(self, action_ids: list[int]) -> None:
        """The request path's hand-over: best effort, and skipped for a while after Redis failed."""
        if not action_ids or time.monotonic() < self._down_until:
            return
        if not self.hand_over(Pending(action_id) for action_id in action_ids):
            self._down_until = time.monotonic() + 5.0

    def _enqueue(self, action: Pending, pipe: redis.client.Pipeline) -> None:
        if action.not_before and as_utc(action.not_before) > datetime.now(UTC):
            job = self.queue.create_job(JOB_FUNCTION, **_job_options(action))
            job.save(pipeline=pipe)
            self.queue.schedule_job(job, as_utc(action.not_before), pipeline=pipe)
        else:
            self._enqueue_now(action, pipe)

    def _enqueue_now(self, action: Pending, pipe: redis.client.Pipeline) -> None:
        """What RQ's ``enqueue_call`` with ``_job_options`` sends, without building its Job.

        The webhook that starts an action pays for its hand-over, and RQ's Job (made,
        its dependencies set up, its status and fields written by three methods) was a
        fifth of a ``/proxy``'s CPU in the event-to-action profile. The same commands
        in the same transaction leave the same job behind: ``tests/test_outbox.py``
        compares it with RQ's field by field, and RQ's worker runs it.
        """
        stamp = utcformat(now())
        call = (JOB_FUNCTION, None, (action.action_id,), {})  # RQ's job data: function, instance, args, kwargs
        pipe.sadd(Queue.redis_queues_keys, self.queue.key)
        pipe.hset(Job.key_for(action.job_id), mapping={
            **_NEW_JOB_FIELDS, "created_at": stamp, "enqueued_at": stamp, "origin": self.queue.name,
            "description": _description(action), "data": _compress(DefaultSerializer.dumps(call)),
        })
        pipe.rpush(self.queue.key, action.job_id)

    def put_back(self, job_id: str) -> bool:
        """Move a job from the queue's intermediate list to its front; False if it was no longer there."""
        taken = self.queue.intermediate_queue
        return bool(self._put_back(keys=[taken.key, self.queue.key, taken.get_first_seen_key(job_id)], args=[job_id]))

    def missing(self, pending: list[Pending]) -> list[Pending]:
        """The queued actions that no RQ job will run: there is none, or it ended.

        A job that ended while its action is still ``queued`` failed before it
        could claim it (the database was unreachable, say); left alone, the
        action would wait for the failed job's record to expire (a week).
        """
        with self.redis.pipeline(transaction=False) as pipe:
            for action in pending:
                pipe.hget(f"rq:job:{action.job_id}", "status")
            statuses = pipe.execute()
        return [action for action, status in zip(pending, statuses, strict=True) if status not in _WILL_RUN]


class Dispatcher:
    """Hands over queued actions that have no RQ job; one active per Redis, by lease."""

    def __init__(self, engine: Engine, outbox: Outbox, *, interval: float = 1.0, grace: float = 2.0,
                 batch: int = 500, clock: Callable[[], datetime] | None = None,
                 config: ListenerConfig | None = None, stale_after: float = 30.0,
                 stranded_after: float = 5.0) -> None:
        self.engine = engine
        self.config = config  # with it, actions abandoned by a dead worker are put back too
        self.stale_after = stale_after
        self.outbox = outbox
        self.interval = interval
        self.grace = grace  # leave the request path time for its own hand-over
        self.batch = batch
        self.clock = clock or (lambda: datetime.now(UTC))
        self.identity = uuid.uuid4().hex
        self._after_id = 0
        self.stranded_after = stranded_after
        self._taken_since: dict[str, datetime] = {}  # jobs seen taken from the queue and not started, since when

    def run_once(self) -> int:
        """One sweep; returns how many actions it handed over."""
        handed_over = 0
        if self.config is not None:
            from listener.reaper import reap_abandoned

            abandoned = reap_abandoned(self.engine, self.config, self.clock(), self.stale_after)
            if abandoned and self.outbox.hand_over(abandoned):
                handed_over += len(abandoned)
        return (handed_over + self._put_back_stranded() + self._hand_over_queued()
                + self._enqueue_overdue_scheduled())

    def _put_back_stranded(self) -> int:
        """Put jobs that a worker took from the queue and never started back at its front.

        A worker takes a job with BLMOVE, which moves it to the queue's intermediate
        list, and moves it on to the started registry a moment later. A job still
        there seconds later was handed to a worker that is gone: one that died in
        between, or one on a lost machine, whose blocked BLMOVE Redis served before
        it learnt (from TCP keepalive, minutes later) that the peer was dead. RQ
        fails such a job only at its second maintenance pass, 10 to 20 minutes on,
        and the action would wait as long. Put back, it runs on a live worker; were
        its first taker alive after all, the runner's claim lets one of them run it.
        """
        queue = self.outbox.queue
        taken = queue.intermediate_queue.get_job_ids()
        moment = self.clock()
        self._taken_since = {job_id: self._taken_since.get(job_id, moment) for job_id in taken}
        due = [job_id for job_id, since in self._taken_since.items()
               if (moment - since).total_seconds() >= self.stranded_after
               and job_id not in queue.started_job_registry]
        put_back = [job_id for job_id in due if self.outbox.put_back(job_id)]
        for job_id in put_back:  # taken again, it is timed afresh
            del self._taken_since[job_id]
        if put_back:
            log.warning("listener.outbox.stranded jobs=%s (taken from the queue by a worker that never started "
                        "them: put back)", put_back)
        return len(put_back)

    def _enqueue_overdue_scheduled(self) -> int:
        """Move retries whose time is well past from RQ's schedule to the queue.

        RQ's scheduler runs in one worker, behind a lock that outlives a SIGKILLed
        worker (61 s), and the others try to take it again only every few minutes:
        until then no scheduled retry would run. Only jobs ``grace`` seconds overdue
        are moved, so a live scheduler does its own work; a job moved by both
        would still run once (the runner's claim).
        """
        queue = self.outbox.queue
        registry = queue.scheduled_job_registry
        due = registry.get_jobs_to_schedule(int(self.clock().timestamp() - self.grace))
        if not due:
            return 0
        moved = 0
        with self.outbox.redis.pipeline() as pipe:
            for job in Job.fetch_many(due, connection=self.outbox.redis):
                if job is not None:
                    queue.enqueue_job(job, pipeline=pipe)
                    moved += 1
            for job_id in due:
                registry.remove(job_id, pipeline=pipe)
            pipe.execute()
        log.warning("listener.outbox.scheduler_late moved=%d first=%s", moved, due[0])
        return moved

    def _hand_over_queued(self) -> int:
        cutoff = self.clock() - timedelta(seconds=self.grace)
        query = (
            select(actions.c.id, actions.c.attempts, actions.c.not_before)
            .where(actions.c.status == "queued", actions.c.updated_at <= cutoff, actions.c.id > self._after_id)
            .order_by(actions.c.id)
            .limit(self.batch)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        # Walk the backlog a batch at a time, then start again from the oldest.
        self._after_id = rows[-1].id if len(rows) == self.batch else 0
        pending = [Pending(row.id, row.attempts, row.not_before) for row in rows]
        if not pending:
            return 0
        missing = self.outbox.missing(pending)
        if missing and self.outbox.hand_over(missing):
            log.info("listener.outbox.handed_over count=%d first=%d", len(missing), missing[0].action_id)
            return len(missing)
        return 0

    def _hold_lease(self) -> bool:
        ttl_ms = int(max(self.interval * 5, 5) * 1000)
        connection = self.outbox.redis
        if connection.set(LEASE_KEY, self.identity, nx=True, px=ttl_ms):
            return True
        holder = connection.get(LEASE_KEY)
        if holder is not None and holder.decode() == self.identity:
            connection.pexpire(LEASE_KEY, ttl_ms)
            return True
        return False

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self._hold_lease():
                    self.run_once()
            except redis.RedisError as error:
                log.warning("listener.outbox.redis_unavailable error=%s", error)
            except Exception:  # noqa: BLE001 - a database outage must not kill the loop
                log.exception("listener.outbox.sweep_failed")
            stop.wait(self.interval)

    def start(self) -> threading.Event:
        stop = threading.Event()
        threading.Thread(target=self.run_forever, args=(stop,), name="dispatcher", daemon=True).start()
        return stop
