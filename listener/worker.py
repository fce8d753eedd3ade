"""``python -m listener worker``: an RQ worker with the scheduler and the outbox dispatcher."""
from __future__ import annotations

import hashlib
import importlib
import logging
import re
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
import rq.job
import rq.queue
import rq.registry
import rq.scheduler
import rq.serializers
import rq.utils
import rq.worker
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus, _job_stack
from rq.registry import StartedJobRegistry
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from listener.logs import configure_logging
from listener.outbox import JOB_FUNCTION, Dispatcher, Outbox
from listener.runtime import Runtime, install

log = logging.getLogger(__name__)


_resolved_serializers: dict[Any, Any] = {}


def resolve_serializer(serializer: Any = None) -> Any:
    """RQ's ``resolve_serializer``, which remembers its answer for each serializer.

    RQ resolves a serializer whenever it makes a Job, a Queue or a registry: four
    or five times per job. Each time, Python 3.11's check against RQ's runtime
    Protocol walks the Protocol's attributes twice, 5 % of the worker's CPU per
    job in a profile. The answer for a given serializer never changes.
    """
    try:
        return _resolved_serializers[serializer]
    except KeyError:
        resolved = _resolved_serializers[serializer] = _resolve_serializer(serializer)
        return resolved
    except TypeError:  # a serializer that cannot be a key is resolved every time, as by RQ
        return _resolve_serializer(serializer)


_resolve_serializer = rq.serializers.resolve_serializer
# Each RQ module imported the function by name. These are the ones the worker loads; rq.results (kept
# results) and rq.cron, which the listener does not use, would resolve as RQ does.
for _module in (rq.job, rq.queue, rq.registry, rq.scheduler, rq.worker):
    _module.resolve_serializer = resolve_serializer


def str_to_date(date_str: bytes | str) -> datetime:
    """RQ's ``str_to_date``, which reads RQ's own format with ``datetime.fromisoformat`` before ``strptime``.

    ``Job.restore`` parses a job's timestamps with ``strptime``, 13 µs each, twice
    or more for every job a worker takes; ``fromisoformat`` reads the same
    ``2026-12-03T20:39:55.873951Z`` in half a microsecond. Anything else goes to RQ's.
    """
    text = date_str.decode() if isinstance(date_str, bytes) else date_str
    if _RQ_TIMESTAMP.fullmatch(text):
        try:
            return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
        except ValueError:  # no such day or time (February 30th): RQ's raises as it always has
            pass
    return _str_to_date(date_str)


_RQ_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")  # RQ's utcformat: '%Y-%m-%dT%H:%M:%S.%fZ'
_str_to_date = rq.utils.str_to_date
rq.job.str_to_date = str_to_date  # imported there by name; the one module that reads a timestamp per job


class ListenerJob(Job):
    """RQ's job, whose key the worker may already have made persistent in its start-of-job pipeline.

    RQ's ``perform()`` sends that PERSIST first, as a round trip of its own.
    """

    persisted_by_worker = False

    def perform(self) -> Any:
        if not self.persisted_by_worker:
            return super().perform()
        _job_stack.push(self)  # the rest of RQ's perform(): get_current_job() works inside a job
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()
        return self._result


# A job taken from the queue (to RQ's intermediate list, as RQ's LMOVE does) and its hash read, in one round
# trip: RQ sends the LMOVE, then the HGETALL. The hash's key is made here from the id the LMOVE returned, so
# it is not among KEYS, as Redis Cluster would want: RQ does not run on a cluster.
_TAKE_JOB = """
local job_id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not job_id then
    return false
end
return {job_id, redis.call('HGETALL', ARGV[1] .. job_id)}
"""


