"""Shared pieces of the benchmarks: timing with device synchronisation, peak memory, matmul peak, medians of rounds.

Timings on shared machines drift and spike, so every comparison is made of rounds: in each round
every contender runs once, in turn; a contender's time is the median over rounds, and ratios are
taken between medians of the same run.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Callable

import torch


def device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], dev: torch.device) -> float:
    """Seconds of one call of ``fn``: CUDA events after a synchronisation on GPU, ``perf_counter`` on CPU."""
    if dev.type == "cuda":
        sync(dev)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Rounds(dict):
    """Seconds per call of each contender, one entry per round (``name -> [t_1, ..., t_n]``)."""

    def median(self, name: str) -> float:
        return statistics.median(self[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of ``t_a / t_b`` within the round: paired, so drift between rounds cancels."""
        return statistics.median(x / y for x, y in zip(self[a], self[b]))


def rounds(contenders: dict[str, Callable[[], object]], n_rounds: int, dev: torch.device, warmup: int = 1) -> Rounds:
    """Time every contender once per round, in turn, for ``n_rounds`` rounds after ``warmup`` untimed ones."""
    times = Rounds({k: [] for k in contenders})
    for r in range(warmup + n_rounds):
        for name, fn in contenders.items():
            t = timed(fn, dev)
            if r >= warmup:
                times[name].append(t)
    return times


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024.0


def _vm_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024.0


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on GPU; on CPU the process's peak RSS, whose
    high-water mark is reset on entry (Linux ``/proc/self/clear_refs``).  ``peak_mb`` is the peak, ``extra_mb``
    the peak above what was in use on entry (what the block itself needed at most)."""

    def __init__(self, dev: torch.device):
        self.dev = dev
        self.peak_mb = self.extra_mb = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.dev.type == "cuda":
            sync(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)
            self._start = torch.cuda.memory_allocated(self.dev) / 2**20
        else:
            import gc

            gc.collect()
            _malloc_trim()  # hand freed heap pages back, so that the step's own allocations show in the peak
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:  # not Linux, or not allowed: the peak is then the process's lifetime peak
                pass
            self._start = _vm_rss_mb()
        return self

    def __exit__(self, *exc) -> None:
        if self.dev.type == "cuda":
            sync(self.dev)
            self.peak_mb = torch.cuda.max_memory_allocated(self.dev) / 2**20
        else:
            self.peak_mb = _vm_hwm_mb()
        self.extra_mb = self.peak_mb - self._start


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def matmul_1024(dev: torch.device, n: int = 1024) -> tuple[Callable[[], object], float]:
    """A fp32 ``n x n`` matrix product as a contender for :func:`rounds`, and its FLOPs (``2 n^3``)."""
    g = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=dev)
    b = torch.randn(n, n, generator=g, device=dev)
    return (lambda: torch.mm(a, b)), 2.0 * n**3


def matmul_peak_flops(dev: torch.device, n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matrix-multiply rate (FLOP/s) of an ``n x n`` product: ``2 n^3`` over the median time."""
    mm, flop = matmul_1024(dev, n)
    return flop / rounds({"mm": mm}, repeats, dev, warmup=2).median("mm")


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages (how busy the machine was), where the OS reports them."""
    try:
        import os

        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None
