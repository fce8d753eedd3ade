"""Jobs run by the listener's RQ worker, in this process: what ``instructions.py --modes job`` counts.

    BENCH_ICONIK_URL=http://127.0.0.1:PORT python bench/worker_calls.py APP_ROOT WORKDIR N

WORKDIR holds what ``wsgi_calls.py APP_ROOT WORKDIR pair N`` left: N assets whose analysis is queued
in RQ (``REDIS_URL``), with iconik's API at ``BENCH_ICONIK_URL`` (``iconik_stub.py``). The worker
of ``python -m listener worker`` runs them in burst mode, without the scheduler and the dispatcher,
whose threads run on timers and would make the count depend on how long the run took. Exits 1
unless all N analyses are done.
"""
from __future__ import annotations

import sys
from pathlib import Path

from wsgi_calls import quiet_logs, use_listener


def main() -> int:
    app_root, workdir, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    use_listener(app_root, workdir)

    from rq import Queue  # noqa: PLC0415 - the listener's, from the app root given
    from sqlalchemy import text  # noqa: PLC0415

    from listener.logs import configure_logging  # noqa: PLC0415
    from listener.runtime import Runtime, install  # noqa: PLC0415
    from listener.worker import ListenerWorker, preload  # noqa: PLC0415

    runtime = Runtime.load()
    configure_logging(runtime.settings)
    quiet_logs()
    install(runtime)
    preload(runtime)
    connection = runtime.redis()
    queue = Queue(runtime.settings.queue_name, connection=connection)
    ListenerWorker([queue], connection=connection).work(burst=True, with_scheduler=False,
                                                        logging_level=runtime.settings.log_level)
    with runtime.engine.connect() as conn:
        done = conn.execute(text("SELECT count(*) FROM actions WHERE kind = 'analyze' AND status = 'done'")).scalar()
    if done != count:
        print(f"{done} analyses done, expected {count}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
