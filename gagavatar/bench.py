"""``gagavatar bench``: speed and memory benchmarks, printed as tables.

Each sub-command measures one stage; ``bench all`` runs every one of them.
Targets live here, not in unit tests.
"""
from __future__ import annotations

import platform
import time

import torch
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Speed and memory benchmarks.", no_args_is_help=True)
console = Console()


def machine_description() -> str:
    """One line naming the machine, torch build and device."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {dev}")


def timeit(fn, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds."""
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


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    table = Table(title=title, caption=machine_description())
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r])
    console.print(table)
