"""What this install and machine are: optional parts (extras), the device to run on (checked:
one the machine has), the memory free for a size a user asks for, and a one-line description
for reports."""
from __future__ import annotations

import importlib
import os
import platform

from gagavatar.errors import InputError, LimitError


class MissingExtra(ImportError):
    """An optional part of gagavatar is not installed; the message names the pip command."""


def require(module: str, extra: str, what: str):
    """Import ``module`` for ``what``, or say which extra brings it:
    ``require("gradio", "app", "the web app")``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{what} needs {module.split('.')[0]}, which is not installed: "
                           f"pip install 'gagavatar[{extra}]'") from e


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS says, else all)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """torch's CPU threads unless told otherwise: half the usable cores, 1 to 4. Each of torch's
    parallel loops waits for its slowest thread, so on a machine busy with anything else (a
    browser, a second job, our own tracker or decoder threads) one thread more than the free
    cores stalls every operator: reenact on 2 busy cores ran 15x slower with 2 threads than
    with 1."""
    return max(1, min(4, usable_cores() // 2))


def set_torch_threads(threads: int = 0) -> int:
    """Set torch's CPU threads, the one place that does: ``threads``, or 0: ``default_threads()``.
    Returns the count."""
    import torch

    n = threads if threads > 0 else default_threads()
    torch.set_num_threads(n)
    return n


def default_threads_for_commands() -> None:
    """Before torch loads, in the command line: ``OMP_NUM_THREADS`` = ``default_threads()``
    unless the user set it (which is how to ask for more). Nothing once torch is loaded (a
    command run inside a program that has it: its threads, and its environment, are its own)."""
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_NUM_THREADS", str(default_threads()))


def check_device(device: str | None) -> str | None:
    """``device`` when this machine has it (None: the default); else ``InputError`` in one line
    saying what it has (``--device cuda`` without a GPU, ``--device tpu``, ``cuda:3`` of 1 GPU)."""
    if device is None:
        return None
    import torch

    try:
        kind = torch.device(device)
    except RuntimeError:
        kind = None
    if kind is None or kind.type not in ("cpu", "cuda"):
        raise InputError(f"--device {device}: not a device gagavatar runs on; use cpu or cuda (cuda:0, cuda:1, ...)")
    if kind.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
                         f"use --device cpu (or leave --device out)")
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def default_device(device: str | None = None) -> str:
    """``device`` as given (``check_device``), else "cuda" when a CUDA GPU is there, else "cpu"."""
    import torch

    return check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu")


def available_memory() -> int:
    """Bytes of memory this machine can still give a process (Linux's MemAvailable; else all of it)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(needed: int, what: str) -> None:
    """Refuse, before any work, a size that needs more memory than the machine has (``LimitError``,
    one line: ``what`` is the option and its value, e.g. "--size 1000000"): it would be killed for
    memory after minutes, or take the machine down with it."""
    free = available_memory()
    if needed > free:
        raise LimitError(f"{what} needs about {_gb(needed)} of memory, and this machine has {_gb(free)} free: "
                         f"use a smaller value")


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n < 2**40 else f"{n / 2**40:,.0f} TB"


def machine_description() -> str:
    """One line naming the machine, torch build and device."""
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {dev}")


def rss_mb(pids=("self",)) -> float | None:
    """Resident memory of these processes (Linux; pids or "self"), MB; None where unknown."""
    try:
        pages = 0
        for pid in pids:
            with open(f"/proc/{pid}/statm") as f:
                pages += int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None
