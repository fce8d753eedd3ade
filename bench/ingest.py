"""Part 1, ingest: acknowledged POST /create per second and latency, listener against two references.

Every app runs under the Procfile's ``web`` line, ``gunicorn -c gunicorn.conf.py
<app>``, with the same environment (WEB_CONCURRENCY unset: gunicorn.conf.py's
sync workers, one per core on SQLite and one more on PostgreSQL, the references
as on SQLite; access log on, to a file), and is loaded by the same
wrk command, every request a new iconik asset. All apps are up at once: each
is warmed up (workers import and connect), then the measured time is cut
into short slices that go through the apps in turn, so that the machine's
drift in speed falls on every app alike. After the last slice the events in
each listener's database are counted: an acknowledged webhook must have been
stored.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    PYTHON,
    ROOT,
    BenchError,
    Processes,
    Started,
    children,
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
from loadgen import HOOK_TOKEN, WrkResult, merged_latency, run_for
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


@dataclass
class Server:
    """One app up for the whole part: its own Redis, gunicorn and (for the listener) database."""

    subject: Subject
    index: int
    procs: Processes
    server: Started
    redis_pid: int
    target: str
    database_url: str | None
    acknowledged: int = 0  # 2xx answers of every wrk run against it, warm-ups included
    wrk_runs: int = 0
    slices: list[WrkResult] = field(default_factory=list)
    cpu_s: float = 0.0
    restarts: int = 0

    def backends(self, options: Any) -> list[int]:
        if self.subject.database != "postgresql":
            return []
        return postgres_backends(options.postgres_admin_url, options.postgres_database)


def start_server(subject: Subject, index: int, options: Any, workdir: Path) -> Server:
    """Starts the app and warms it up (workers import, connect and fill their caches)."""
    procs = Processes(workdir)
    try:
        redis_url, redis_pid = start_redis(procs)
        port = free_port()
        url = database_url(subject.database, workdir, options) if subject.database else None
        config = write_config(workdir / "listener.yaml", iconik_config())
        env = listener_env(workdir=workdir, database_url=url or "sqlite://", redis_url=redis_url,
                           config_path=config, port=port)
        if subject.database:
            migrate(env)
        else:
            env["PYTHONPATH"] = str(ROOT)  # the reference apps are bench.refs.*, whatever --ref says
        server = start_gunicorn(procs, f"gunicorn-{subject.key}", subject.app, env, port)
        running = Server(subject, index, procs, server, redis_pid, f"http://127.0.0.1:{port}/create", url)
        warm = run_for(running.target, duration=options.warmup, connections=options.connections,
                       threads=options.threads, salt=10 + index)
        if warm.ok == 0:
            raise BenchError(f"{subject.label}: no 2xx during warm-up: {warm.statuses} {warm.errors}\n"
                             f"{server.tail()}")
        running.acknowledged += warm.ok
        running.wrk_runs += 1
        return running
    except BaseException:
        procs.stop_all()
        raise


def measure_slice(running: Server, options: Any, seconds: float, salt: int) -> WrkResult:
    """One measured wrk run against an app that is up; adds its CPU and recycled workers to the app's."""
    meter = CpuMeter(trees=[running.server.pid], processes=[running.redis_pid]).start(running.backends(options))
    log_offset = running.server.log.stat().st_size
    result = run_for(running.target, duration=seconds, connections=options.connections, threads=options.threads,
                     salt=salt)
    running.cpu_s += meter.stop(running.backends(options))
    running.restarts += restarts_logged(running.server.log, log_offset)
    running.acknowledged += result.ok
    running.wrk_runs += 1
    running.slices.append(result)
    return result


def profile_server(running: Server, options: Any) -> str:
    """py-spy over an extra, uncounted run of ``--duration`` seconds."""
    profile_path = Path(options.profile) / f"ingest-{running.subject.key}.txt"
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profiler = start_profiler(running.procs, running.server.pid, profile_path, options.duration,
                              gil=options.profile_gil)
    result = run_for(running.target, duration=options.duration, connections=options.connections,
                     threads=options.threads, salt=9000 + running.index)
    running.acknowledged += result.ok
    running.wrk_runs += 1
    try:
        profiler.process.wait(30)
    except subprocess.TimeoutExpired:
        say("py-spy did not finish in time")
    return str(profile_path)


def slice_plan(options: Any) -> tuple[int, float]:
    """How many slices each app gets, and of how many seconds: ``--rounds`` x ``--duration`` in all."""
    total = options.rounds * options.duration
    count = max(1, round(total / options.slice))
    return count, total / count


def median_ratio(mine: list[WrkResult], theirs: list[WrkResult]) -> tuple[float, float, float] | None:
    """The median, min and max over the slice rounds of one app's rate over another's in the same round."""
    ratios = sorted(a.ok_per_second / b.ok_per_second for a, b in zip(mine, theirs, strict=False)
                    if b.ok_per_second)  # an app that failed has fewer slices, and no row
    if not ratios:
        return None
    return statistics.median(ratios), ratios[0], ratios[-1]


