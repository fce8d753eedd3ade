"""``python -m listener worker``: an RQ worker with the scheduler and the outbox dispatcher."""
from __future__ import annotations

import importlib
import logging

from rq import Queue, Worker

from listener.logs import configure_logging
from listener.outbox import Dispatcher, Outbox
from listener.runtime import Runtime, install

log = logging.getLogger(__name__)


JOB_MODULES = ("jobs.runner", "jobs.analyze", "jobs.download", "jobs.ftp_push", "jobs.notify")


def preload(runtime: Runtime) -> None:
    """Import what jobs use before RQ forks a work horse per job, so each job starts warm.

    Without it every work horse imported requests and the job modules afresh: the
    benchmark profile showed that as most of a short job's time.
    """
    for name in JOB_MODULES:
        importlib.import_module(name)
    _ = runtime.sources  # handlers and their options, built once


def run_worker(runtime: Runtime, *, burst: bool = False, dispatcher_interval: float = 1.0) -> None:
    configure_logging(runtime.settings)
    install(runtime)
    preload(runtime)
    connection = runtime.redis()
    stop = Dispatcher(runtime.engine, Outbox(connection, runtime.settings.queue_name), interval=dispatcher_interval,
                      config=runtime.config, stale_after=3 * runtime.settings.heartbeat_seconds).start()
    queue = Queue(runtime.settings.queue_name, connection=connection)
    worker = Worker([queue], connection=connection)
    log.info("listener.worker.start queue=%s redis=%s", queue.name, _redacted(runtime.settings.effective_redis_url))
    try:
        # The RQ scheduler moves retries whose time has come back onto the queue.
        worker.work(with_scheduler=True, burst=burst, logging_level=runtime.settings.log_level)
    finally:
        stop.set()


def _redacted(url: str) -> str:
    """A Redis URL without its password, for the log."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
