"""Shared helpers for the pyroflows benchmarks: timing, peak memory, tables.

Every benchmark script in this folder follows the same protocol so that its figures can be
compared across runs on a shared, noisy machine:

* :func:`set_threads` pins torch to a fixed number of intra-op threads (1 by default) and says so
  in the environment line printed by :func:`environment`.
* :func:`time_interleaved` times several callables **round-robin within each repetition** (A, B,
  C, A, B, C, ...), so a burst of load from another process hits every contender alike, and
  returns every per-call time; :class:`Timing` reports the median (never the mean).
* Ratios between contenders are computed from the medians of *one* interleaved run
  (:func:`ratio`), never across separate runs.
* :func:`peak_memory` measures the peak memory one call needs (CUDA allocator stats on a GPU,
  the process's peak resident set on a CPU).
* :func:`markdown_table` formats rows for ``docs/benchmarks.md``.

Example:
    >>> import torch
    >>> from benchmarks.common import set_threads, time_interleaved
    >>> set_threads(1)
    >>> a, b = torch.randn(256, 256), torch.randn(256, 256)
    >>> t = time_interleaved({"mm": lambda: a @ b, "add": lambda: a + b}, repeats=5)
    >>> t["mm"].median > 0
    True
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Timing",
    "environment",
    "format_bytes",
    "format_rate",
    "format_ratio",
    "markdown_table",
    "peak_memory",
    "ratio",
    "set_threads",
    "time_interleaved",
]


@dataclass
class Timing:
    """Per-call times of one contender, in seconds.

    Attributes:
        name: The contender's name.
        times: Seconds per call on the clock chosen in :func:`time_interleaved`, one entry per
            repetition (each entry is the mean over the ``number`` calls of that repetition).
        items: How many items (points, steps) one call processes; used by :attr:`rate`.
        wall_times: The same repetitions on the wall clock.
        cpu_times: The same repetitions in CPU time of this process.
    """

    name: str
    times: list[float] = field(default_factory=list)
    items: int = 1
    wall_times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call (``nan`` if nothing was timed)."""
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def rate(self) -> float:
        """Items per second at the median time per call."""
        return self.items / self.median

    @property
    def iqr(self) -> tuple[float, float]:
        """First and third quartiles of the seconds per call."""
        if len(self.times) < 2:
            return (self.median, self.median)
        q = statistics.quantiles(self.times, n=4)
        return (q[0], q[2])

    @property
    def spread(self) -> float:
        """Relative inter-quartile range, ``(q3 - q1) / median``: a noise indicator."""
        q1, q3 = self.iqr
        return (q3 - q1) / self.median


