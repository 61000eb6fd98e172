"""What every benchmark shares: the ``Table`` it returns, printing tables, timing a call,
peak memory of a block, and the devices ``--device`` names."""
from __future__ import annotations

import time
from dataclasses import dataclass

import typer
from rich.console import Console

from gagavatar.system import machine_description

console = Console()


@dataclass(frozen=True)
class Table:
    """One benchmark table: a title, column names, and rows of values (floats print with
    two decimals)."""

    title: str
    columns: list[str]
    rows: list[list]


def show(*tables: Table) -> list[Table]:
    """Print ``tables`` (each captioned with the machine) and return them, as a benchmark does."""
    from rich.table import Table as RichTable

    for t in tables:
        table = RichTable(title=t.title, caption=machine_description())
        for c in t.columns:
            table.add_column(c)
        for r in t.rows:
            table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r])
        console.print(table)
    return list(tables)


def timeit(fn, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


def devices(device: str) -> list[str]:
    """--device cpu | cuda | all -> the devices to time (all: cpu, and cuda when present)."""
    import torch

    found = [d for d in (["cpu", "cuda"] if device == "all" else [device]) if d == "cpu" or torch.cuda.is_available()]
    if not found:
        raise typer.BadParameter("no CUDA device here; use --device cpu")
    return found


class PeakMemory:
    """Peak memory above the level at entry, in MiB, of the code inside ``with``.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the caching
    allocator's reserve). CPU: growth of the process's resident set size,
    sampled every millisecond from /proc/self/statm after handing freed heap
    memory back to the system (Linux; it sees torch's allocations, which
    tracemalloc does not).
    """

    def __init__(self, device: str):
        self.device, self.mib = device, float("nan")

    def _rss(self) -> int:
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import threading

        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)  # so memory freed earlier does not hide growth
        except (OSError, AttributeError):
            pass
        try:
            self.start = self.peak = self._rss()
        except OSError:  # not Linux: no sampling
            return self
        self.running = True

        def sample():
            while self.running:
                self.peak = max(self.peak, self._rss())
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        elif hasattr(self, "thread"):
            self.running = False
            self.thread.join()
            self.mib = (max(self.peak, self._rss()) - self.start) / 2**20
