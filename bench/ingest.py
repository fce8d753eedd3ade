"""Part 1, ingest: acknowledged POST /create per second and latency, listener against two references.

Every app runs under the Procfile's ``web`` line, ``gunicorn -c gunicorn.conf.py
<app>``, with the same environment (WEB_CONCURRENCY unset: 2 x cores + 1 sync
workers; access log on, to a file), and is loaded by the same wrk command: a
warm-up (workers import and connect), then the measured run, every request a
new iconik asset. After each listener run the events in its database are
counted: an acknowledged webhook must have been stored.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    ROOT,
    BenchError,
    Processes,
    free_port,
    fresh_postgres_database,
    listener_env,
    migrate,
    postgres_reachable,
    say,
    start_gunicorn,
    start_redis,
    write_config,
)
from cpuacct import CpuMeter, postgres_backends
from loadgen import HOOK_TOKEN, WrkResult, run_for
from report import PartResult, Target, fmt
from sqlalchemy import create_engine, text


@dataclass
class Subject:
    key: str
    label: str
    app: str  # the WSGI app gunicorn loads
    database: str | None = None  # "sqlite", "postgresql", or None for the references


SUBJECTS = [
    Subject("ceiling", "ceiling: flask-restful, parse + answer", "bench.refs.ceiling:app"),
    Subject("flask_rq", "plain Flask + RQ enqueue, no store", "bench.refs.flask_rq:app"),
    Subject("sqlite", "listener, SQLite (WAL)", "wsgi:app", "sqlite"),
    Subject("postgresql", "listener, PostgreSQL", "wsgi:app", "postgresql"),
]


def iconik_config(api_url: str = "http://127.0.0.1:9") -> dict[str, Any]:
    return {
        "download_dir": "var/downloads",
        "sources": {"iconik": {"token": HOOK_TOKEN, "api_url": api_url, "app_id": "bench-app",
                               "auth_token": "bench-auth"}},
    }


def database_url(subject_db: str, workdir: Path, options: Any) -> str:
    if subject_db == "sqlite":
        return f"sqlite:///{workdir / 'var' / 'listener.db'}"
    return fresh_postgres_database(options.postgres_admin_url, options.postgres_database)


def count_events(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT status, count(*) FROM events GROUP BY status")).all())
    finally:
        engine.dispose()


def restarts_logged(log: Path, since: int) -> int:
    """Workers gunicorn recycled after byte ``since`` of its log: gunicorn.conf.py's ``max_requests`` (10,000
    requests a worker, with jitter) is reached within one run by an app answering some 4,000 a second on 5
    workers. Since the app is preloaded a restart is a fork; before, it imported the app again (0.7 to 0.9 s of
    CPU), which showed in that run's p99 and max."""
    with log.open("rb") as handle:
        handle.seek(since)
        return handle.read().count(b"Autorestarting worker")


def start_profiler(procs: Processes, master_pid: int, out: Path, duration: float, gil: bool = False) -> Any:
    """py-spy on a process and its children. Without ``gil`` it samples every thread that is not idle, so
    time spent waiting inside a C call (SQLite's busy handler, a socket read) counts too; with ``gil``
    only threads holding the GIL: Python's own CPU time."""
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise BenchError("py-spy not installed: pip install -r bench/requirements.txt")
    return procs.start(f"py-spy-{out.stem}", [py_spy, "record", "--pid", str(master_pid), "--subprocesses",
                                              "--format", "raw", "--rate", "250", "--duration",
                                              str(max(1, round(duration))), "--output", str(out), "--nonblocking",
                                              *(["--gil"] if gil else [])])


