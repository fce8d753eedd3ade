"""Driving wrk (Debian package ``wrk``, C, epoll) with ``bench/wrk/iconik.lua``."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import BENCH, BenchError

SCRIPT = BENCH / "wrk" / "iconik.lua"
HOOK_TOKEN = "bench-hook-token"


def wrk_path() -> str:
    path = shutil.which("wrk")
    if not path:
        raise BenchError("wrk not found: apt-get install -y wrk")
    return path


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    statuses: dict[str, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]
    answered_posts: int = 0
    quantiles_ms: list[float] = field(default_factory=list)  # the latency at 0.1 %, 0.2 %, ... 100 %

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))

    @property
    def not_ok(self) -> int:
        return sum(self.statuses.values()) - self.ok + sum(self.errors.values())

    @property
    def ok_per_second(self) -> float:
        """Acknowledged (2xx) webhooks per second."""
        return self.ok / self.duration_s if self.duration_s else 0.0

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        for line in output.splitlines():
            if line.startswith("BENCH_JSON "):
                data = json.loads(line[len("BENCH_JSON "):])
                return cls(
                    requests=int(data["requests"]),
                    duration_s=data["duration_us"] / 1e6,
                    statuses={str(k): int(v) for k, v in (data.get("statuses") or {}).items()},
                    errors={k: int(v) for k, v in (data.get("errors") or {}).items()},
                    latency_ms={k: v / 1000.0 for k, v in data["latency_us"].items()},
                    answered_posts=int(data.get("answered_posts") or 0),
                    quantiles_ms=[int(value) / 1000.0 for value in (data.get("quantiles_us") or "").split(",")
                                  if value],
                )
        raise BenchError(f"wrk printed no result:\n{output[-2000:]}")

    def as_json(self) -> dict[str, Any]:
        return dict(requests=self.requests, duration_s=self.duration_s, statuses=self.statuses, errors=self.errors,
                    latency_ms=self.latency_ms, ok_per_second=self.ok_per_second)


def merged_latency(results: list[WrkResult]) -> dict[str, float]:
    """p50, p90 and p99 (ms) of several runs' requests taken together, and the largest.

    wrk gives each run's latency at every 0.1 %; each of those points stands for a
    thousandth of its run's requests. The median of the runs' own p99s would hide a
    slow run; this does not.
    """
    points = sorted((value, result.requests / len(result.quantiles_ms))
                    for result in results if result.quantiles_ms for value in result.quantiles_ms)
    figures = {"max": max((result.latency_ms["max"] for result in results), default=0.0)}
    total = sum(weight for _, weight in points)
    for name, share in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        wanted, seen = share * total, 0.0
        figures[name] = points[-1][0] if points else 0.0
        for value, weight in points:
            seen += weight
            if seen >= wanted * (1 - 1e-9):  # the sum of floats may fall a hair short
                figures[name] = value
                break
    return figures


def argv(url: str, *, threads: int, connections: int, duration: float, script_args: list[str]) -> list[str]:
    return [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
            "-H", f"X-Listener-Token: {HOOK_TOKEN}", "-s", str(SCRIPT), url, "--", *script_args]


def run_for(url: str, *, duration: float, connections: int, threads: int, salt: int) -> WrkResult:
    """POST /create with new asset ids for ``duration`` seconds."""
    command = argv(url, threads=threads, connections=connections, duration=duration,
                   script_args=["create", str(salt)])
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return WrkResult.parse(result.stdout)


def run_pairs(url: str, *, assets: int, connections: int, salt: int, limit_s: float,
              on_posts_done: Callable[[float], None] | None = None) -> tuple[WrkResult, float | None]:
    """POST /create and /proxy for ``assets`` assets as fast as they are answered.

    Returns wrk's result and the ``time.monotonic()`` at which the last POST was
    answered (None if that did not happen within ``limit_s``). One wrk thread,
    so the lua counter is the run's.
    """
    command = argv(url, threads=1, connections=connections, duration=limit_s,
                   script_args=["pairs", str(salt), str(assets)])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    done_at: list[float] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("BENCH_POSTS_DONE") and not done_at:
                done_at.append(time.monotonic())
                if on_posts_done:
                    on_posts_done(done_at[0])
                process.send_signal(signal.SIGINT)  # wrk sleeps for -d otherwise; SIGINT ends it now
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(limit_s + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    reader.join(10)
    stderr = process.stderr.read() if process.stderr else ""
    output = "".join(lines)
    if "BENCH_JSON" not in output:
        raise BenchError(f"wrk printed no result ({process.returncode}): {stderr.strip()[-500:]}")
    return WrkResult.parse(output), (done_at[0] if done_at else None)
