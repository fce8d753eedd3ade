"""Peak memory of an RQ worker's work horses, read from /proc (Linux), no extra package.

RQ forks one work horse per job, so the memory a transfer costs is the
horse's. Every horse is followed from the first time it is seen: its peak RSS
(the kernel's own high-water mark, VmHWM, so nothing is missed between
polls; it includes the pages shared with the worker it was forked from) and
its peak private memory (Private_Clean + Private_Dirty: what the job itself
added), with the wall-clock window it lived in.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Horse:
    pid: int
    first_seen: float
    last_seen: float
    start_rss_kib: int = 0
    peak_rss_kib: int = 0  # VmHWM
    peak_private_kib: int = 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                found += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        return []
    return found


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
        self.ignored: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="horse-watch", daemon=True)

    def start(self) -> HorseWatch:
        # Children already there are not horses: RQ's scheduler is a long-lived child of the worker too.
        self.ignored = set(_children(self.worker_pid))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            worker = _status_kib(self.worker_pid, "VmHWM")
            self.worker_peak_kib = max(self.worker_peak_kib, worker.get("VmHWM", 0))
            for pid in _children(self.worker_pid):
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
