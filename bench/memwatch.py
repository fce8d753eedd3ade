"""Peak memory of the process that ran a job, read from /proc (Linux), no extra package.

The listener's worker runs jobs in its own process; RQ's default worker (an
older revision benchmarked with ``--ref``) forks a work horse per job. Both
are followed: the worker itself, and every child that appears (a horse),
from the first time it is seen. For each: the peak RSS (the kernel's own
high-water mark, VmHWM, so nothing is missed between polls; a horse's
includes the pages shared with the worker it was forked from) and the peak
private memory (Private_Clean + Private_Dirty), with the wall-clock window
it was seen in. ``job_process`` picks the horse that ran a job, or the
worker when no horse did.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import children


@dataclass
class Horse:
    pid: int
    first_seen: float
    last_seen: float
    start_rss_kib: int = 0
    peak_rss_kib: int = 0  # VmHWM
    peak_private_kib: int = 0


def _status_kib(pid: int, *fields: str) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in fields:
                values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def _private_kib(pid: int) -> int:
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return total


class HorseWatch:
    """Polls a worker's children every ``interval`` seconds in a thread, until ``stop()``."""

    def __init__(self, worker_pid: int, interval: float = 0.02) -> None:
        self.worker_pid = worker_pid
        self.interval = interval
        self.horses: dict[int, Horse] = {}
        self.worker_peak_kib = 0
        self.worker = Horse(worker_pid, 0.0, 0.0)  # the worker itself, as it ran jobs without forking
        self.worker_samples: list[tuple[float, int, int]] = []  # (time, VmRSS, VmHWM)
        self.ignored: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="horse-watch", daemon=True)

    def start(self) -> HorseWatch:
        # Children already there are not horses: RQ's scheduler is a long-lived child of the worker too.
        self.ignored = set(children(self.worker_pid))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            worker = _status_kib(self.worker_pid, "VmRSS", "VmHWM")
            self.worker_peak_kib = max(self.worker_peak_kib, worker.get("VmHWM", 0))
            if worker:
                self.worker_samples.append((now, worker.get("VmRSS", 0), worker.get("VmHWM", 0)))
                self.worker.peak_private_kib = max(self.worker.peak_private_kib, _private_kib(self.worker_pid))
            for pid in children(self.worker_pid):
                if pid in self.ignored:
                    continue
                status = _status_kib(pid, "VmRSS", "VmHWM")
                if not status:
                    continue
                horse = self.horses.get(pid)
                if horse is None:
                    horse = self.horses[pid] = Horse(pid, now, now, start_rss_kib=status.get("VmRSS", 0))
                horse.last_seen = now
                horse.peak_rss_kib = max(horse.peak_rss_kib, status.get("VmHWM", 0))
                horse.peak_private_kib = max(horse.peak_private_kib, _private_kib(pid))
            self._stop.wait(self.interval)

    def horse_of(self, start: float, end: float) -> Horse | None:
        """The horse that ran a job from ``start`` to ``end`` (epoch s): the one alive longest in that window."""

        def overlap(horse: Horse) -> float:
            return min(end, horse.last_seen + self.interval) - max(start, horse.first_seen - self.interval)

        alive = [horse for horse in self.horses.values() if overlap(horse) > 0]
        return max(alive, key=overlap, default=None)

    def job_process(self, start: float, end: float) -> Horse | None:
        """The process that ran a job from ``start`` to ``end``: its horse, or else the worker itself.

        For the worker, the start RSS is the first sample in the window and the
        peak its VmHWM at the end: the worker's peak over its whole life so far.
        The transfer parts run several rounds in one worker, so from the second
        round on it is an upper bound of the job's own peak (the earlier jobs'
        are in it), and so is the private memory. The worker's figures are
        overwritten by the next call: read them before.
        """
        horse = self.horse_of(start, end)
        if horse is not None:
            return horse
        window = [sample for sample in self.worker_samples if start - self.interval <= sample[0] <= end + self.interval]
        if not window:
            return None
        self.worker.first_seen, self.worker.last_seen = window[0][0], window[-1][0]
        self.worker.start_rss_kib = window[0][1]
        self.worker.peak_rss_kib = max(sample[2] for sample in window)
        return self.worker