def _title(options: Any, count: int, seconds: float, workers: dict[str, int] | None) -> str:
    started = f" ({workers_text(workers)})" if workers else ""
    return (f"1. Ingest: POST /create, new asset each, wrk -t{options.threads} -c{options.connections}, "
            f"gunicorn -c gunicorn.conf.py{started}; every app up at once, "
            f"{count} round{'s' if count != 1 else ''} of {seconds:g} s each (after {options.warmup:g}s warm-up), "
            "apps in turn")


def workers_text(workers: dict[str, int]) -> str:
    """``3 sync workers``, or each number with the apps that ran it: gunicorn.conf.py's depends on the database."""
    apps_by_count: dict[int, list[str]] = {}
    for app, count in workers.items():
        apps_by_count.setdefault(count, []).append(app)
    if len(apps_by_count) == 1:
        return f"{next(iter(apps_by_count))} sync workers"
    return "sync workers: " + "; ".join(f"{count} ({', '.join(apps)})" for count, apps in apps_by_count.items())


def workers_note(web_concurrency: str | None) -> str:
    """How many sync workers each app ran, and why: set for all by ``WEB_CONCURRENCY``, else gunicorn.conf.py's."""
    if web_concurrency:
        return f"sync workers: WEB_CONCURRENCY={web_concurrency} in the environment, for every app"
    return ("sync workers: gunicorn.conf.py starts one per core on SQLite and one more on PostgreSQL; the "
            "references run with DATABASE_URL=sqlite:// (they use no database), so they have as many as the "
            "listener on SQLite, and 'vs ceiling' of the listener on PostgreSQL sets its workers against "
            "the ceiling's")