class ListenerQueue(Queue):
    """RQ's queue, whose worker takes a waiting job and reads it in one round trip where RQ takes two."""

    @classmethod
    def dequeue_any(cls, queues: Any, timeout: int | None, connection: redis.Redis, job_class: Any = None,
                    serializer: Any = None, death_penalty_class: Any = None) -> tuple[Job, Queue] | None:
        """RQ's, but for a job already waiting in a worker's one queue: that comes back from one script.

        With nothing waiting, or several queues, or a Redis before 6.2 (no LMOVE),
        RQ's own dequeue runs as before, and blocks for the next job as before.
        """
        queues = list(queues)
        if len(queues) == 1 and rq.utils.get_version(connection) >= (6, 2, 0):
            taken = cls._take_waiting(queues[0], connection, job_class, serializer, death_penalty_class)
            if taken is not None:
                return taken
        return super().dequeue_any(queues, timeout, connection, job_class=job_class, serializer=serializer,
                                   death_penalty_class=death_penalty_class)

    @classmethod
    def _take_waiting(cls, queue: Queue, connection: redis.Redis, job_class: Any, serializer: Any,
                      death_penalty_class: Any) -> tuple[Job, Queue] | None:
        job_cls = rq.utils.backend_class(cls, "job_class", override=job_class)
        keys, args = [queue.key, queue.intermediate_queue_key], [job_cls.redis_job_namespace_prefix]
        while True:
            taken = _take_job(connection, keys, args)
            if not taken:
                return None
            job_id, fields = rq.utils.as_text(taken[0]), taken[1]
            if not fields:  # RQ's dequeue passes over a job whose hash is gone, and takes the next
                continue
            found = cls.from_queue_key(queue.key, connection=connection, job_class=job_cls, serializer=serializer,
                                       death_penalty_class=death_penalty_class)
            job = job_cls(rq.job.parse_job_id(job_id), connection=connection, serializer=serializer)
            try:
                job.restore(dict(zip(fields[::2], fields[1::2], strict=True)))
            except Exception as error:  # as RQ's dequeue: the error says which job and queue
                error.job_id, error.queue = job_id, found  # type: ignore[attr-defined]
                raise
            return job, found


_TAKE_JOB_SHA = hashlib.sha1(_TAKE_JOB.encode()).hexdigest()  # noqa: S324 - Redis names its scripts by SHA-1


