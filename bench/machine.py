"""How fast the machine was while the bench ran: a virtual machine's speed moves with its neighbours.

On the 2-core VMs these figures come from, the same code's CPU per webhook
moved from 0.87 to 1.55 ms within an hour, and a fixed loop of Python took
0.67 s at one moment and 0.87 to 0.92 s at another. The header gives two
readings of it:
- the probe: a fixed Python loop, timed at the start and at the end of the
  run (best of three; lower is faster). It reads two instants only, and the
  speed moves within seconds too: it tells a slow spell from a fast one
  roughly, and did not follow the servers' CPU per webhook closely;
- steal: the share of the run's CPU time the hypervisor gave to others
  (``/proc/stat``; 0 on bare metal), over the whole run.
"""
from __future__ import annotations

import time
from pathlib import Path

PROBE_ADDITIONS = 2_000_000


def probe_ms() -> float:
    """Milliseconds for a fixed loop of Python additions, the best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(PROBE_ADDITIONS):
            total += number
        best = min(best, time.perf_counter() - started)
    return best * 1000


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, all) ticks of every CPU since boot, or None where /proc/stat is not to be had."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(value) for value in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
    return values[7], sum(values[:8])


class MachineSpeed:
    """``start()`` before the run, ``describe()`` after it."""

    def __init__(self) -> None:
        self.probe_at_start = 0.0
        self._ticks_at_start: tuple[int, int] | None = None

    def start(self) -> MachineSpeed:
        self.probe_at_start = probe_ms()
        self._ticks_at_start = _cpu_ticks()
        return self

    def describe(self) -> str:
        ticks = _cpu_ticks()
        text = (f"speed probe (a fixed Python loop, lower is faster): {self.probe_at_start:.0f} ms at the start, "
                f"{probe_ms():.0f} ms at the end")
        if ticks and self._ticks_at_start and ticks[1] > self._ticks_at_start[1]:
            steal = (ticks[0] - self._ticks_at_start[0]) / (ticks[1] - self._ticks_at_start[1])
            text += f"; steal (CPU time the hypervisor gave to others) {steal:.1%} of the run"
        return text
