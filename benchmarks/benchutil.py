"""Helpers the benchmarks share: how busy the machine was besides the benchmark, and the
confidence interval of a mean."""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CpuMeter", "MachineLoad", "t_interval"]


def t_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """The 95% Student t interval of the mean of ``values`` (``None`` under two values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean = statistics.fmean(values)
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return (mean - half, mean + half)


@dataclass(frozen=True)
class MachineLoad:
    """What the machine's CPUs did while a measurement ran.

    Attributes:
        wall_s: The measurement's wall time.
        cpu_capacity_s: ``wall_s`` times the number of CPUs.
        benchmark_cpu_s: CPU time of this process and of its children that ended meanwhile.
        other_cpu_s: CPU time every other process on the machine used meanwhile (``None``
            where ``/proc/stat`` is missing): a measurement taken while this is large was
            disturbed by someone else's work.
    """

    wall_s: float
    cpu_capacity_s: float
    benchmark_cpu_s: float
    other_cpu_s: float | None

    def as_dict(self) -> dict[str, float | None]:
        """The figures, rounded, for the JSON summary."""
        other = None if self.other_cpu_s is None else round(self.other_cpu_s, 2)
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_capacity_s": round(self.cpu_capacity_s, 2),
            "benchmark_cpu_s": round(self.benchmark_cpu_s, 2),
            "other_processes_cpu_s": other,
        }


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux), else ``None``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0  # another virtual machine had the CPU
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle - steal) / hz


def _own_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuMeter:
    """Measures the machine's load around a block: ``with CpuMeter() as m: ...; m.load``.

    Children must have ended (and been waited for) inside the block to count as the
    benchmark's own CPU time.
    """

    def __enter__(self) -> CpuMeter:
        self._wall = time.perf_counter()
        self._busy = _busy_seconds()
        self._own = _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        own = _own_seconds() - self._own
        busy = _busy_seconds()
        other = None
        if busy is not None and self._busy is not None:
            other = max(0.0, (busy - self._busy) - own)
        self.load = MachineLoad(wall, wall * (os.cpu_count() or 1), own, other)
