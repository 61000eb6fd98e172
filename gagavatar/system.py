"""What this install and machine are: optional parts (extras), the device to run on, and a
one-line description for reports."""
from __future__ import annotations

import importlib
import os
import platform


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


def set_torch_threads(threads: int = 0) -> int:
    """Set torch's CPU threads, the one place that does: ``threads``, or 0: half the usable
    cores, 1 to 4 (on a busy machine more threads than free cores make torch's parallel loops
    wait on each other; the other cores run event loops, trackers, decoders). Returns the count."""
    import torch

    n = threads if threads > 0 else max(1, min(4, usable_cores() // 2))
    torch.set_num_threads(n)
    return n


def default_device(device: str | None = None) -> str:
    """``device`` as given, else "cuda" when a CUDA GPU is there, else "cpu"."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def machine_description() -> str:
    """One line naming the machine, torch build and device."""
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {dev}")