def measure(subject: Subject, options: Any, workdir: Path, salt: int,
            profile: bool = False) -> tuple[WrkResult, dict[str, Any]]:
    procs = Processes(workdir)
    extra: dict[str, Any] = {}
    try:
        redis_url, redis_pid = start_redis(procs)
        port = free_port()
        url = database_url(subject.database, workdir, options) if subject.database else "sqlite://"
        config = write_config(workdir / "listener.yaml", iconik_config())
        env = listener_env(workdir=workdir, database_url=url, redis_url=redis_url, config_path=config, port=port)
        if subject.database:
            migrate(env)
        else:
            env["PYTHONPATH"] = str(ROOT)  # the reference apps are bench.refs.*, whatever --ref says
        server = start_gunicorn(procs, f"gunicorn-{subject.key}", subject.app, env, port)
        target = f"http://127.0.0.1:{port}/create"
        warm = run_for(target, duration=options.warmup, connections=options.connections, threads=options.threads,
                       salt=salt)
        if warm.ok == 0:
            raise BenchError(f"{subject.label}: no 2xx during warm-up: {warm.statuses} {warm.errors}\n"
                             f"{server.tail()}")
        profiler = None
        if profile:
            profile_path = Path(options.profile) / f"ingest-{subject.key}.txt"
            profile_path.parent.mkdir(parents=True, exist_ok=True)
            profiler = start_profiler(procs, server.pid, profile_path, options.duration, gil=options.profile_gil)
            extra["profile"] = str(profile_path)
        backends = (lambda: postgres_backends(options.postgres_admin_url, options.postgres_database)) \
            if subject.database == "postgresql" else (lambda: [])
        meter = CpuMeter(trees=[server.pid], processes=[redis_pid]).start(backends())
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        log_offset = server.log.stat().st_size
        result = run_for(target, duration=options.duration, connections=options.connections,
                         threads=options.threads, salt=salt + 1)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        extra["server_cpu_s"] = meter.stop(backends())
        extra["restarts"] = restarts_logged(server.log, log_offset)
        extra["wrk_cpu_s"] = (children_after.ru_utime + children_after.ru_stime
                              - children_before.ru_utime - children_before.ru_stime)
        if profiler is not None:
            try:
                profiler.process.wait(30)
            except subprocess.TimeoutExpired:
                say("py-spy did not finish in time")
        if subject.database:
            stored = count_events(url)
            extra["stored"] = stored
            extra["acknowledged"] = warm.ok + result.ok
        return result, extra
    finally:
        procs.stop_all()


