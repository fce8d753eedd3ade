"""gunicorn settings for webhook traffic: many short requests, senders that retry.

Override any of them with environment variables where noted.
"""
import gc
import multiprocessing
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Sync workers: a webhook is one short transaction; processes, not threads, use both cores. Fewer than gunicorn's
# usual 2 x cores + 1: a webhook keeps its core busy, so extra processes only share the cores among more requests
# in flight (on 2 cores, 3 workers answered the ingest benchmark at the rate 5 did, with a lower p99:
# bench/README.md, the nineteenth round). How many depends on the database:
# - SQLite: one per core, two at least (so that a slow admin page holds up no webhook). Every write takes its turn
#   on the file's one lock, so a process more than cores adds no rate: it only takes the core from the process
#   that holds the lock. On 2 cores, 2 workers answered the ingest benchmark at the rate 3 did, and ran event to
#   action about as fast, with one process's memory less (bench/README.md, the twenty-second round).
# - PostgreSQL: one more than cores. Each webhook waits for the server's answers, and another process can use the
#   core meanwhile: 3 workers were 10 % faster than 2 at ingest, 5 % at event to action.
# Behind a database far away, where a webhook waits longer, set WEB_CONCURRENCY higher (a PaaS often sets it for
# its machine size).
_cores = multiprocessing.cpu_count()
# Read here as config.settings reads it (unset or empty: var/'s SQLite file), not imported from there: gunicorn
# reads this file before the app's directory is on the path (`--chdir` from elsewhere fails on that import).
_on_sqlite = (os.environ.get("DATABASE_URL") or "sqlite").startswith("sqlite")
workers = int(os.environ.get("WEB_CONCURRENCY") or (max(2, _cores) if _on_sqlite else _cores + 1))
worker_class = "sync"
timeout = int(os.environ.get("WEB_TIMEOUT", 30))  # senders give up after about as long
graceful_timeout = 20  # a PaaS sends SIGKILL some 30 s after SIGTERM
keepalive = 5  # keep connections from a load balancer or a busy sender open
max_requests = 10000  # recycle workers now and then; jitter so they do not all restart at once
max_requests_jitter = 1000
# The app is imported once, by the master, and each worker is forked from it: a recycled worker then costs
# a fork, where importing the app again took 0.7 to 0.9 s of CPU, and under sustained load a worker was
# recycled every few seconds. The master opens no database or Redis connection (post_fork makes sure).
preload_app = True
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# The path without its query string: a ?token= must never reach the access log.
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG", "1") != "0" else None
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'

# Metrics from every worker process, summed on /metrics (prometheus-client multiprocess mode).
# Set here, when gunicorn reads this file: before the master imports the app (which writes no metric itself).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                      os.path.join(tempfile.gettempdir(), f"listener-metrics-{os.getpid()}"))


def on_starting(server):  # noqa: ANN001, ARG001 - gunicorn hook
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)  # counts from an earlier run must not leak in
    os.makedirs(directory, exist_ok=True)


# Imported here, once: importing inside child_exit (a SIGCHLD handler) re-entered the import
# when two workers exited at once during shutdown, and the master died with a traceback.
from prometheus_client import multiprocess  # noqa: E402


def pre_fork(server, worker):  # noqa: ANN001, ARG001 - gunicorn hook
    # The app's objects, made by the master, move to the garbage collector's permanent generation: a worker's
    # collections then never write to them, so their pages stay shared with the master instead of being
    # copied, all at once, at a worker's first full collection (a p99 of 56 to 103 ms in such runs).
    gc.freeze()


def post_fork(server, worker):  # noqa: ANN001, ARG001 - gunicorn hook
    # Connections are never shared across a fork: should the master ever have opened one, the worker forgets it
    # (without closing it under the master) and opens its own.
    from listener.db import forget_connections_after_fork

    forget_connections_after_fork()


def child_exit(server, worker):  # noqa: ANN001, ARG001 - gunicorn hook
    multiprocess.mark_process_dead(worker.pid)


# LOG_FORMAT=json: gunicorn's own lines (errors, access) as JSON objects too, one per line.
if os.environ.get("LOG_FORMAT", "").lower() == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "listener.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
