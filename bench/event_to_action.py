"""Part 2, event to action: N iconik assets (create + proxy each) to N analysis requests at a stand-in iconik.

The listener runs as the Procfile says (gunicorn -c gunicorn.conf.py, and
``python -m listener worker`` twice) against ``iconik_stub.py``. wrk posts
the 2N webhooks as fast as they are answered (16 connections, the two
events of an asset back to back, so they often race on two gunicorn workers).
The clock starts when wrk starts and stops when the stand-in has received an
analysis request for every asset; the admin API then must list N analyze
actions ``done``.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import redis
from common import (
    PYTHON,
    BenchError,
    Processes,
    free_port,
    http_json,
    listener_env,
    migrate,
    postgres_reachable,
    say,
    start_gunicorn,
    start_redis,
    wait_for_port,
    write_config,
)
from cpuacct import CpuMeter, postgres_backends
from ingest import database_url, iconik_config
from loadgen import run_pairs
from report import PartResult, Target, fmt
from rq import Worker

WORKERS = 2


def stub_stats(port: int, full: bool = False) -> dict[str, Any]:
    status, stats = http_json("GET", f"http://127.0.0.1:{port}/stats{'?full' if full else ''}")
    if status != 200:
        raise BenchError(f"iconik stand-in answered {status}")
    return stats


def wait_for_workers(redis_url: str, count: int, timeout: float = 30.0) -> None:
    connection = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Worker.count(connection=connection) >= count:
            return
        time.sleep(0.1)
    raise BenchError(f"{count} RQ workers did not register within {timeout:g}s")


def done_actions(base_url: str, expected: int, timeout: float) -> int:
    """Analyze actions listed as done by the admin API, waiting up to ``timeout`` for ``expected``."""
    from common import admin_list

    deadline = time.monotonic() + timeout
    while True:
        done = len(admin_list(base_url, "/api/actions?kind=analyze&status=done"))
        if done >= expected or time.monotonic() > deadline:
            return done
        time.sleep(0.5)


def measure(database: str, options: Any, workdir: Path) -> dict[str, Any]:
    assets = options.assets
    procs = Processes(workdir)
    try:
        redis_url, redis_pid = start_redis(procs)
        stub_port = free_port()
        stub = procs.start("iconik-stub", [PYTHON, str(Path(__file__).with_name("iconik_stub.py")),
                                           "--port", str(stub_port)])
        wait_for_port(stub_port, stub.process)
        port = free_port()
        url = database_url(database, workdir, options)
        config = write_config(workdir / "listener.yaml", iconik_config(f"http://127.0.0.1:{stub_port}"))
        env = listener_env(workdir=workdir, database_url=url, redis_url=redis_url, config_path=config, port=port)
        migrate(env)
        web = start_gunicorn(procs, "gunicorn", "wsgi:app", env, port)
        workers = [procs.start(f"worker-{index + 1}", [PYTHON, "-m", "listener", "worker"], env=env)
                   for index in range(WORKERS)]
        wait_for_workers(redis_url, WORKERS)
        profilers = []
        if options.profile:
            from ingest import start_profiler

            for process in [web, *workers]:  # gunicorn's master: py-spy follows it into its workers
                out = Path(options.profile) / f"e2a-{database}-{process.name}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                profilers.append(start_profiler(procs, process.pid, out, duration=600, gil=options.profile_gil))
        http_json("GET", f"http://127.0.0.1:{port}/healthz")  # at least one gunicorn worker has booted

        limit = options.e2a_limit or max(60.0, assets / 10.0)  # bounded: 5,000 assets give up after 500 s
        backends = (lambda: postgres_backends(options.postgres_admin_url, options.postgres_database)) \
            if database == "postgresql" else (lambda: [])
        # CPU of each part of the pipeline: which one the rate is bound by (a profile says where, this how much).
        meters = {"web": CpuMeter(trees=[web.pid]), "workers": CpuMeter(trees=[w.pid for w in workers]),
                  "redis": CpuMeter(processes=[redis_pid]), "iconik stand-in": CpuMeter(processes=[stub.pid])}
        if database == "postgresql":
            meters["postgresql"] = CpuMeter()
        for name, meter in meters.items():
            meter.start(backends() if name == "postgresql" else ())
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        wrk, posts_done = run_pairs(f"http://127.0.0.1:{port}", assets=assets, connections=options.connections,
                                    salt=7000, limit_s=limit)
        deadline = started + limit
        stats = stub_stats(stub_port)
        while stats["distinct_assets"] < assets and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = stub_stats(stub_port)
        stopped = time.monotonic()
        cpu_s = {name: meter.stop(backends() if name == "postgresql" else ()) for name, meter in meters.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s["wrk"] = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
        stats = stub_stats(stub_port, full=True)
        for profiler in profilers:
            procs.interrupt(profiler)
        all_arrived = stats["distinct_assets"] >= assets
        # The last action is marked done just after its request: wait a little for that, not for stragglers.
        done = done_actions(f"http://127.0.0.1:{port}", assets, timeout=30 if all_arrived else 0)
        return {
            "assets": assets,
            "posts": 2 * assets,
            "post_statuses": wrk.statuses,
            "post_latency_ms": wrk.latency_ms,
            "posting_s": (posts_done - started) if posts_done else None,
            "posts_answered": wrk.answered_posts,
            "limit_s": limit,
            "waited_s": stopped - started,
            "analysis_requests": stats["count"],
            "distinct_assets": stats["distinct_assets"],
            "unauthenticated": stats["unauthenticated"],
            "first_arrival_s": (stats["first"] - started) if stats["first"] else None,
            "all_arrived_s": (stats["last"] - started) if all_arrived else None,
            "done_actions": done,
            "arrivals_s": [round(t - started, 4) for t in stats.get("arrivals", [])],
            "cpu_s": cpu_s,
        }
    finally:
        procs.stop_all()


def run(options: Any, scratch: Path) -> PartResult:
    part = PartResult(
        key="event-to-action",
        title=(f"2. Event to action: {options.assets:,} iconik assets (create + proxy), {WORKERS} worker processes, "
               "local iconik stand-in"),
        columns=["database", "webhooks/s", "posting s", "first analysis s", "all analyses s", "analyses/s",
                 "steady analyses/s", "analyses", "done (admin API)"],
    )
    for database in options.e2a_databases:
        if database == "postgresql":
            problem = postgres_reachable(options.postgres_admin_url)
            if problem:
                part.notes.append(f"PostgreSQL skipped: {problem}")
                continue
        say(f"event to action: {options.assets} assets on {database}")
        workdir = scratch / f"e2a-{database}"
        workdir.mkdir()
        try:
            figures = measure(database, options, workdir)
        except BenchError as error:
            part.rows.append([database, "failed"] + [""] * 7)
            part.notes.append(f"{database}: {error}")
            continue
        arrivals = figures.pop("arrivals_s")
        part.raw[database] = figures
        total = figures["all_arrived_s"]
        # Not all in time: the rate so far (arrivals / time waited), marked as partial.
        rate = figures["assets"] / total if total else figures["distinct_assets"] / figures["waited_s"]
        steady = _steady_rate(arrivals)
        posting = figures["posting_s"]
        part.rows.append([
            database, fmt(figures["posts"] / posting, 0) if posting else "-",
            fmt(posting, 1) if posting else f"> {figures['limit_s']:g}",
            fmt(figures["first_arrival_s"], 2), fmt(total, 1) if total else f"not all in {figures['limit_s']:g}",
            fmt(rate, 0) + ("" if total else " (partial)"), fmt(steady, 0),
            f"{figures['analysis_requests']:,}", f"{figures['done_actions']:,}",
        ])
        cpu = figures["cpu_s"]
        part.notes.append(f"{database}: CPU ms per asset (2 webhooks, 1 analysis) from first webhook to last analysis: "
                          + ", ".join(f"{name} {1000 * used / figures['assets']:.2f}" for name, used in cpu.items())
                          + f"; in all {1000 * sum(cpu.values()) / figures['assets']:.2f} "
                          f"(2 cores give {2000 * figures['waited_s'] / figures['assets']:.2f})")
        if not posting:
            part.notes.append(f"{database}: only {figures['posts_answered']:,} of {figures['posts']:,} webhooks were "
                              f"answered within the {figures['limit_s']:g} s limit")
        if figures["analysis_requests"] != figures["assets"] or figures["distinct_assets"] != figures["assets"]:
            part.notes.append(f"{database}: {figures['analysis_requests']} analysis requests for "
                              f"{figures['distinct_assets']} distinct assets, expected {figures['assets']} once each")
        if figures["unauthenticated"]:
            part.notes.append(f"{database}: {figures['unauthenticated']} analysis requests without App-ID/Auth-Token")
        bad = {k: v for k, v in figures["post_statuses"].items() if not k.startswith("2")}
        if bad:
            part.notes.append(f"{database}: webhooks answered non-2xx: {bad}")
        part.targets.append(Target(f"event to action, {database}: analyses/s", rate, ">=", 300.0, "/s",
                                   note="first webhook sent -> last analysis request received"
                                   if total else "PARTIAL: not all arrived within the limit; rate so far"))
    part.notes.append("analyses/s: assets / (first webhook sent -> last analysis request arrived); steady: the "
                      "middle 80 % of arrivals")
    part.notes.append("wrk, gunicorn (web), 2 listener workers (RQ; jobs run in the worker process), Redis and the "
                      "iconik stand-in all share the 2 cores")
    return part


def _steady_rate(arrivals: list[float]) -> float | None:
    if len(arrivals) < 10:
        return None
    low, high = arrivals[len(arrivals) // 10], arrivals[(len(arrivals) * 9) // 10]
    span = high - low
    return ((len(arrivals) * 9) // 10 - len(arrivals) // 10) / span if span > 0 else None