def _take_job(connection: redis.Redis, keys: list[str], args: list[str]) -> Any:
    """The script by its SHA-1; sent whole only when Redis does not have it yet (new, or restarted)."""
    try:
        return connection.evalsha(_TAKE_JOB_SHA, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        return connection.eval(_TAKE_JOB, len(keys), *keys, *args)


class ListenerWorker(SimpleWorker):
    """Runs each job in the worker process itself, instead of in a work horse forked per job.

    RQ's default worker forks for every job. The event-to-action benchmark
    showed the fork, and everything a fresh horse sets up again (database
    connections, HTTP connections, the job modules), as most of a short job's
    cost: 73 analyses per second against 195 without it. Our jobs are our own
    code with bounded memory (transfers stream, whatever the file size), so the
    isolation a fork gives is not worth that. What a fork protected against is
    still covered: a job's exception is recorded and retried by ``jobs.runner``;
    a job that hangs is stopped by RQ's timeout (SIGALRM in this process); a
    worker killed mid-job is noticed by the reaper through the job's heartbeat.
    SIGTERM lets the running job finish (RQ's warm shutdown); a second one stops
    it at once, and the reaper puts its action back.
    """

    job_class = ListenerJob
    queue_class = ListenerQueue
    # RQ doubles its pause between tries to reach a lost Redis, while it waits for a job, up to 60 s: a
    # Redis back after a restart would wait up to a minute for the worker to notice.
    max_connection_wait_time = 5.0
    BEAT_EVERY = 1.0  # seconds; RQ's own worker TTL is minutes
    # RQ logs three INFO lines per job of its own ("Job OK", ...); jobs.runner logs the action's start
    # and outcome, with its kind and item, which is what a person reads.
    log_result_lifespan = False
    # Functions whose jobs nothing depends on and that keep no result: the outbox's (handle_job_success).
    RESULTLESS_FUNCTIONS = frozenset({JOB_FUNCTION})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_beat = 0.0
        self._last_suspension_check = 0.0
        self._held_pipeline: Any = None
        self._idle_written = False
        self.log.addFilter(_drop_per_job_lines)

    def validate_queues(self) -> None:
        """RQ's check that the queues are of ``queue_class``, for any of RQ's queues: only the dequeue is ours."""
        for queue in self.queues:
            if not isinstance(queue, Queue):
                raise TypeError(f"{queue} is not of type {Queue} or string types")

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's worker state, not written again when it has not changed (RQ sets IDLE twice per job), nor
        when ``handle_job_success`` already wrote IDLE with its pipeline."""
        written = state == WorkerStatus.IDLE and self._idle_written
        self._idle_written = False
        if pipeline is None and (written or state == getattr(self, "_state", None)):
            self._state = state
            return
        super().set_state(state, pipeline)

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's, with its writes held back to go in ``prepare_job_execution``'s pipeline.

        RQ sends the two as two round trips, one right after the other; a worker
        that runs its jobs itself does nothing in between. The BUSY state goes
        in there too, with the other fields of the worker's hash.
        """
        pipeline = self.connection.pipeline()
        self.execution = Execution.create(job, self.get_heartbeat_ttl(job), pipeline=pipeline)
        self._held_pipeline = pipeline
        return self.execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ's start-of-job writes, after ``prepare_execution``'s held ones and with the PERSIST of the job's
        key that ``Job.perform()`` would send: one round trip where RQ takes three.

        RQ writes the worker's hash field by field (its state, current job, working
        time and heartbeat: four HSETs) and the job's heartbeat just before the
        job's start overwrites it. The same fields go in one HSET for each hash.
        """
        pipeline, self._held_pipeline = self._held_pipeline or self.connection.pipeline(), None
        with pipeline:
            heartbeat_ttl = self.get_heartbeat_ttl(job)
            self._state, self.current_job_working_time = WorkerStatus.BUSY, 0
            pipeline.hset(self.key, mapping={"state": WorkerStatus.BUSY, "current_job": job.id,
                                             "current_job_working_time": 0, "last_heartbeat": utcformat(now())})
            pipeline.expire(self.key, heartbeat_ttl)
            job.prepare_for_execution(self.name, pipeline=pipeline)  # its heartbeat, status, start and worker
            if remove_from_intermediate_queue:
                pipeline.lrem(Queue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            pipeline.persist(job.key)
            pipeline.execute()
        if isinstance(job, ListenerJob):
            job.persisted_by_worker = True
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's check for ``rq suspend``, at most once a second: it was a Redis round trip per job."""
        if time.monotonic() - self._last_suspension_check < self.BEAT_EVERY:
            return
        self._last_suspension_check = time.monotonic()
        super().check_for_suspension(burst)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat, at most once a second when RQ calls it without arguments.

        RQ beats before and after every dequeue, two Redis round trips each: at a
        few hundred short jobs a second, that was a tenth of the worker's time.
        Beats with a timeout or a pipeline (when a job starts) always go through.
        """
        if timeout is None and pipeline is None:
            if time.monotonic() - self._last_beat < self.BEAT_EVERY:
                return
            self._last_beat = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ records the job's last heartbeat in its hash when it ends, a round trip; an outbox job that
        succeeded is deleted a moment later, so for those the end time is all that is kept."""
        if self._resultless(job) and job.get_status(refresh=False) != JobStatus.FAILED:
            job.ended_at = now()
            return
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def _resultless(self, job: Job) -> bool:
        return (job.func_name in self.RESULTLESS_FUNCTIONS and job.get_result_ttl(self.default_result_ttl) == 0
                and not job.repeats_left and not job.group_id)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry) -> None:
        """RQ's bookkeeping after a job succeeded, in one pipeline, for jobs that keep no result.

        The outbox's jobs (``result_ttl=0``; no job depends on one, none repeats or
        belongs to a group) end deleted. RQ gets there with about seven round trips
        before its pipeline runs: a WATCH and a read of the dependents, the job's
        status read up to three times to find its registry, and its executions
        read twice. The outcome is the same: the counters updated, this execution
        gone from the started registry, and the job's hash, its execution registry
        and dependency keys deleted (``tests/test_worker.py`` compares what both
        leave in Redis). Any other job takes RQ's own path.
        """
        if not self._resultless(job):
            super().handle_job_success(job, queue, started_job_registry)
            return
        with self.connection.pipeline() as pipeline:
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(job.ended_at - job.started_at, pipeline)  # type: ignore[operator]
            # RQ's cleanup_execution, less what the DEL below makes moot: the execution's ZREM from the
            # job's execution registry, which goes whole. Its hash goes in the same DEL.
            pipeline.hdel(self.key, "current_job")
            execution, self.execution = self.execution, None
            if execution is not None:
                pipeline.zrem(job.started_job_registry.key, execution.composite_key)
            pipeline.delete(job.key, job.dependents_key, job.dependencies_key, job.execution_registry.key,
                            *([execution.key] if execution is not None else []))
            # The IDLE that RQ writes next, as a round trip of its own; the state in this process stays BUSY
            # until then, so a SIGTERM now still waits for the job's end (RQ's warm shutdown).
            pipeline.hset(self.key, "state", WorkerStatus.IDLE)
            pipeline.execute()
        self._idle_written = True


# The formats of RQ's per-job INFO lines (rq/worker.py): a job taken, "Job OK", a success.
_PER_JOB_FORMATS = frozenset({"%s: %s (%s)", "%s: %s", "Successfully completed %s job in %ss on worker %s",
                              "Successfully completed job %s in %ss on worker %s"})


def _drop_per_job_lines(record: logging.LogRecord) -> bool:
    return not (record.levelno <= logging.INFO and record.msg in _PER_JOB_FORMATS)