def set_threads(num_threads: int = 1) -> int:
    """Pin torch's intra-op (and, if still possible, inter-op) thread pool.

    Args:
        num_threads: Number of threads; 1 makes timings on a shared machine far less noisy.

    Returns:
        The number of intra-op threads now in effect.
    """
    torch.set_num_threads(num_threads)
    # The inter-op pool can only be sized once, before any parallel work ran.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(num_threads)
    return torch.get_num_threads()


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _calls_for(fn: Callable[[], Any], min_time: float, device: torch.device | str | None) -> int:
    """Number of calls needed for one repetition to last at least ``min_time`` seconds."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    elapsed = time.perf_counter() - start
    return max(1, int(min_time / max(elapsed, 1e-9)) + (elapsed < min_time))


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 7,
    warmup: int = 2,
    min_time: float = 0.05,
    number: int | Mapping[str, int] | None = None,
    items: int | Mapping[str, int] = 1,
    device: torch.device | str | None = None,
    shuffle_seed: int | None = 0,
    clock: str = "wall",
) -> dict[str, Timing]:
    """Time callables round-robin within each repetition and keep every measurement.

    Each callable first runs ``warmup`` times (allocator warm-up, lazy initialisation), then
    the number of calls per repetition is calibrated so one repetition lasts about
    ``min_time`` seconds. In each of the ``repeats`` repetitions, every callable is timed once,
    in an order that rotates from repetition to repetition (and is optionally shuffled), so no
    contender always runs first or right after a particular other.

    Args:
        fns: Contender name -> zero-argument callable doing one unit of work.
        repeats: Number of repetitions (medians are taken over these).
        warmup: Untimed calls per contender before calibration.
        min_time: Target seconds per repetition per contender when ``number`` is not given.
        number: Calls per repetition, for all contenders or per contender; calibrated if None.
        items: Items processed per call (for :attr:`Timing.rate`), global or per contender.
        device: If a CUDA device, synchronise around every timed block.
        shuffle_seed: Seed for shuffling the order within each repetition; None rotates only.
        clock: ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (``time.process_time``, the CPU
            time of this process). On a CPU shared with other jobs, CPU time does not count the
            time the process waits for a core, so it is far less noisy than wall time; it is
            only meaningful for single-threaded CPU work (not for CUDA, where the CPU waits).
            Both clocks are recorded in :attr:`Timing.wall_times` / :attr:`Timing.cpu_times`.

    Returns:
        Contender name -> :class:`Timing`, in the order of ``fns``.

    Raises:
        ValueError: If ``fns`` is empty or ``repeats`` < 1.
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one callable to time.")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}.")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    _sync(device)
    if number is None:
        calls = {name: _calls_for(fns[name], min_time, device) for name in names}
    elif isinstance(number, int):
        calls = dict.fromkeys(names, number)
    else:
        calls = {name: int(number[name]) for name in names}
    per_items = (
        dict.fromkeys(names, items) if isinstance(items, int) else {n: items[n] for n in names}
    )
    result = {name: Timing(name, [], per_items[name]) for name in names}
    rng = None
    if shuffle_seed is not None:
        import random

        rng = random.Random(shuffle_seed)
    gc_was_enabled = gc.isenabled()
    try:
        for rep in range(repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            if rng is not None:
                rng.shuffle(order)
            for name in order:
                fn, n = fns[name], calls[name]
                gc.collect()
                gc.disable()
                _sync(device)
                start, cpu_start = time.perf_counter(), time.process_time()
                for _ in range(n):
                    fn()
                _sync(device)
                elapsed = time.perf_counter() - start
                cpu_elapsed = time.process_time() - cpu_start
                if gc_was_enabled:
                    gc.enable()
                timing = result[name]
                timing.wall_times.append(elapsed / n)
                timing.cpu_times.append(cpu_elapsed / n)
                timing.times.append((elapsed if clock == "wall" else cpu_elapsed) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return result


def ratio(timings: Mapping[str, Timing], numerator: str, denominator: str) -> float:
    """Speed ratio ``rate(numerator) / rate(denominator)`` from one interleaved run.

    A value above 1 means ``numerator`` processes more items per second.

    Args:
        timings: Output of :func:`time_interleaved`.
        numerator: Name of the contender on top.
        denominator: Name of the reference contender.

    Returns:
        The ratio of the two rates.
    """
    return timings[numerator].rate / timings[denominator].rate


def _read_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) for this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn: Callable[[], Any], device: torch.device | str | None = None) -> int:
    """Peak extra memory, in bytes, that one call of ``fn`` needs.

    On CUDA this is ``torch.cuda.max_memory_allocated`` during the call minus what was
    allocated before it (exact, allocator-level). On CPU it is the rise of the process's peak
    resident set (``VmHWM``, reset just before the call through ``/proc/self/clear_refs``) over
    the resident set before the call; it includes allocator slack and is only meaningful to
    ~1 MiB, so compare large workloads. Call ``fn`` once beforehand if you do not want to count
    one-off lazy initialisation. Returns -1 where no measurement is available (non-Linux CPU).

    Args:
        fn: Zero-argument callable doing the work to measure.
        device: The device ``fn`` computes on.

    Returns:
        Peak extra bytes, or -1 if it cannot be measured here.
    """
    gc.collect()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    if not _reset_peak_rss():
        return -1
    before = _read_status_kib("VmRSS")
    fn()
    peak = _read_status_kib("VmHWM")
    if before is None or peak is None:
        return -1
    return max(0, peak - before) * 1024


def format_rate(value: float, unit: str = "/s") -> str:
    """Format a rate with a k/M suffix and three significant digits, e.g. ``1.23M/s``."""
    if value != value:  # nan
        return "n/a"
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def format_ratio(value: float, target: float | None = None) -> str:
    """Format a ratio as ``1.23x``; mark it ``(miss)`` if it is below ``target``."""
    if value != value:
        return "n/a"
    text = f"{value:.2f}x"
    if target is not None and value < target:
        text += " (miss)"
    return text


def format_bytes(value: int) -> str:
    """Format a byte count in MiB (``n/a`` for the -1 of :func:`peak_memory`)."""
    if value < 0:
        return "n/a"
    return f"{value / 2**20:.1f} MiB"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format a GitHub-flavoured markdown table with aligned columns.

    Args:
        headers: Column titles.
        rows: One sequence of cells per row (converted with ``str``); numbers are
            right-aligned, text is left-aligned.

    Returns:
        The table as a string, without a trailing newline.

    Raises:
        ValueError: If a row does not have one cell per header.
    """
    cells = [[str(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells, expected {len(headers)}.")
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        bool(cells) and all(_looks_numeric(r[i]) for r in cells) for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else ("-" * (w + 2))
            for w, n in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(list(headers)), sep] + [line(r) for r in cells])


def _looks_numeric(text: str) -> bool:
    t = text.strip().split(" ")[0].rstrip("x%/sMkG")
    try:
        float(t)
    except ValueError:
        return False
    return True


def environment(extra_packages: Sequence[str] = ()) -> str:
    """One line describing where a benchmark ran: CPU, threads, torch and package versions.

    Args:
        extra_packages: Distribution names whose installed versions to include.

    Returns:
        A human-readable line for the header of a results table.
    """
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        f"{cpu} ({os.cpu_count()} logical cores)",
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)",
        f"Python {platform.python_version()}",
    ]
    for pkg in extra_packages:
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return "; ".join(parts)