def run(options: Any, scratch: Path) -> PartResult:
    cpus = multiprocessing.cpu_count()
    workers = int(os.environ.get("WEB_CONCURRENCY", cpus * 2 + 1))
    part = PartResult(
        key="ingest",
        title=(f"1. Ingest: POST /create, new asset each, wrk -t{options.threads} -c{options.connections} "
               f"{options.duration:g}s (after {options.warmup:g}s warm-up), gunicorn -c gunicorn.conf.py "
               f"({workers} sync workers){f', best of {options.rounds} rounds' if options.rounds > 1 else ''}"),
        columns=["app", "acked/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "non-2xx", "vs ceiling",
                 "vs Flask+RQ", "CPU ms/ack", "CPU vs ceiling"],
    )
    results: dict[str, WrkResult] = {}
    cpu_per_ack: dict[str, float] = {}
    restarts: dict[str, int] = {}  # in each app's reported round
    failures: dict[str, str] = {}
    wanted = [s for s in SUBJECTS if s.key in options.ingest_subjects]
    if "postgresql" in options.ingest_subjects:
        problem = postgres_reachable(options.postgres_admin_url)
        if problem:
            failures["postgresql"] = "skipped"
            part.notes.append(f"PostgreSQL skipped: {problem}")
    # Rounds go through every app in turn, so a burst of other load on the machine hurts one round of each
    # rather than all rounds of one; each app's best round is reported.
    for round_number in range(options.rounds):
        for index, subject in enumerate(wanted):
            if failures.get(subject.key):
                continue
            say(f"ingest: {subject.label} (round {round_number + 1} of {options.rounds})")
            workdir = scratch / f"ingest-{subject.key}-{round_number + 1}"
            workdir.mkdir()
            try:
                result, extra = measure(subject, options, workdir, salt=1000 + 100 * round_number + 10 * index)
            except BenchError as error:
                failures[subject.key] = "failed"
                part.notes.append(f"{subject.label}: {error}")
                continue
            part.raw.setdefault(subject.key, []).append({**result.as_json(), **extra})
            best = results.get(subject.key)
            if best is None or result.ok_per_second > best.ok_per_second:
                results[subject.key] = result
                restarts[subject.key] = extra["restarts"]
                if result.ok:
                    cpu_per_ack[subject.key] = 1000 * extra["server_cpu_s"] / result.ok
    for subject in wanted:
        if options.profile and subject.database and not failures.get(subject.key):
            say(f"ingest: {subject.label}, profiled with py-spy (not counted)")
            workdir = scratch / f"ingest-{subject.key}-profiled"
            workdir.mkdir()
            _, extra = measure(subject, options, workdir, salt=9000, profile=True)
            part.notes.append(f"{subject.label}: py-spy profile (raw collapsed stacks) of an extra, uncounted run "
                              f"in {extra['profile']}")
    for subject in wanted:
        checked = [extra for extra in part.raw.get(subject.key, []) if "stored" in extra]
        if not checked:
            continue
        # wrk stops counting with requests still in flight (at most one per connection per run): those are
        # stored without being counted as acknowledged.
        in_flight = 2 * options.connections
        acked = sum(extra["acknowledged"] for extra in checked)
        stored = sum(sum(extra["stored"].values()) for extra in checked)
        lost = [extra for extra in checked if sum(extra["stored"].values()) < extra["acknowledged"]]
        odd = [extra for extra in checked if sum(extra["stored"].values()) > extra["acknowledged"] + in_flight]
        if lost or odd:
            part.notes.append(f"{subject.label}: STORED COUNT MISMATCH: " + "; ".join(
                f"{extra['acknowledged']:,} acknowledged, events {extra['stored']}" for extra in lost + odd))
        else:
            part.notes.append(f"{subject.label}: every acknowledged webhook is stored ({acked:,} acknowledged, "
                              f"{stored:,} events; the rest were in flight when wrk stopped)")

    for subject in wanted:
        if restarts.get(subject.key):
            part.notes.append(f"{subject.label}: gunicorn recycled {restarts[subject.key]} worker(s) during the "
                              "measured run (max_requests in gunicorn.conf.py); each restart, a fork (an import "
                              "of the app too, where gunicorn.conf.py does not preload it), is in that run's p99 "
                              "and max")

    ceiling = results.get("ceiling")
    plain = results.get("flask_rq")
    for subject in wanted:
        result = results.get(subject.key)
        if result is None:
            part.rows.append([subject.label, failures.get(subject.key, "failed")] + [""] * 9)
            continue
        rate = result.ok_per_second
        part.rows.append([
            subject.label, fmt(rate, 0), fmt(result.latency_ms["p50"], 1), fmt(result.latency_ms["p90"], 1),
            fmt(result.latency_ms["p99"], 1), fmt(result.latency_ms["max"], 1), str(result.not_ok),
            f"{rate / ceiling.ok_per_second:.2f}x" if ceiling else "-",
            f"{rate / plain.ok_per_second:.2f}x" if plain else "-",
            fmt(cpu_per_ack.get(subject.key), 2),
            f"{cpu_per_ack['ceiling'] / cpu_per_ack[subject.key]:.2f}x"
            if "ceiling" in cpu_per_ack and subject.key in cpu_per_ack else "-",
        ])

    sqlite_run, pg_run = results.get("sqlite"), results.get("postgresql")
    if "sqlite" in options.ingest_subjects:
        part.targets += [
            Target("ingest SQLite vs flask-restful ceiling",
                   sqlite_run.ok_per_second / ceiling.ok_per_second if sqlite_run and ceiling else None,
                   ">=", 0.5, "x"),
            Target("ingest SQLite vs plain Flask + RQ",
                   sqlite_run.ok_per_second / plain.ok_per_second if sqlite_run and plain else None, ">=", 1.2, "x"),
            Target("ingest SQLite p99 latency", sqlite_run.latency_ms["p99"] if sqlite_run else None, "<=", 20.0,
                   " ms", note="closed loop: with 16 connections, mean latency = 16 / throughput"),
        ]
    if "postgresql" in options.ingest_subjects:
        part.targets.append(Target("ingest PostgreSQL vs flask-restful ceiling",
                                   pg_run.ok_per_second / ceiling.ok_per_second if pg_run and ceiling else None,
                                   ">=", 0.33, "x"))
    part.notes.append(f"wrk runs on the same {cpus} cores as gunicorn: load generator and server compete for CPU "
                      "(wrk uses one thread to keep its share small); all traffic is on 127.0.0.1")
    part.notes.append("CPU ms/ack: user + system CPU of gunicorn's master and workers, the app's redis-server and "
                      "(PostgreSQL) the database's backends, per acknowledged webhook, during the measured run; "
                      "other load on the machine barely changes it. CPU vs ceiling: the ceiling's CPU/ack over "
                      "the app's, what the throughput ratio would be on an otherwise idle, CPU-bound machine")
    part.notes.append("each app has its own redis-server (no persistence); the listener runs no RQ worker here: "
                      "a /create alone starts no action")
    return part