def preload(runtime: Runtime) -> None:
    """Build what every job uses before the first one: the runner and the configured sources.

    Each job module (``jobs.<kind>``) is imported by its first job and kept: a
    worker that only transfers files never loads ``requests``, which keeps it
    smaller (the benchmark's memory target is for the whole worker process).
    """
    importlib.import_module("jobs.runner")
    _ = runtime.sources  # handlers and their options, built once


def run_worker(runtime: Runtime, *, burst: bool = False, dispatcher_interval: float = 1.0) -> None:
    configure_logging(runtime.settings)
    install(runtime)
    preload(runtime)
    stop = Dispatcher(runtime.engine, Outbox(runtime.redis(), runtime.settings.queue_name),
                      interval=dispatcher_interval, config=runtime.config,
                      stale_after=3 * runtime.settings.heartbeat_seconds).start()
    try:
        if burst:
            _new_worker(runtime).work(with_scheduler=True, burst=True, logging_level=runtime.settings.log_level)
        else:
            _work_through_redis_outages(runtime)
    finally:
        stop.set()


def _new_worker(runtime: Runtime) -> ListenerWorker:
    # The worker's Redis client is its own and unused until RQ has raised its socket timeout above the minutes
    # its blocking pop waits for jobs: RQ raises it for connections made afterwards only. Sharing one client,
    # the dispatcher's thread made a connection first, the pop came back on it, and an idle worker quit after
    # the runtime's 30 s socket timeout.
    connection = runtime.redis()
    queue = Queue(runtime.settings.queue_name, connection=connection)
    log.info("listener.worker.start queue=%s redis=%s", queue.name, _redacted(runtime.settings.effective_redis_url))
    return ListenerWorker([queue], connection=connection)


def _work_through_redis_outages(runtime: Runtime) -> None:
    """RQ's worker loop, started again whenever it ends other than by SIGTERM or SIGINT.

    RQ waits out a lost Redis only while it waits for a job. Lost anywhere else
    (at start-up, in its bookkeeping around a job, in its suspension check),
    the connection error ends ``work()``, or escapes it from RQ's teardown:
    the worker process stopped for good, and the webhooks' work waited. Now the
    process waits for Redis to answer and starts a new RQ worker (a new name:
    the old one may still be registered). Any other error that ends RQ's loop
    is in the log with its traceback, and the loop starts again after a pause
    that doubles, up to a minute, while it keeps ending quickly.
    """
    stopping = threading.Event()
    pause = 1.0
    while True:
        _stop_on_signal(stopping)
        if not _wait_for_redis(runtime, stopping):
            return
        worker, started = _new_worker(runtime), time.monotonic()
        if stopping.is_set():  # told to stop before RQ's handlers took over
            return
        try:
            worker.work(with_scheduler=True, logging_level=runtime.settings.log_level)
        except redis.RedisError as error:  # from RQ's start-up or teardown, which record the worker in Redis
            log.warning("listener.worker.redis_lost error=%s", error)
            _stop_listening(worker)
        if worker._shutdown_requested_date is not None:  # SIGTERM or SIGINT: RQ's warm shutdown is done
            return
        pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 60.0)
        log.error("listener.worker.restart RQ's worker loop ended; starting it again in %.0f s", pause)
        _stop_on_signal(stopping)
        if stopping.wait(pause):
            return


def _stop_listening(worker: ListenerWorker) -> None:
    """Stop the worker's pub/sub thread (RQ's commands to it), as RQ's teardown would have done after recording
    the worker's death: it would go on trying to reach Redis beside the next worker's."""
    thread = worker.pubsub_thread
    if thread is not None:
        thread.stop()
        thread.join(timeout=1)
        worker.pubsub.close()


def _stop_on_signal(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT while no RQ loop runs (RQ's ``work()`` installs its own): stop waiting, and exit as a
    warm shutdown would."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())


def _wait_for_redis(runtime: Runtime, stopping: threading.Event) -> bool:
    """Block until Redis answers a PING (True), or until told to stop (False)."""
    client, pause, waiting_since = runtime.redis(), 0.25, None
    try:
        while True:
            try:
                client.ping()
                if waiting_since is not None:
                    log.warning("listener.worker.redis_back after %.1f s", time.monotonic() - waiting_since)
                return True
            except redis.RedisError as error:
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.warning("listener.worker.redis_unavailable waiting for Redis at %s: %s",
                                _redacted(runtime.settings.effective_redis_url), error)
            if stopping.wait(pause):
                return False
            pause = min(pause * 2, 2.0)
    finally:
        client.close()


def _redacted(url: str) -> str:
    """A Redis URL without its password, for the log."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
