"""An experiment, not the product: ``python -m listener worker`` with the job modules imported first.

RQ forks a work horse per job. The worker process itself never imports the
job modules (``jobs.runner`` is imported by dotted path inside the horse), so
every horse imports them again, ``requests`` included, and builds the
configured sources again. ``bench/run.py --e2a-preload-jobs`` runs the workers
through this file to show what doing that once, before forking, would give.
With BENCH_SIMPLE_WORKER=1 the workers do not fork at all. It changes nothing in the listener's files.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys

sys.path.insert(0, os.getcwd())  # the listener under test (the bench starts this in its root)

import jobs  # noqa: E402

for found in pkgutil.iter_modules(jobs.__path__):
    importlib.import_module(f"jobs.{found.name}")

from listener import worker as worker_module  # noqa: E402
from listener.__main__ import main  # noqa: E402

_install = worker_module.install


def _install_with_sources(runtime):  # noqa: ANN001, ANN202
    runtime.sources  # noqa: B018 - built once here, inherited by every horse
    _install(runtime)


worker_module.install = _install_with_sources

if os.environ.get("BENCH_SIMPLE_WORKER") == "1":
    # Further: no fork at all (RQ's SimpleWorker runs each job in the worker process), so the engine, its
    # compiled statements and the connections outlive a job. Isolation between jobs is lost.
    from rq import SimpleWorker

    worker_module.Worker = SimpleWorker

if __name__ == "__main__":
    sys.exit(main(["worker"]))