def run(options: Any, scratch: Path) -> PartResult:
    cpus = multiprocessing.cpu_count()
    count, seconds = slice_plan(options)
    part = PartResult(
        key="ingest",
        title=_title(options, count, seconds, workers=None),
        columns=["app", "acked/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "non-2xx", "vs ceiling",
                 "vs Flask+RQ", "CPU ms/ack", "CPU vs ceiling"],
    )
    failures: dict[str, str] = {}
    wanted = [s for s in SUBJECTS if s.key in options.ingest_subjects]
    if "postgresql" in options.ingest_subjects:
        problem = postgres_reachable(options.postgres_admin_url)
        if problem:
            failures["postgresql"] = "skipped"
            part.notes.append(f"PostgreSQL skipped: {problem}")
    # The machine's speed drifts by tens of percent within minutes, so apps measured one after the other were
    # compared at different speeds: the same code came out 1.02x and 1.72x Flask + RQ in two runs an hour apart.
    # Every app is up at once instead, and the measured time is cut into short slices that go through the apps
    # in turn (order reversed every round); a ratio is taken between the slices of one round, seconds apart.
    servers: list[Server] = []
    try:
        for index, subject in enumerate(wanted):
            if failures.get(subject.key):
                continue
            say(f"ingest: starting {subject.label}")
            workdir = scratch / f"ingest-{subject.key}"
            workdir.mkdir()
            try:
                servers.append(start_server(subject, index, options, workdir))
            except BenchError as error:
                failures[subject.key] = "failed"
                part.notes.append(f"{subject.label}: {error}")
        if servers:  # as many as gunicorn.conf.py started, all of them up by now (start_gunicorn waits)
            part.title = _title(options, count, seconds,
                                workers={s.subject.key: len(children(s.server.pid)) for s in servers})
        for number in range(count):
            say(f"ingest: round {number + 1} of {count}, {seconds:g} s of each app")
            for running in servers if number % 2 == 0 else reversed(servers):
                if failures.get(running.subject.key):
                    continue
                try:
                    measure_slice(running, options, seconds, salt=1000 + 10 * number + running.index)
                except BenchError as error:
                    failures[running.subject.key] = "failed"
                    part.notes.append(f"{running.subject.label}: {error}\n{running.server.tail()}")
        for running in servers:
            if options.profile and running.subject.database and not failures.get(running.subject.key):
                say(f"ingest: {running.subject.label}, profiled with py-spy (not counted)")
                part.notes.append(f"{running.subject.label}: py-spy profile (raw collapsed stacks) of an extra, "
                                  f"uncounted run in {profile_server(running, options)}")
        for running in servers:
            part.raw[running.subject.key] = {"slices": [result.as_json() for result in running.slices],
                                             "server_cpu_s": running.cpu_s, "restarts": running.restarts}
            if running.database_url:
                part.notes.append(stored_note(running, count_events(running.database_url), options))
    finally:
        for running in servers:
            running.procs.stop_all()

    for running in servers:
        if running.restarts:
            part.notes.append(f"{running.subject.label}: gunicorn recycled {running.restarts} worker(s) during the "
                              "measured slices (max_requests in gunicorn.conf.py); each restart, a fork (an import "
                              "of the app too, where gunicorn.conf.py does not preload it), is in the p99 and max")

    by_key = {running.subject.key: running for running in servers if not failures.get(running.subject.key)}
    ceiling, plain = by_key.get("ceiling"), by_key.get("flask_rq")

    def ratio(mine: Server | None, reference: Server | None) -> tuple[float, float, float] | None:
        return median_ratio(mine.slices, reference.slices) if mine and reference else None

    def cpu_per_ack(running: Server) -> float | None:
        acked = sum(result.ok for result in running.slices)
        return 1000 * running.cpu_s / acked if acked else None

    for subject in wanted:
        running = by_key.get(subject.key)
        if running is None:
            part.rows.append([subject.label, failures.get(subject.key, "failed")] + [""] * 9)
            continue
        slices = running.slices
        rate = sum(result.ok for result in slices) / sum(result.duration_s for result in slices)
        latency = merged_latency(slices)
        vs_ceiling, vs_plain = ratio(running, ceiling), ratio(running, plain)
        cpu, ceiling_cpu = cpu_per_ack(running), cpu_per_ack(ceiling) if ceiling else None
        part.rows.append([
            subject.label, fmt(rate, 0), fmt(latency["p50"], 1), fmt(latency["p90"], 1), fmt(latency["p99"], 1),
            fmt(latency["max"], 1), str(sum(result.not_ok for result in slices)),
            f"{vs_ceiling[0]:.2f}x" if vs_ceiling else "-", f"{vs_plain[0]:.2f}x" if vs_plain else "-",
            fmt(cpu, 2), f"{ceiling_cpu / cpu:.2f}x" if cpu and ceiling_cpu else "-",
        ])
        if subject.database:
            spreads = [f"{name} {figures[1]:.2f}x to {figures[2]:.2f}x"
                       for name, figures in (("vs ceiling", vs_ceiling), ("vs Flask+RQ", vs_plain)) if figures]
            if spreads:
                part.notes.append(f"{subject.label}, the ratio in each round: {'; '.join(spreads)}")

    sqlite_run, pg_run = by_key.get("sqlite"), by_key.get("postgresql")
    if "sqlite" in options.ingest_subjects:
        vs_ceiling, vs_plain = ratio(sqlite_run, ceiling), ratio(sqlite_run, plain)
        part.targets += [
            Target("ingest SQLite vs flask-restful ceiling", vs_ceiling[0] if vs_ceiling else None, ">=", 0.5, "x"),
            Target("ingest SQLite vs plain Flask + RQ", vs_plain[0] if vs_plain else None, ">=", 1.2, "x"),
            Target("ingest SQLite p99 latency", merged_latency(sqlite_run.slices)["p99"] if sqlite_run else None,
                   "<=", 20.0, " ms", note="closed loop: with 16 connections, mean latency = 16 / throughput"),
        ]
    if "postgresql" in options.ingest_subjects:
        vs_ceiling = ratio(pg_run, ceiling)
        part.targets.append(Target("ingest PostgreSQL vs flask-restful ceiling",
                                   vs_ceiling[0] if vs_ceiling else None, ">=", 0.33, "x"))
    part.notes.append(f"wrk runs on the same {cpus} cores as gunicorn: load generator and server compete for CPU "
                      "(wrk uses one thread to keep its share small); all traffic is on 127.0.0.1")
    part.notes.append(f"acked/s and latencies: all {count} slices of the app together; vs ceiling and vs Flask+RQ: "
                      "the median over the rounds of the two apps' rates in the same round, measured seconds apart")
    part.notes.append("CPU ms/ack: user + system CPU of gunicorn's master and workers, the app's redis-server and "
                      "(PostgreSQL) the database's backends, per acknowledged webhook, during the measured slices; "
                      "other load on the machine barely changes it. CPU vs ceiling: the ceiling's CPU/ack over "
                      "the app's, what the throughput ratio would be on an otherwise idle, CPU-bound machine")
    part.notes.append("each app has its own redis-server (no persistence); the listener runs no RQ worker here: "
                      "a /create alone starts no action")
    part.notes.append(workers_note(os.environ.get("WEB_CONCURRENCY")))
    return part


def stored_note(running: Server, stored: dict[str, int], options: Any) -> str:
    """Every acknowledged webhook must be in the database; wrk stops with requests in flight (at most one per
    connection per run), which are stored without being counted as acknowledged."""
    total = sum(stored.values())
    in_flight = options.connections * running.wrk_runs
    label = running.subject.label
    if total < running.acknowledged or total > running.acknowledged + in_flight:
        return f"{label}: STORED COUNT MISMATCH: {running.acknowledged:,} acknowledged, events {stored}"
    return (f"{label}: every acknowledged webhook is stored ({running.acknowledged:,} acknowledged, {total:,} "
            "events; the rest were in flight when wrk stopped)")
